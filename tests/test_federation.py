"""A campaign's tasks on a real two-site federation: results, failures, placement, topics."""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any

import pytest

from colmena_fed import Result, TaskQueues, TaskServer
from colmena_fed.exceptions import TimeoutException


def take(queues: TaskQueues, topic: str, count: int) -> list[Result]:
    results: list[Result] = []
    for _ in range(count):
        result = queues.get_result(topic, timeout=120)
        assert result is not None, f"only {len(results)} of {count} results on {topic!r}"
        results.append(result)
    return results


def test_result_carries_value_site_worker_and_every_timestamp(queues: TaskQueues) -> None:
    task_id = queues.send_inputs(
        3, method="add", topic="simulate", input_kwargs={"y": 4}, task_info={"batch": 7}
    )
    (result,) = take(queues, "simulate", 1)
    assert result.task_id == task_id
    assert result.success is True
    assert result.value == 7
    assert result.failure is None
    assert result.args == (3,)
    assert result.kwargs == {"y": 4}
    assert result.task_info == {"batch": 7}
    assert result.site == "cpu-site"
    assert result.slot == "cpu"
    assert result.endpoint is not None
    assert result.placement is not None
    assert result.placement.startswith("availability")
    assert result.worker is not None
    assert result.worker.pid != os.getpid()
    stamps = result.timestamps
    assert stamps.dispatched is not None
    assert stamps.compute_started is not None
    assert stamps.compute_ended is not None
    assert stamps.received is not None
    assert stamps.delivered is not None
    assert stamps.created <= stamps.dispatched <= stamps.received <= stamps.delivered
    assert stamps.compute_started <= stamps.compute_ended
    assert result.run_time is not None
    assert result.queue_wait is not None
    assert result.total_time is not None
    assert result.overhead is not None
    assert result.run_time <= result.total_time


def test_user_exception_comes_back_as_failed_result(queues: TaskQueues) -> None:
    queues.send_inputs("no such molecule", method="fail", topic="simulate")
    (result,) = take(queues, "simulate", 1)
    assert result.success is False
    assert result.value is None
    assert result.failure is not None
    assert result.failure.kind == "user"
    assert result.failure.exception_type == "ValueError"
    assert result.failure.message == "no such molecule"
    assert result.failure.traceback is not None
    assert "raise ValueError" in result.failure.traceback
    assert result.retries == 0
    assert result.site == "cpu-site"


def test_gpu_method_runs_only_on_the_gpu_site_pinned_to_its_accelerator(
    queues: TaskQueues,
) -> None:
    for _ in range(3):
        queues.send_inputs(method="accelerator", topic="train")
    results = take(queues, "train", 3)
    assert {r.site for r in results} == {"gpu-site"}
    assert {r.slot for r in results} == {"gpu"}
    assert {r.value for r in results} == {"0"}
    for result in results:
        assert result.worker is not None
        assert result.worker.accelerator == "0"


def test_gpu_slot_binds_late_so_tasks_wait_on_the_thinker_side(
    federation: TaskServer, queues: TaskQueues
) -> None:
    for _ in range(3):
        queues.send_inputs(0.3, method="gpu_nap", topic="train")
    first = queues.get_result("train", timeout=60)
    assert first is not None
    rest = take(queues, "train", 2)
    ordered = sorted([first, *rest], key=lambda r: r.timestamps.dispatched or 0)
    for earlier, later in itertools.pairwise(ordered):
        assert earlier.timestamps.received is not None
        assert later.timestamps.dispatched is not None
        # One gpu slot: the next task left the thinker only after the previous one came back.
        assert later.timestamps.dispatched >= earlier.timestamps.received
    assert federation.pending_count == 0


def test_each_result_arrives_exactly_once_on_its_own_topic(queues: TaskQueues) -> None:
    sent = {queues.send_inputs(i, method="double", topic="simulate") for i in range(20)}
    sent_other = {queues.send_inputs(i, method="double", topic="other") for i in range(5)}
    results = take(queues, "simulate", 20)
    others = take(queues, "other", 5)
    assert {r.task_id for r in results} == sent
    assert {r.task_id for r in others} == sent_other
    assert sorted(r.value for r in results) == [2 * i for i in range(20)]
    with pytest.raises(TimeoutException):
        queues.get_result("simulate", timeout=0.5)
    assert queues.active_count == 0


def test_resources_and_site_narrow_the_placement(queues: TaskQueues) -> None:
    queues.send_inputs(0.0, method="nap", topic="simulate", resources="gpu", site="gpu-site")
    queues.send_inputs(1, method="double", topic="simulate", resources={"site": "cpu-site"})
    results = {r.method: r for r in take(queues, "simulate", 2)}
    assert results["nap"].site == "gpu-site"
    assert results["nap"].slot == "gpu"
    assert results["double"].site == "cpu-site"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"method": "no_such_method"}, "unknown method 'no_such_method'"),
        ({"method": "double", "resources": "tpu"}, "needs a 'tpu' slot, which no site offers"),
        ({"method": "double", "site": "nowhere"}, "asks for site 'nowhere', which does not exist"),
        ({"method": "double", "site": "gpu-site"}, "site 'gpu-site' offers only gpu"),
    ],
)
def test_task_that_cannot_be_placed_fails_clearly_and_the_server_goes_on(
    queues: TaskQueues, kwargs: dict[str, Any], expected: str
) -> None:
    task_id = queues.send_inputs(5, topic="other", **kwargs)
    (result,) = take(queues, "other", 1)
    assert result.task_id == task_id
    assert result.success is False
    assert result.failure is not None
    assert result.failure.kind == "rejected"
    assert expected in result.failure.message
    assert task_id in result.failure.message
    queues.send_inputs(5, method="double", topic="other")
    (after,) = take(queues, "other", 1)
    assert after.value == 10


