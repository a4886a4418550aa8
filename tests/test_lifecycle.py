"""Starting and stopping sites: bad endpoint YAML, PATH, shutdown with work outstanding."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from conftest import ENDPOINTS
from sample_methods import double, nap

from colmena_fed import ConfigError, SitesConfig, TaskQueues, TaskServer


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def wait_gone(pids: set[int], deadline_s: float = 60.0) -> set[int]:
    """The pids among ``pids`` still alive once they all exit or the deadline passes."""
    end = time.monotonic() + deadline_s
    alive = {p for p in pids if psutil.pid_exists(p)}
    while alive and time.monotonic() < end:
        time.sleep(0.2)
        alive = {
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
        }
    return alive


def one_site(endpoint_yaml: Path, slots: int = 1) -> SitesConfig:
    return SitesConfig.from_dict(
        {"sites": {"solo": {"local": str(endpoint_yaml), "resources": {"cpu": slots}}}}
    )


def test_duplicate_method_names_are_refused() -> None:
    config = one_site(ENDPOINTS / "local-cpu.yaml")
    with pytest.raises(ValueError, match="two methods are named 'double'"):
        TaskServer(TaskQueues(), config, [double, double])


def test_bad_endpoint_yaml_loses_nothing_and_shutdown_leaves_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues = TaskQueues(topics=["simulate"])
    early = [queues.send_inputs(i, method="double", topic="simulate") for i in range(2)]

    broken = tmp_path / "broken.yaml"
    broken.write_text("engine:\n  type: NoSuchEngine\n")
    before = children()
    with pytest.raises(ConfigError) as caught:
        TaskServer(queues, one_site(broken), [double], run_dir=tmp_path / "bad").start()
    assert str(broken) in str(caught.value)
    assert "site 'solo'" in str(caught.value)
    assert not wait_gone(children() - before)
    assert queues.active_count == 2

    # The engine's console scripts must be found even when the venv is not on PATH.
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    server = TaskServer(
        queues, one_site(ENDPOINTS / "local-cpu.yaml"), [double, nap], run_dir=tmp_path / "ok"
    )
    with server:
        results = [queues.get_result("simulate", timeout=120) for _ in early]
        assert {r.task_id for r in results if r is not None} == set(early)
        assert all(r is not None and r.success for r in results)
        started = children() - before
        assert started, "the engine started no subprocesses"
        running = queues.send_inputs(60, method="nap", topic="simulate")
        waiting = queues.send_inputs(60, method="nap", topic="simulate")
        while server.pending_count == 0 or server.counts["solo"].running == 0:
            time.sleep(0.05)
    unfinished = [queues.get_result("simulate", timeout=10) for _ in range(2)]
    assert {r.task_id for r in unfinished if r is not None} == {running, waiting}
    for result in unfinished:
        assert result is not None
        assert result.success is False
        assert result.failure is not None
        assert result.failure.kind == "shutdown"
    assert not wait_gone(started)
    assert queues.active_count == 0


def test_site_whose_interchange_dies_goes_offline_keeps_its_task_and_stops_without_hanging(
    tmp_path: Path,
) -> None:
    queues = TaskQueues()
    server = TaskServer(
        queues, one_site(ENDPOINTS / "local-cpu.yaml"), [double, nap], run_dir=tmp_path
    )
    before = children()
    with server:
        queues.send_inputs(2, method="double")
        first = queues.get_result(timeout=120)
        assert first is not None
        assert first.value == 4
        started = children() - before
        interchange = next(
            p
            for p in psutil.Process().children()
            if p.pid in started and "interchange" in " ".join(p.cmdline())
        )
        queues.send_inputs(60, method="nap")
        while server.counts["solo"].running == 0:
            time.sleep(0.05)
        interchange.kill()
        while server.snapshot()[0]["solo"].status.online or server.pending_count == 0:
            time.sleep(0.05)  # the task waits to be retried: no other site can take it
        assert "interchange exited" in server.snapshot()[0]["solo"].status.detail
    stranded = queues.get_result(timeout=30)
    assert stranded is not None
    assert stranded.failure is not None
    assert stranded.failure.kind == "shutdown"
    assert stranded.retries == 1
    (attempt,) = stranded.attempts
    assert "interchange exited" in (attempt.reason or "")
    assert not wait_gone(started)
