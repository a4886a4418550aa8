"""One owner of task state: whatever fails around a task, it ends with one result, never lost."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import ENDPOINTS, RedisServer
from proxystore.proxy import Proxy, extract
from sample_methods import double, hold, nap, own_proxy

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.exceptions import TimeoutException
from colmena_fed.policies import Policy, SiteState

MB = 1_000_000


def solo(slots: int, **extra: Any) -> SitesConfig:
    """One local CPU site holding at most ``slots`` tasks."""
    site = {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": slots}}
    return SitesConfig.from_dict({"sites": {"solo": site}, **extra})


def generators(n: int) -> Iterator[Iterator[int]]:
    """Inputs no serializer can send."""
    for i in range(n):
        yield (x for x in range(i))


def test_a_thousand_tasks_refused_at_once_behind_a_busy_slot_each_end_once(
    tmp_path: Path,
) -> None:
    queues = TaskQueues()
    # Without a journal, which would refuse such inputs on arrival (tests/test_journal.py): here
    # each reaches the site's backend, which refuses it while the previous one's slot frees.
    server = TaskServer(queues, solo(1), [nap, double], run_dir=tmp_path, journal=False)
    with server:
        busy = queues.send_inputs(2, method="nap")
        while server.counts["solo"].running == 0:
            time.sleep(0.05)
        refused = {queues.send_inputs(g, method="double") for g in generators(1000)}
        assert server.pending_count == 1000  # all waiting for the one slot
        results = [queues.get_result(timeout=120) for _ in range(1001)]
        assert queues.wait_until_done(timeout=10)
        with pytest.raises(TimeoutException):  # nothing delivered twice
            queues.get_result(timeout=0)
        by_id = Counter(r.task_id for r in results if r is not None)
        assert set(by_id) == refused | {busy}
        assert set(by_id.values()) == {1}
        for result in results:
            assert result is not None
            if result.task_id == busy:
                assert result.success
                continue
            assert result.failure is not None
            assert result.failure.kind == "rejected"
            assert result.failure.exception_type == "SerializationError"
        queues.send_inputs(4, method="double")  # the site still works
        after = queues.get_result(timeout=60)
        assert after is not None
        assert after.value == 8


def test_a_store_that_dies_after_the_workers_ran_loses_no_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server = RedisServer()
    store = {"kind": "redis", "port": redis_server.port}
    config = solo(2, data={"threshold_bytes": MB, "stores": {"cache": store}})
    queues = TaskQueues()
    markers = [tmp_path / f"running-{i}" for i in range(2)]
    try:
        with (
            caplog.at_level(logging.WARNING, logger="colmena_fed.data"),
            TaskServer(queues, config, [hold], run_dir=tmp_path / "run"),
        ):
            for marker in markers:
                queues.send_inputs(b"i" * (2 * MB), str(marker), 2.0, method="hold")
            while not all(marker.exists() for marker in markers):  # inputs resolved, running
                time.sleep(0.05)
            redis_server.process.kill()
            results = [queues.get_result(timeout=60) for _ in markers]
            assert [r.value for r in results if r is not None] == [2 * MB, 2 * MB]
            assert all(r is not None and r.stores == ["cache"] for r in results)
            assert queues.active_count == 0
        assert "could not evict an object from data store 'cache'" in caplog.text
        assert "left 2 objects of this run in data store 'cache'" in caplog.text
    finally:
        redis_server.stop()


def test_a_result_the_method_proxied_itself_is_delivered_as_it_came(tmp_path: Path) -> None:
    config = solo(2, data={"stores": {"files": {"kind": "file", "path": str(tmp_path / "s")}}})
    queues = TaskQueues()
    with TaskServer(queues, config, [own_proxy], run_dir=tmp_path / "run"):
        queues.send_inputs([1, 2, 3], method="own_proxy")
        result = queues.get_result(timeout=60)
    assert result is not None
    assert result.success, result.failure
    assert type(result.value) is Proxy
    assert extract(result.value) == [1, 2, 3]
    assert queues.active_count == 0


def test_a_delivery_hook_that_raises_delivers_the_result_as_a_failure() -> None:
    queues = TaskQueues()

    def resolve(result: Result) -> None:
        raise LookupError("no store named 'elsewhere'")

    queues.connect(lambda task: None, on_delivery=resolve)
    task_id = queues.send_inputs(1, method="double")
    record = Result(task_id=task_id, method="double", value=2, success=True)
    queues.put_result(record)
    delivered = queues.get_result(timeout=1)
    assert delivered is record
    assert delivered.success is False
    assert delivered.value is None
    assert delivered.failure is not None
    assert delivered.failure.exception_type == "LookupError"
    assert f"task {task_id} (double) came back" in delivered.failure.message
    assert "no store named 'elsewhere'" in delivered.failure.message
    assert queues.active_count == 0


class ExplodingOnMarked:
    """A placement policy with a bug: it raises for tasks marked ``explode``."""

    name: ClassVar[str] = "exploding"

    def __init__(self, inner: Policy) -> None:
        self.inner = inner

    def restrict(self, task: Result, sites: Sequence[SiteState]) -> frozenset[str] | None:
        return self.inner.restrict(task, sites)

    def choose(
        self, task: Result, sites: Sequence[SiteState], waiting: int
    ) -> tuple[SiteState, str] | None:
        if task.task_info.get("explode"):
            raise ZeroDivisionError("policy bug")
        return self.inner.choose(task, sites, waiting)


def test_an_exception_while_placing_ends_that_task_and_no_other() -> None:
    config = SitesConfig.from_dict(
        {"sites": {"model": {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}}}}
    )
    queues = TaskQueues()
    server = TaskServer(queues, config, [double])
    server.scheduler.policy = ExplodingOnMarked(server.scheduler.policy)
    with server:
        assert server.world is not None
        before = queues.send_inputs(1, method="double")
        bad = queues.send_inputs(2, method="double", task_info={"explode": True})
        after = queues.send_inputs(3, method="double")
        server.world.run()
        results = {r.task_id: r for r in (queues.get_result(timeout=1) for _ in range(3))}
    assert results[before].success  # a simulated site runs no code: no value
    assert results[after].success
    failure = results[bad].failure
    assert failure is not None
    assert failure.kind == "system"
    assert failure.exception_type == "ZeroDivisionError"
    assert failure.message == f"placing task {bad} (double) failed: policy bug"
    assert queues.active_count == 0
