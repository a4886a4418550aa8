"""Colmena's API with Colmena's meaning: queue arguments, timeouts, the kill signal, the
shutdown idiom (``thinker.join(); queues.send_kill_signal(); server.join()``), and the record
fields a Colmena application reads."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import psutil
import pytest
from conftest import ENDPOINTS, drain
from sample_methods import double, fail, nap

from colmena_fed import (
    BaseThinker,
    PythonMethod,
    ResourceCounter,
    ResourceRequirements,
    Result,
    SitesConfig,
    TaskQueues,
    TaskServer,
    agent,
    result_processor,
)
from colmena_fed.colmena.queue.redis import RedisQueues
from colmena_fed.colmena.task_server import ParslTaskServer
from colmena_fed.errors import UnsupportedError
from colmena_fed.exceptions import KillSignalException, TimeoutException
from colmena_fed.methods import as_methods
from colmena_fed.queues import as_resource_request


def sim_federation() -> SitesConfig:
    sites = {"cpu": {"sim": {"workers": {"cpu": 2}}, "resources": {"cpu": 2}}}
    return SitesConfig.from_dict({"sites": sites})


def test_queue_arguments_mean_what_they_mean_in_colmena() -> None:
    queues = TaskQueues(topics=["simulate"], serialization_method="pickle", keep_inputs=False)
    with TaskServer(queues, sim_federation(), [double]) as server:
        queues.send_inputs(np.arange(3), method="double", topic="simulate")
        kept = queues.send_inputs(4, method="double", topic="simulate", keep_inputs=True)
        assert server.world is not None
        server.world.run()
        results = {r.task_id: r for r in drain(queues, "simulate")}
    assert {task_id: r.inputs for task_id, r in results.items()} == {
        **{task_id: ((), {}) for task_id in results if task_id != kept},
        kept: ((4,), {}),
    }
    with pytest.raises(ValueError, match="serialization_method='yaml'"):
        TaskQueues(serialization_method="yaml")
    with pytest.raises(ValueError, match=r"proxystore_name='store'.*a 'data:' section"):
        TaskQueues(proxystore_name="store")
    with pytest.raises(ValueError, match=r"proxystore_threshold=1000.*'threshold_bytes:'"):
        TaskQueues(proxystore_threshold=1000)


def test_get_result_raises_colmenas_timeout_and_wakes_on_the_kill_signal() -> None:
    queues = TaskQueues()
    with pytest.raises(TimeoutException):
        queues.get_result(timeout=0.05)
    woken: list[BaseException] = []

    def wait() -> None:
        try:
            queues.get_result()  # no timeout: only the kill signal ends it
        except BaseException as exc:
            woken.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    queues.send_kill_signal()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert [type(exc) for exc in woken] == [KillSignalException]
    assert not issubclass(KillSignalException, Exception)  # an `except Exception` lets it by


class EndsWhileOtherWaits(BaseThinker):
    """One agent waits for results with no timeout; the other returns or raises."""

    def __init__(self, queues: TaskQueues, raises: bool) -> None:
        super().__init__(queues)
        self.raises = raises

    @agent
    def waits(self) -> None:
        self.queues.get_result(topic="thinker")

    @agent
    def ends(self) -> None:
        time.sleep(0.2)
        if self.raises:
            raise ValueError("an agent failed")


@pytest.mark.timeout(30)  # without the wake, `waits` blocks for ever
@pytest.mark.parametrize("raises", [True, False], ids=["raises", "returns"])
def test_an_agent_blocked_in_get_result_is_woken_when_the_thinker_stops(raises: bool) -> None:
    thinker = EndsWhileOtherWaits(TaskQueues(topics=["thinker"]), raises)
    if raises:
        with pytest.raises(ValueError, match="an agent failed"):
            thinker.run()
        assert thinker.failed_agent == "EndsWhileOtherWaits.ends"
    else:
        thinker.run()
        assert thinker.exception is None


class Batch(BaseThinker):
    """Colmena's batch pattern: send everything, collect every result, then stop."""

    def __init__(self, queues: TaskQueues, count: int) -> None:
        super().__init__(queues)
        self.count = count
        self.values: list[int] = []

    @agent(startup=True)
    def submit(self) -> None:
        for i in range(self.count):
            self.queues.send_inputs(i, method="double", topic="default")

    @result_processor(topic="default")
    def collect(self, result: Result) -> None:
        assert result.success, result.failure_info
        self.values.append(result.value)
        if len(self.values) == self.count:
            self.done.set()


