"""A task past its walltime ends as a `timeout` failure; its worker is freed, its site kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENDPOINTS
from sample_methods import double, nap, stubborn

from colmena_fed import Method, SitesConfig, TaskQueues, TaskServer
from colmena_fed.methods import MethodLike


def test_a_method_past_its_walltime_is_stopped_and_its_worker_freed(tmp_path: Path) -> None:
    sites = {"cpu-site": {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 1}}}
    methods: list[MethodLike] = [Method(nap, walltime=1.0), stubborn, double]
    queues = TaskQueues()
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), methods, run_dir=tmp_path):
        queues.send_inputs(600, method="nap")  # interrupted in the call
        interrupted = queues.get_result(timeout=120)
        queues.send_inputs(600, method="stubborn", walltime=1.0)  # blocks the interrupt
        killed = queues.get_result(timeout=120)
        queues.send_inputs(3, method="double")
        after = queues.get_result(timeout=120)
    for result, method in ((interrupted, "nap"), (killed, "stubborn")):
        assert result.failure is not None, result
        assert result.failure.kind == "timeout", result.failure
        assert f"method {method!r} ran past its walltime of 1.0 s" in result.failure.message
        assert len(result.attempts) == 1, "a timeout is not retried"
    assert killed.failure is not None
    assert "its worker was replaced" in killed.failure.message
    assert after.value == 6, "the site took the next task: not blamed, and its worker is back"


def test_a_simulated_task_past_its_walltime_times_out_at_it() -> None:
    sites = {"cpu": {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}}}
    queues = TaskQueues()
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), [double]) as server:
        assert server.world is not None
        long = queues.send_inputs(1, method="double", walltime=5.0)
        server.world.set_work(long, 50.0)
        short = queues.send_inputs(2, method="double", walltime=5.0)
        server.world.set_work(short, 1.0)
        server.world.run()
        results = {r.task_id: r for r in (queues.get_result(timeout=1) for _ in range(2))}
    failure = results[long].failure
    assert failure is not None
    assert failure.kind == "timeout"
    assert results[long].run_time == pytest.approx(5.0)
    assert results[short].success


@pytest.mark.parametrize("walltime", [0, -1.0])
def test_a_walltime_that_is_not_positive_is_refused(walltime: float) -> None:
    with pytest.raises(ValueError, match="walltime"):
        Method(double, walltime=walltime)
    with pytest.raises(ValueError, match="walltime"):
        TaskQueues().send_inputs(1, method="double", walltime=walltime)


#: Many calls that end as their walltime passes: no stray interrupt may fail a later call or
#: make the worker exit once every watchdog's grace is over.
RACES = """
import sys, time
from colmena_fed.worker import KILL_GRACE_S, run_method, read_report
reports = [run_method(time.sleep, 1e-4, 0.0002) for _ in range(300)]
failed = [read_report(report).success for report in reports]
time.sleep(KILL_GRACE_S + 1)
print(sum(failed), "succeeded")
"""


def test_calls_that_end_at_their_walltime_leave_no_stray_interrupt() -> None:
    run = subprocess.run(
        [sys.executable, "-c", RACES], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("succeeded")