def test_keep_inputs_false_drops_inputs_from_the_record(queues: TaskQueues) -> None:
    queues.send_inputs(21, method="double", topic="simulate", keep_inputs=False)
    (result,) = take(queues, "simulate", 1)
    assert result.value == 42
    assert result.args == ()
    assert result.kwargs == {}


def test_unknown_topic_is_refused_naming_the_known_ones(queues: TaskQueues) -> None:
    with pytest.raises(ValueError, match=r"unknown topic 'typo'.*default, simulate, train, other"):
        queues.send_inputs(1, method="double", topic="typo")
    with pytest.raises(ValueError, match="unknown topic 'typo'"):
        queues.get_result("typo")
    assert queues.active_count == 0


def test_bad_resources_are_refused_at_send_time(queues: TaskQueues) -> None:
    with pytest.raises(ValueError, match="not a valid request; its fields are slot, site"):
        queues.send_inputs(1, method="double", resources={"gpus": 2})
    with pytest.raises(ValueError, match="contradicts"):
        queues.send_inputs(1, method="double", resources={"site": "a"}, site="b")
    assert queues.active_count == 0


def test_status_reports_workers_of_each_site(federation: TaskServer) -> None:
    cpu = federation.backends["cpu-site"].status()
    gpu = federation.backends["gpu-site"].status()
    assert cpu.online
    assert gpu.online
    assert cpu.workers == 2
    assert gpu.workers == 1
    assert cpu.raw["provider_type"] == "LocalProvider"
    assert federation.counts["cpu-site"].done > 0


def test_lost_worker_is_retried_then_a_system_failure_and_the_site_recovers(
    queues: TaskQueues,
) -> None:
    queues.send_inputs(method="die", topic="simulate", max_retries=1)
    (lost,) = take(queues, "simulate", 1)
    assert lost.success is False
    assert lost.failure is not None
    assert lost.failure.kind == "system"
    assert "WorkerLost" in lost.failure.message
    assert "after 2 attempts" in lost.failure.message
    assert lost.retries == 1
    assert [a.site for a in lost.attempts] == ["cpu-site", "cpu-site"]
    assert all(a.reason and "WorkerLost" in a.reason for a in lost.attempts)
    queues.send_inputs(4, method="double", topic="simulate")
    (after,) = take(queues, "simulate", 1)
    assert after.value == 8


def test_inputs_that_cannot_be_serialized_are_rejected_naming_the_task(
    queues: TaskQueues,
) -> None:
    unpicklable = (i for i in range(3))
    task_id = queues.send_inputs(unpicklable, method="double", topic="simulate")
    (result,) = take(queues, "simulate", 1)
    assert result.success is False
    assert result.failure is not None
    assert result.failure.kind == "rejected"
    # Refused on arrival: the run journal cannot write them down either.
    assert f"cannot serialize the inputs of task {task_id} (double)" in result.failure.message
    assert result.failure.exception_type == "UnjournaledInputs"


class Offset:
    """A class of the thinker's own script: it exists in ``__main__`` there, not at a worker."""

    def __init__(self, base: int) -> None:
        self.base = base

    def __add__(self, other: int) -> int:
        return self.base + other


def test_an_input_of_a_class_defined_in_the_thinkers_script_reaches_the_worker(
    queues: TaskQueues, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defined in __main__, it must travel by value (dill), not by name (a worker has no such
    # name): the C pickler that writes plain inputs would write it by name.
    monkeypatch.setattr(Offset, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "Offset", Offset, raising=False)
    queues.send_inputs(Offset(40), method="add", topic="simulate", input_kwargs={"y": 2})
    (result,) = take(queues, "simulate", 1)
    assert result.success, result.failure
    assert result.value == 42


def test_a_result_too_large_to_return_fails_once_without_retries(queues: TaskQueues) -> None:
    queues.send_inputs(11, method="blob", topic="simulate")
    (result,) = take(queues, "simulate", 1)
    assert result.success is False
    assert result.failure is not None
    assert result.failure.kind == "rejected"
    assert result.failure.exception_type == "MaxResultSizeExceeded"
    assert "configure a data store" in result.failure.message
    assert result.retries == 0
    assert len(result.attempts) == 1


def test_an_input_too_large_to_send_is_refused_with_what_to_do(queues: TaskQueues) -> None:
    task_id = queues.send_inputs(b"x" * 11_000_000, method="double", topic="simulate")
    (result,) = take(queues, "simulate", 1)
    assert result.failure is not None
    assert result.failure.kind == "rejected"
    assert result.failure.exception_type == "PayloadTooLarge"
    assert f"the inputs of task {task_id} (double)" in result.failure.message
    assert "configure a data store" in result.failure.message
