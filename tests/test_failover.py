"""Failover and staleness on real engines: a site dies mid-run, a pending task goes stale."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import ENDPOINTS, RunningTestbed
from sample_methods import double, nap

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.exceptions import TimeoutException
from colmena_fed.testbed.daemon import kill_session


def two_sites(testbed: RunningTestbed | None) -> SitesConfig:
    """Two sites offering 'cpu' slots: local ones, or the testbed's two endpoints."""
    if testbed is None:
        site = {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 2}}
        return SitesConfig.from_dict(
            {"sites": {"east": site, "west": site}, "scheduler": {"status_period": 0.5}}
        )
    # Prefetch hides the cloud's round trip, and puts more tasks in harm's way.
    east = {"endpoint": testbed.endpoints["local-gpu"], "resources": {"cpu": 3}, "prefetch": 2}
    west = {"endpoint": testbed.endpoints["local-cpu"], "resources": {"cpu": 4}, "prefetch": 2}
    return SitesConfig.from_dict(
        {
            "sites": {"east": east, "west": west},
            "scheduler": {"status_period": 1},
            "globus": testbed.globus,
        }
    )


def crash(server: TaskServer, site: str, testbed: RunningTestbed | None) -> None:
    """Kill a site as a node crash would.

    A local site loses its interchange; a globus site its endpoint daemon with everything it
    started (the testbed then restarts the daemon, empty-handed).
    """
    if testbed is None:
        engine = server.backends[site]._engine  # type: ignore[attr-defined]
        psutil.Process(engine.executor.interchange_proc.pid).kill()
    else:
        kill_session(testbed.current()["endpoints"]["local-cpu"]["pid"])


def wait_for_workers(server: TaskServer, sites: list[str]) -> None:
    """Until every one of ``sites`` has workers, so that each takes its share of the tasks."""
    deadline = time.monotonic() + 120
    while not all(server.snapshot()[0][name].status.workers for name in sites):
        assert time.monotonic() < deadline, server.snapshot()[0]
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["local", "globus"])
def test_a_site_dying_mid_run_loses_no_task_and_delivers_each_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    testbed = request.getfixturevalue("testbed") if backend == "globus" else None
    queues = TaskQueues()
    server = TaskServer(queues, two_sites(testbed), [nap], run_dir=tmp_path)
    with server:
        wait_for_workers(server, ["east", "west"])
        total, before = 28, 10
        sent = [queues.send_inputs(0.2, method="nap") for _ in range(total)]
        results: list[Result] = []
        while len(results) < before:
            result = queues.get_result(timeout=120)
            assert result is not None
            results.append(result)
        assert server.counts["west"].running > 0
        crash(server, "west", testbed)
        while len(results) < len(sent):
            result = queues.get_result(timeout=120)
            assert result is not None, f"{len(results)} of {len(sent)} results arrived"
            results.append(result)
        with pytest.raises(TimeoutException):
            queues.get_result(timeout=1)
    assert Counter(r.task_id for r in results) == Counter(sent)
    assert all(r.success and r.value == 0.2 for r in results), [
        r.failure for r in results if not r.success
    ]
    moved = [r for r in results if r.retries]
    assert moved, "no task was running on the site that died"
    for result in moved:
        if testbed is None:  # a local site stays dead; a restarted endpoint may take them
            assert result.site == "east"
        assert result.attempts[0].site == "west"
        assert result.attempts[0].reason is not None
        assert result.attempts[-1].reason is None
    if testbed is None:
        assert not server.snapshot()[0]["west"].status.online


def test_a_task_not_dispatched_within_max_wait_expires(tmp_path: Path) -> None:
    queues = TaskQueues()
    site = {"solo": {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 1}}}
    server = TaskServer(
        queues, SitesConfig.from_dict({"sites": site}), [nap, double], run_dir=tmp_path
    )
    with server:
        queues.send_inputs(0, method="double")
        warm = queues.get_result(timeout=120)
        assert warm is not None
        queues.send_inputs(3, method="nap")
        stale_id = queues.send_inputs(1, method="double", max_wait=0.5)
        patient_id = queues.send_inputs(2, method="double")
        first = queues.get_result(timeout=30)
        assert first is not None
        assert first.task_id == stale_id, "the stale task should end before the nap does"
        assert first.failure is not None
        assert first.failure.kind == "expired"
        assert first.attempts == []
        rest = [queues.get_result(timeout=30) for _ in range(2)]
    assert [r.task_id for r in rest if r is not None][-1] == patient_id
