"""The command line as a user runs it: the demo campaign, and each mistake a user can make."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "colmena-fed")
BROKEN = REPO / "tests" / "campaigns" / "broken.py"


def colmena_fed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def cpu_sites(tmp_path: Path) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(
        f"sites:\n  cpu-site:\n    local: {REPO / 'endpoints' / 'local-cpu.yaml'}\n"
        "    resources: {cpu: 2}\n"
    )
    return path


def test_demo_campaign_runs_on_both_sites_and_trains_on_the_gpu_site(tmp_path: Path) -> None:
    run = colmena_fed(
        "run",
        f"{REPO}/examples/active_learning/campaign.py:make_thinker",
        "--sites",
        str(REPO / "examples" / "sites.yaml"),
        "--run-dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    out, summary = run.stdout.split("Sites, per slot kind")  # the live view, then the summary
    assert "simulations: 48" in out
    assert "on site gpu-site (accelerator 0)" in out
    assert "from a warm start" in out  # retrains found the state the first one kept
    assert "on site cpu-site" not in out
    rows = {line.split()[1]: line for line in out.splitlines() if "-site" in line and "│" in line}
    assert "simulate x48" in rows["cpu-site"]
    assert "train x" in rows["gpu-site"]
    cells = {
        cells[0]: cells
        for line in summary.splitlines()
        if "-site" in line and "│" in line
        for cells in [[cell.strip() for cell in line.strip("│ ").split("│")]]
    }
    assert cells["cpu-site"][1:3] == ["cpu (2)", "48"]  # every simulation, done there
    assert (tmp_path / "run" / "colmena-fed.log").is_file()
    assert (tmp_path / "run" / "cpu-site").is_dir()


def test_agent_exception_ends_the_run_with_its_message(tmp_path: Path) -> None:
    run = colmena_fed(
        "run",
        f"{BROKEN}:make_raising",
        "--sites",
        str(cpu_sites(tmp_path)),
        "--run-dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert run.returncode == 1
    assert "RaisingThinker.receive" in run.stderr
    assert "RuntimeError: cannot handle the value 9" in run.stderr


@pytest.mark.parametrize(
    ("campaign", "expected"),
    [
        ("no_colon.py", "expected FILE.py:FUNCTION"),
        ("missing.py:make", "missing.py: no such file"),
        (f"{BROKEN}:make_missing", "has no function 'make_missing'; it defines:"),
        (f"{BROKEN}:make_nothing", "must return (thinker, methods)"),
    ],
)
def test_bad_campaign_argument_is_named(tmp_path: Path, campaign: str, expected: str) -> None:
    run = colmena_fed("run", campaign, "--sites", str(cpu_sites(tmp_path)), cwd=tmp_path)
    assert run.returncode != 0
    assert expected in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("json.py", "def make(queues):\n    pass\n", "'json' is already the name of the module"),
        ("typo.py", "import no_such_module\n", "typo.py: importing the campaign raised"),
        (
            "angry.py",
            "def make(queues):\n    raise KeyError('budget')\n",
            "the campaign factory make raised KeyError: 'budget'",
        ),
    ],
)
def test_broken_campaign_file_is_named(
    tmp_path: Path, name: str, source: str, expected: str
) -> None:
    (tmp_path / name).write_text(source)
    run = colmena_fed("run", f"{name}:make", "--sites", str(cpu_sites(tmp_path)), cwd=tmp_path)
    assert run.returncode != 0
    assert expected in run.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_sites_yaml_is_named_before_anything_starts(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text("sites:\n  laptop:\n    local: nowhere.yaml\n    resources: {cpu: 1}\n")
    run = colmena_fed("run", f"{BROKEN}:make_raising", "--sites", str(sites), cwd=tmp_path)
    assert run.returncode == 1
    assert f"{sites}: site 'laptop', field 'local'" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_simulated_federation_is_refused_with_what_to_do(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text("sites:\n  model:\n    sim: {workers: {cpu: 1}}\n    resources: {cpu: 1}\n")
    run = colmena_fed("run", f"{BROKEN}:make_raising", "--sites", str(sites), cwd=tmp_path)
    assert run.returncode == 1
    assert "every site is a 'sim' site" in run.stderr
    assert "world.run()" in run.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("moment", "expected_code"),
    [("while the sites start", 1), ("while the agents run", 130)],
)
def test_ctrl_c_ends_the_campaign_and_leaves_no_process(
    tmp_path: Path, moment: str, expected_code: int
) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            CLI,
            "run",
            f"{REPO}/examples/active_learning/campaign.py:make_thinker",
            "--sites",
            str(REPO / "examples" / "sites.yaml"),
            "--run-dir",
            str(run_dir),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: Ctrl+C reaches it and its children only
    )
    log = run_dir / "colmena-fed.log"

    def ready() -> bool:
        if moment == "while the sites start":
            return (run_dir / "gpu-site").exists()
        return "submit_simulation started" in (log.read_text() if log.exists() else "")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ready():
        time.sleep(0.02)
    session = process.pid
    os.killpg(session, signal.SIGINT)  # what a terminal's Ctrl+C does
    out, err = process.communicate(timeout=120)
    assert process.returncode == expected_code, err
    if expected_code == 130:
        assert "interrupted: unfinished tasks were ended" in out
    end = time.monotonic() + 60
    left = [p for p in psutil.process_iter(["pid"]) if _session(p.pid) == session]
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
