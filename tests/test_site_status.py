"""`colmena-fed sites status`, run as a user runs it, on local sites and on the testbed's."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import yaml
from conftest import ENDPOINTS, RunningTestbed, colmena_fed

from colmena_fed.backends.engine import load_engine
from colmena_fed.sites import SitesConfig

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "colmena-fed")


def status_processes() -> list[psutil.Process]:
    """Engine processes started by a status command (their run directory is its temporary one)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "colmena-fed-status-" in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


def templated_site(tmp_path: Path, variables: dict[str, int] | None) -> Path:
    """A local site whose endpoint YAML takes its worker count from a template variable."""
    text = (ENDPOINTS / "local-cpu.yaml").read_text()
    endpoint = tmp_path / "templated.yaml"
    endpoint.write_text(
        text.replace("max_workers_per_node: 2", "max_workers_per_node: {{ workers }}")
    )
    site: dict[str, object] = {"local": str(endpoint), "resources": {"cpu": 3}}
    if variables is not None:
        site["user_endpoint_config"] = variables
    sites = tmp_path / "sites.yaml"
    sites.write_text(yaml.safe_dump({"sites": {"templated": site}}))
    return sites


def test_the_example_sites_are_shown_online_with_their_workers() -> None:
    run = colmena_fed("sites", "status", "--sites", str(REPO / "examples" / "sites.yaml"))
    assert run.returncode == 0, run.stderr
    rows = {line.split()[1]: line for line in run.stdout.splitlines() if "-site" in line}
    assert set(rows) == {"cpu-site", "gpu-site"}
    for name, workers, slots in (("cpu-site", "2/2", "2 cpu"), ("gpu-site", "1/1", "1 gpu")):
        cells = [cell.strip() for cell in rows[name].split("│")]
        assert cells[2:5] == ["local", "online", workers], rows[name]
        assert slots in cells, rows[name]
    assert not status_processes()


def test_a_local_site_renders_its_template_with_the_sites_variables(tmp_path: Path) -> None:
    sites = SitesConfig.from_yaml(templated_site(tmp_path, {"workers": 1}))
    site = sites.sites["templated"]
    assert site.local is not None
    engine = load_engine(site.local, site.user_endpoint_config)
    try:
        assert engine.executor.max_workers_per_node == 1
    finally:
        engine.shutdown()


def test_a_template_variable_the_site_does_not_give_is_named(tmp_path: Path) -> None:
    sites = templated_site(tmp_path, None)
    run = colmena_fed("sites", "status", "--sites", str(sites))
    assert run.returncode == 1
    assert str(tmp_path / "templated.yaml") in run.stderr
    assert "'workers'" in run.stderr
    assert "user_endpoint_config" in run.stderr


def test_globus_sites_show_their_endpoints_and_an_unknown_one_is_offline(
    testbed: RunningTestbed, tmp_path: Path
) -> None:
    config = yaml.safe_load((testbed.directory / "sites.yaml").read_text())
    unknown = str(uuid.uuid4())
    config["sites"]["nowhere"] = {"endpoint": unknown, "resources": {"cpu": 1}}
    sites = tmp_path / "sites.yaml"
    sites.write_text(yaml.safe_dump(config))
    run = colmena_fed("sites", "status", "--sites", str(sites), "--json")
    assert run.returncode == 1, run.stderr
    rows = {row["site"]: row for row in json.loads(run.stdout)["sites"]}
    for name, endpoint_id in testbed.endpoints.items():
        row = next(r for r in rows.values() if r["endpoint"] == endpoint_id)
        assert row["backend"] == "globus", name
        assert row["online"] is True, row
        assert row["workers"] >= 1, row
    assert rows["nowhere"]["online"] is False
    assert rows["nowhere"]["endpoint"] == unknown
    assert rows["nowhere"]["detail"]


def test_watch_prints_a_json_line_per_refresh_until_ctrl_c(testbed: RunningTestbed) -> None:
    sites = testbed.directory / "sites.yaml"
    command = [
        CLI,
        "sites",
        "status",
        "--sites",
        str(sites),
        "--watch",
        "--json",
        "--interval",
        "0.2",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as watch:
        assert watch.stdout is not None
        # An endpoint's report is up to a heartbeat old: one that ran an earlier test's last
        # task may still count it for a few seconds. Read until every endpoint shows idle.
        reports = [json.loads(watch.stdout.readline()) for _ in range(2)]
        while not all(_idle(row) for row in reports[-1]["sites"]) and len(reports) < 150:
            reports.append(json.loads(watch.stdout.readline()))
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert all(_idle(row) for row in reports[-1]["sites"]), reports[-1]
    for report in reports:
        rows = {row["endpoint"]: row for row in report["sites"]}
        assert set(rows) == set(testbed.endpoints.values())
        for row in rows.values():
            assert row["online"] is True
            assert row["backend"] == "globus"
            assert datetime.datetime.fromisoformat(row["status_time"]).tzinfo is not None


def _idle(row: dict[str, Any]) -> bool:
    """Whether a site's row shows no task queued or running at its endpoint."""
    return (row["pending_tasks"], row["in_flight_tasks"]) == (0, 0)
