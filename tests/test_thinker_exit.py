"""Nothing outlives the thinker: a stop cut into by signals, a killed thinker, a raising script."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import ENDPOINTS, REPO, RunningTestbed, drain, run_processes, still_running
from sample_methods import hold

from colmena_fed import Method, SitesConfig, TaskQueues, TaskServer
from colmena_fed.methods import MethodLike

CLI = str(Path(sys.executable).parent / "colmena-fed")
SIGNALS_EACH = 4
BUSY = REPO / "tests" / "campaigns" / "busy.py"

#: A thinker script that leaves its task server running and raises after its campaign.
RAISING_SCRIPT = """
import sys
from colmena_fed import SitesConfig, TaskQueues, TaskServer
from sample_methods import double, nap

queues = TaskQueues()
server = TaskServer(queues, SitesConfig.from_yaml(sys.argv[1]), [double, nap], run_dir=sys.argv[2])
server.start()
queues.send_inputs(2, method="double")
assert queues.get_result(timeout=120).value == 4
queues.send_inputs(120, method="nap")  # still running when the script fails
raise RuntimeError("the analysis after the campaign failed")
"""


def sites_yaml(tmp_path: Path, backend: str, testbed: RunningTestbed | None) -> Path:
    """One CPU site, ``local`` (an engine in the thinker) or ``globus`` (a testbed endpoint)."""
    site: dict[str, Any] = {"resources": {"cpu": 2}}
    config: dict[str, Any] = {"sites": {"cpu-site": site}}
    if backend == "local":
        site["local"] = str(ENDPOINTS / "local-cpu.yaml")
    else:
        assert testbed is not None
        site["endpoint"] = testbed.endpoints["local-cpu"]
        config["globus"] = testbed.globus
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment() -> dict[str, str]:
    """This environment, with the tests' methods importable by thinkers it starts."""
    path = [str(REPO / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


@pytest.mark.parametrize("backend", ["local", "globus"])
def test_a_killed_thinker_leaves_no_process_of_its_run(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    testbed = request.getfixturevalue("testbed") if backend == "globus" else None
    run_dir = tmp_path / "run"
    sites = sites_yaml(tmp_path, backend, testbed)
    thinker = subprocess.Popen(
        [CLI, "run", f"{BUSY}:make_busy", "--run-dir", str(run_dir), "--sites", str(sites)],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    log = run_dir / "colmena-fed.log"
    deadline = time.monotonic() + 120
    while "all tasks sent" not in (log.read_text() if log.exists() else ""):
        assert thinker.poll() is None, thinker.communicate()[1]
        assert time.monotonic() < deadline, "the campaign did not start"
        time.sleep(0.1)
    processes = run_processes(thinker.pid, run_dir)
    while backend == "local" and len(processes) < 5:  # interchange, guard, pool and workers
        time.sleep(0.1)
        processes = run_processes(thinker.pid, run_dir)
    thinker.kill()
    thinker.wait()
    assert not still_running(processes)
    assert not still_running(run_processes(thinker.pid, run_dir), within=0)


@pytest.mark.parametrize("backend", ["local", "globus"])
def test_a_script_that_raises_outside_with_server_exits_at_once_and_leaves_nothing(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    testbed = request.getfixturevalue("testbed") if backend == "globus" else None
    script = tmp_path / "thinker.py"
    script.write_text(RAISING_SCRIPT)
    run_dir = tmp_path / "run"
    thinker = subprocess.Popen(
        [sys.executable, str(script), str(sites_yaml(tmp_path, backend, testbed)), str(run_dir)],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[int, psutil.Process] = {}
    while thinker.poll() is None:  # the processes of the run, as it goes
        seen.update(run_processes(thinker.pid, run_dir))
        time.sleep(0.1)
    _, err = thinker.communicate(timeout=60)  # not 120 s: the nap in flight is not waited for
    assert thinker.returncode == 1
    assert err.rstrip().endswith("RuntimeError: the analysis after the campaign failed"), err
    assert err.count("Traceback") == 1, err
    if backend == "local":
        assert seen, "the local site started no process"
    assert not still_running(seen)


def test_a_second_ctrl_c_or_sigterm_during_stop_does_not_cut_it_short(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    config = SitesConfig.from_dict(
        {
            "sites": {
                "cpu-site": {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 1}},
                "gpu-site": {"local": str(ENDPOINTS / "local-gpu.yaml"), "resources": {"gpu": 1}},
            },
            "data": {
                "threshold_bytes": 1000,
                "stores": {"files": {"kind": "file", "path": str(store)}},
            },
        }
    )
    queues = TaskQueues()
    methods: list[MethodLike] = [hold, Method(hold, slot="gpu", name="gpu_hold")]
    server = TaskServer(queues, config, methods, run_dir=tmp_path / "run")
    interrupts: Counter[int] = Counter()

    def like_the_command_line(signum: int, frame: object) -> None:  # SIGTERM is Ctrl+C there
        interrupts[signum] += 1
        raise KeyboardInterrupt

    previous = {
        signum: signal.signal(signum, like_the_command_line)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    server.start()
    sent = [
        queues.send_inputs(b"x" * 10_000, str(tmp_path / f"m{i}"), 60, method=method)
        for i, method in enumerate(["hold", "gpu_hold", "hold"])
    ]
    while server.counts["cpu-site"].running == 0 or server.counts["gpu-site"].running == 0:
        time.sleep(0.05)
    started = {p.pid: p for p in psutil.Process().children(recursive=True) if p.pid not in before}
    assert any(store.iterdir())

    def interrupt() -> None:  # Ctrl+C and SIGTERM, a few of each, as soon as the stop starts
        while not any(t.name == "colmena-fed-stop" for t in threading.enumerate()):
            time.sleep(0.0005)
        # Each once the one before it was handled, as a user presses keys: two signals of a
        # kind sent before the main thread ran its handler would be one (the kernel merges them).
        signals = [signal.SIGINT, signal.SIGTERM] * SIGNALS_EACH  # a few ms: a stop takes more
        for sent, signum in enumerate(signals, start=1):
            os.kill(os.getpid(), signum)
            deadline = time.monotonic() + 10
            while sum(interrupts.values()) < sent and time.monotonic() < deadline:
                time.sleep(0.0005)

    interrupter = threading.Thread(target=interrupt)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            server.stop()
    finally:
        # A signal sent may be handled later than kill() returns: none may be left pending
        # once SIGTERM is back to its default action (which would end the test run).
        deadline = time.monotonic() + 30
        while interrupter.is_alive() or sum(interrupts.values()) < 2 * SIGNALS_EACH:
            assert time.monotonic() < deadline, f"signals handled: {interrupts}"
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(0.01)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert interrupts == {signal.SIGINT: SIGNALS_EACH, signal.SIGTERM: SIGNALS_EACH}
    assert "colmena-fed: still stopping" in capfd.readouterr().err
    results = drain(queues)
    delivered = Counter(r.task_id for r in results)
    assert delivered == Counter(sent)  # each task once, none lost
    assert all(r.failure and r.failure.kind == "shutdown" for r in results)
    assert not any(store.iterdir())  # the stores were emptied
    assert not still_running(started)  # both sites were shut down