def test_colmenas_shutdown_idiom_stops_the_server_and_leaves_no_process(tmp_path: object) -> None:
    sites = {"cpu-site": {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 2}}}
    queues = TaskQueues()
    server = TaskServer(queues, SitesConfig.from_dict({"sites": sites}), [double])
    thinker = Batch(queues, 4)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    server.start()
    thinker.start()
    thinker.join()
    queues.send_kill_signal()
    server.join()
    assert sorted(thinker.values) == [0, 2, 4, 6]
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_record_writes_colmenas_json_with_numpy_inputs_and_values() -> None:
    result = Result(method="double", args=(np.arange(3),), kwargs={"scale": np.float64(2)})
    result.value, result.success = np.arange(3) * 2, True
    result.fail("user", "ValueError", "bad input")
    written = json.loads(result.json(exclude={"inputs"}))
    assert "inputs" not in written
    assert written["value"] == [0, 2, 4]
    assert written["failure_info"]["exception"] == "ValueError('bad input')"
    assert written["timestamp"]["created"] == result.timestamps.created
    assert json.loads(result.json())["inputs"] == [[[0, 1, 2]], {"scale": 2.0}]
    assert result.inputs[1] == {"scale": 2.0}
    assert result.complete is True


def test_colmenas_method_forms_name_the_slot_and_bad_ones_are_refused() -> None:
    methods = as_methods(
        [(double, {"executors": ["gpu"]}), PythonMethod(fail, name="fails"), (nap, {})]
    )
    assert {name: m.slot for name, m in methods.items()} == {
        "double": "gpu",
        "fails": "cpu",
        "nap": "cpu",
    }
    with pytest.raises(ValueError, match=r"method double: executors=\['cpu', 'gpu'\]; .* one"):
        as_methods([(double, {"executors": ["cpu", "gpu"]})])
    with pytest.raises(ValueError, match=r"method double: options \['timeout'\]"):
        as_methods([(double, {"timeout": 3})])
    with pytest.raises(TypeError, match="a method pair is"):
        as_methods([(double, "gpu")])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("refused", "replacement"),
    [
        (ParslTaskServer, r"TaskServer\(queues, SitesConfig.from_yaml"),
        (RedisQueues, r"use TaskQueues\(topics=\[\.\.\.\]\)"),
    ],
)
def test_colmena_names_without_meaning_here_name_their_replacement(
    refused: type, replacement: str
) -> None:
    with pytest.raises(UnsupportedError, match=f"{refused.__name__} has no meaning.*{replacement}"):
        refused([double], TaskQueues(), None)


def test_resource_counter_waits_and_moves_slots_as_colmenas() -> None:
    rec = ResourceCounter(2, ["sim", "train"])
    moved = threading.Event()
    assert rec.reallocate(None, "sim", 2, False, moved.set)  # block=False returns at once
    assert moved.wait(5)
    assert rec.allocated_slots("sim") == 2
    assert rec.acquire("sim", 2)
    threading.Timer(0.1, rec.release, args=("sim", 1)).start()
    assert rec.acquire("sim", 1, timeout=0)  # 0 waits for ever, as in Colmena
    with pytest.raises(KeyError, match="unknown task type 'infer'"):
        rec.allocated_slots("infer")


def test_colmenas_resource_requirements_become_a_resource_specification() -> None:
    plain = as_resource_request(ResourceRequirements(cpu_threads=4))
    assert plain.specification is None
    mpi = as_resource_request({"node_count": 2, "cpu_processes": 4})
    assert mpi.specification == {"num_nodes": 2, "ranks_per_node": 4}
    assert ResourceRequirements(node_count=2, cpu_processes=4).total_ranks == 8


class RaisesWhileDraining(BaseThinker):
    """A processor drains a task that never comes back; another agent raises meanwhile."""

    @agent
    def sends_then_ends(self) -> None:
        self.queues.send_inputs(1, method="double")  # no task server: it stays in flight

    @result_processor
    def drains(self, result: Result) -> None:
        raise AssertionError("no result comes")

    @agent(startup=True)
    def fails_late(self) -> None:
        self.done.wait()
        raise ValueError("failed while results drain")


@pytest.mark.timeout(30)  # without the kill signal the processor drains for ever
def test_an_agent_raising_while_results_drain_stops_the_thinker() -> None:
    thinker = RaisesWhileDraining(TaskQueues())
    with pytest.raises(ValueError, match="failed while results drain"):
        thinker.run()
    assert thinker.queues.active_count == 1
