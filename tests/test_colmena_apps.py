"""Colmena applications run on the local federation with their imports and one line changed.

Each application in tests/colmena_apps/ is written as for Colmena 0.7 (its imports, its
``ParslTaskServer`` line). `port` changes exactly what docs/from-colmena.md says to change;
the ported script then runs as a user would run it, in its own process.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import ENDPOINTS, REPO, run_processes, still_running

APPS = REPO / "tests" / "colmena_apps"
SERVER_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<name>\w+) = ParslTaskServer\((?P<methods>.+), (?P<queues>\w+), \w+\)$"
)
IMPORT_LINE = re.compile(r"^(import |from )")


def port(source: str) -> str:
    """Change a Colmena application's imports and its task server line, nothing else."""
    ported = []
    for line in source.splitlines():
        if line.startswith("from colmena.task_server import"):
            ported += ["import sys", "from colmena_fed import SitesConfig, TaskServer"]
        elif line.startswith("from colmena."):
            ported.append(line.replace("from colmena.", "from colmena_fed.colmena.", 1))
        elif match := SERVER_LINE.match(line):
            ported.append(
                f"{match['indent']}{match['name']} = TaskServer({match['queues']}, "
                f"SitesConfig.from_yaml(sys.argv[1]), {match['methods']}, run_dir=sys.argv[2])"
            )
        else:
            ported.append(line)
    return "\n".join(ported) + "\n"


def changed_lines(before: str, after: str) -> list[str]:
    """Lines removed or added by the port."""
    diff = difflib.ndiff(before.splitlines(), after.splitlines())
    return [line[2:] for line in diff if line[:2] in ("- ", "+ ")]


def run_ported(app: str, tmp_path: Path, sites: dict[str, Any]) -> dict[str, Any]:
    """Port ``app``, run it on ``sites`` in ``tmp_path``, and return its summary.json."""
    source = (APPS / app).read_text()
    ported = port(source)
    for line in changed_lines(source, ported):
        assert IMPORT_LINE.match(line) or "TaskServer(" in line, f"the port changed {line!r}"
    script = tmp_path / app
    script.write_text(ported)
    sites_yaml = tmp_path / "sites.yaml"
    sites_yaml.write_text(yaml.safe_dump({"sites": sites}))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(script), str(sites_yaml), str(run_dir)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        process.kill()  # the run's guard then stops its engines
    assert process.returncode == 0, output
    assert not still_running(run_processes(process.pid, run_dir), within=30)
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())
    return summary


CPU_SITE = {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 2}}
GPU_SITE = {"local": str(ENDPOINTS / "local-gpu.yaml"), "resources": {"gpu": 1}}


def test_a_batch_optimizer_logs_every_record_without_its_numpy_inputs(tmp_path: Path) -> None:
    summary = run_ported("batch_optimizer.py", tmp_path, {"cpu-site": CPU_SITE})
    assert len(summary["best"]) == 3
    records = [json.loads(line) for line in (tmp_path / "results.json").read_text().splitlines()]
    assert len(records) == 12
    assert all("inputs" not in r and r["success"] and r["complete"] for r in records)
    assert all(
        r["timestamp"]["compute_started"] <= r["timestamp"]["compute_ended"] for r in records
    )


def test_agents_lend_slots_to_training_through_an_event_responder(tmp_path: Path) -> None:
    sites = {"cpu-site": CPU_SITE, "gpu-site": GPU_SITE}
    summary = run_ported("reallocating_agents.py", tmp_path, sites)
    assert summary["values"] == [float(x * x) for x in range(6)]
    assert summary["models"] == 1
    assert summary["slots_while_training"] == [1]
    assert (summary["simulate_slots_after"], summary["train_slots_after"]) == (2, 0)


def test_results_in_flight_when_a_submitter_ends_the_thinker_are_processed(
    tmp_path: Path,
) -> None:
    summary = run_ported("streaming_submitter.py", tmp_path, {"cpu-site": CPU_SITE})
    assert sorted(r["task_info"]["n"] for r in summary["results"]) == list(range(6))
    assert all("inputs" not in r and "value" not in r for r in summary["results"])
    assert summary["active"] == 0
