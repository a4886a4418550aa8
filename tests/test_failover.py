"""Failover and staleness on real engines: a site dies mid-run, a pending task goes stale."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psutil
from conftest import ENDPOINTS
from sample_methods import double, nap

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer


def two_sites(slots: int = 2) -> SitesConfig:
    site = {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": slots}}
    return SitesConfig.from_dict(
        {"sites": {"east": site, "west": site}, "scheduler": {"status_period": 0.5}}
    )


def interchange_of(server: TaskServer, site: str) -> psutil.Process:
    """The interchange process of a local site's engine."""
    engine = server.backends[site]._engine  # type: ignore[attr-defined]
    pid = engine.executor.interchange_proc.pid
    return psutil.Process(pid)


def test_a_site_dying_mid_run_loses_no_task_and_delivers_each_once(tmp_path: Path) -> None:
    queues = TaskQueues()
    server = TaskServer(queues, two_sites(), [nap], run_dir=tmp_path)
    with server:
        sent = [queues.send_inputs(0.2, method="nap") for _ in range(200)]
        results: list[Result] = []
        while len(results) < 40:
            result = queues.get_result(timeout=120)
            assert result is not None
            results.append(result)
        assert server.counts["west"].running > 0
        interchange_of(server, "west").kill()
        while len(results) < len(sent):
            result = queues.get_result(timeout=120)
            assert result is not None, f"{len(results)} of {len(sent)} results arrived"
            results.append(result)
        assert queues.get_result(timeout=1) is None
    assert Counter(r.task_id for r in results) == Counter(sent)
    assert all(r.success and r.value == 0.2 for r in results), [
        r.failure for r in results if not r.success
    ]
    moved = [r for r in results if r.retries]
    assert moved, "no task was running on the site that died"
    for result in moved:
        assert result.site == "east"
        assert result.attempts[0].site == "west"
        assert result.attempts[0].reason is not None
        assert result.attempts[-1].reason is None
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
