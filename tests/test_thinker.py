"""Thinker: resource counting, each kind of agent, early errors, failure and Ctrl+C handling."""

from __future__ import annotations

import _thread
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from colmena_fed.models import Result
from colmena_fed.queues import TaskQueues
from colmena_fed.thinker import (
    Agent,
    BaseThinker,
    ResourceCounter,
    agent,
    event_responder,
    result_processor,
    task_submitter,
)

pytestmark = pytest.mark.timeout(30)


def serve(queues: TaskQueues, methods: dict[str, Callable[..., Any]]) -> list[Result]:
    """Act as the task server: run each request at once and put its result back."""
    seen: list[Result] = []

    def sink(result: Result) -> None:
        seen.append(result)
        result.value = methods[result.method](*result.args, **result.kwargs)
        result.success = True
        queues.put_result(result)

    queues.connect(sink)
    return seen


def agent_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def interrupt_soon(delay: float = 0.3) -> threading.Timer:
    """Raise KeyboardInterrupt in the main thread after ``delay`` seconds, as Ctrl+C does."""
    timer = threading.Timer(delay, _thread.interrupt_main)
    timer.start()
    return timer


@pytest.fixture
def queues() -> Iterator[TaskQueues]:
    q = TaskQueues(topics=["simulate", "train"])
    yield q
    q.disconnect()


# --- ResourceCounter ---------------------------------------------------------------------


def test_counter_starts_unallocated() -> None:
    rec = ResourceCounter(4, ["sim", "train"])
    assert rec.total_slots == 4
    assert rec.task_types == ["sim", "train"]
    assert rec.unallocated_slots == 4
    assert rec.available_slots(None) == 4
    assert rec.allocated_slots("sim") == 0
    assert rec.available_slots("sim") == 0


def test_acquire_release_within_a_pool() -> None:
    rec = ResourceCounter(4, ["sim"])
    assert rec.reallocate(None, "sim", 3)
    assert rec.allocated_slots("sim") == 3
    assert rec.unallocated_slots == 1
    assert rec.acquire("sim", 2)
    assert rec.available_slots("sim") == 1
    assert not rec.acquire("sim", 2, timeout=0.05)
    assert rec.available_slots("sim") == 1, "a failed acquire takes nothing"
    assert rec.acquire("sim", 0)
    rec.release("sim", 2)
    assert rec.acquire("sim", 3, timeout=1)


def test_acquire_waits_for_release() -> None:
    rec = ResourceCounter(1, ["sim"])
    rec.reallocate(None, "sim", 1)
    assert rec.acquire("sim", 1)
    timer = threading.Timer(0.05, rec.release, args=("sim", 1))
    timer.start()
    assert rec.acquire("sim", 1, timeout=10)
    timer.join()


def test_release_with_rerequest() -> None:
    rec = ResourceCounter(2, ["sim"])
    rec.reallocate(None, "sim", 2)
    assert rec.acquire("sim", 2)
    assert rec.release("sim", 2, rerequest=True, timeout=1)
    assert rec.available_slots("sim") == 0
    assert rec.release("sim", 1) is None


def test_acquire_cancelled_by_event() -> None:
    rec = ResourceCounter(1, ["sim"])
    cancel = threading.Event()
    cancel.set()
    assert not rec.acquire("sim", 1, cancel_if=cancel)
    cancel.clear()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    assert not rec.acquire("sim", 1, cancel_if=cancel)
    timer.join()


def test_reallocate_all_waits_for_acquired_slots() -> None:
    rec = ResourceCounter(3, ["sim", "train"])
    rec.reallocate(None, "sim", 3)
    rec.acquire("sim", 2)
    assert not rec.reallocate("sim", "train", "all", timeout=0.05)
    assert rec.allocated_slots("sim") == 3
    timer = threading.Timer(0.05, rec.release, args=("sim", 2))
    timer.start()
    assert rec.reallocate("sim", "train", "all", timeout=10)
    timer.join()
    assert rec.allocated_slots("sim") == 0
    assert rec.allocated_slots("train") == rec.available_slots("train") == 3
    assert rec.reallocate("train", None, 1)
    assert rec.unallocated_slots == 1


def test_reallocate_cancelled_by_event() -> None:
    rec = ResourceCounter(1, ["sim"])
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    assert not rec.reallocate("sim", None, 1, cancel_if=cancel)


def test_counter_rejects_bad_use() -> None:
    rec = ResourceCounter(2, ["sim", "train"])
    with pytest.raises(
        ValueError, match=r"unknown task type 'gpu'; known task types: 'sim', 'train'"
    ):
        rec.acquire("gpu", 1)
    with pytest.raises(ValueError, match="unknown task type"):
        rec.allocated_slots("gpu")
    with pytest.raises(ValueError, match="to itself"):
        rec.reallocate("sim", "sim", 1)
    with pytest.raises(ValueError, match="n_slots must be an integer >= 0"):
        rec.acquire(None, -1)
    with pytest.raises(ValueError, match="cannot acquire 3 slots: there are 2 in all"):
        rec.acquire(None, 3)
    with pytest.raises(ValueError, match="cannot release 1 slots of 'sim': 0 acquired"):
        rec.release("sim", 1)
    with pytest.raises(ValueError, match="None is the unallocated pool"):
        ResourceCounter(1, [None])  # type: ignore[list-item]


# --- agents --------------------------------------------------------------------------------


@pytest.mark.usefixtures("queues")
def test_startup_agent_does_not_end_thinker(queues: TaskQueues) -> None:
    serve(queues, {"square": lambda x: x * x})

    class Squares(BaseThinker):
        def __init__(self, queues: TaskQueues) -> None:
            super().__init__(queues)
            self.values: list[int] = []

        @agent(startup=True)
        def seed(self) -> None:
            for x in range(5):
                self.queues.send_inputs(x, method="square", topic="simulate")

        @result_processor(topic="simulate")
        def collect(self, result: Result) -> None:
            self.values.append(result.value)
            if len(self.values) == 5:
                self.done.set()

    thinker = Squares(queues)
    thinker.run()
    assert sorted(thinker.values) == [0, 1, 4, 9, 16]
    assert not agent_threads("Squares.")


def test_any_non_startup_agent_ending_ends_thinker(queues: TaskQueues) -> None:
    class Brief(BaseThinker):
        @agent
        def quick(self) -> None:
            pass

        @agent
        def patient(self) -> None:
            while not self.done.wait(0.01):
                pass

    thinker = Brief(queues)
    thinker.run()
    assert thinker.done.is_set()
    assert not agent_threads("Brief.")


def test_only_startup_agents_end_when_all_return(queues: TaskQueues) -> None:
    ran: list[str] = []

    class Setup(BaseThinker):
        @agent(startup=True)
        def one(self) -> None:
            ran.append(self.agent_name or "")

        @agent(startup=True)
        def two(self) -> None:
            ran.append(self.agent_name or "")

    Setup(queues).run()
    assert sorted(ran) == ["one", "two"]
    BaseThinker(queues).run()  # no agents: nothing to wait for


def test_result_processors_get_their_topic_only(queues: TaskQueues) -> None:
    serve(queues, {"echo": lambda x: x})

    class Topics(BaseThinker):
        def __init__(self, queues: TaskQueues) -> None:
            super().__init__(queues)
            self.got: dict[str, list[str]] = {"default": [], "train": []}

        @agent(startup=True)
        def send(self) -> None:
            self.queues.send_inputs("a", method="echo")
            self.queues.send_inputs("b", method="echo", topic="train")

        @result_processor
        def on_default(self, result: Result) -> None:
            self.got["default"].append(result.value)
            self._maybe_done()

        @result_processor(topic="train")
        def on_train(self, result: Result) -> None:
            self.got["train"].append(result.value)
            self._maybe_done()

        def _maybe_done(self) -> None:
            if all(self.got.values()):
                self.done.set()

    thinker = Topics(queues)
    thinker.run()
    assert thinker.got == {"default": ["a"], "train": ["b"]}


def test_task_submitter_runs_when_slots_are_free(queues: TaskQueues) -> None:
    serve(queues, {"square": lambda x: x * x})
    rec = ResourceCounter(4, ["sim"])
    rec.reallocate(None, "sim", 4)

    class Submit(BaseThinker):
        def __init__(self, queues: TaskQueues, rec: ResourceCounter) -> None:
            super().__init__(queues, rec)
            self.per_task = 2
            self.sent = 0
            self.results: list[int] = []

        @task_submitter(task_type="sim", n_slots="per_task")
        def submit(self) -> None:
            self.queues.send_inputs(self.sent, method="square", topic="simulate")
            self.sent += 1

        @result_processor(topic="simulate")
        def receive(self, result: Result) -> None:
            assert self.rec is not None
            self.rec.release("sim", self.per_task)
            self.results.append(result.value)
            if len(self.results) == 6:
                self.done.set()

    thinker = Submit(queues, rec)
    thinker.run()
    assert thinker.results[:6] == [x * x for x in range(6)]
    assert thinker.sent >= 6


def test_bare_task_submitter_uses_unallocated_pool(queues: TaskQueues) -> None:
    calls: list[int] = []

    class Bare(BaseThinker):
        @task_submitter
        def submit(self) -> None:
            calls.append(1)
            if len(calls) == 3:
                self.done.set()

    Bare(queues, ResourceCounter(3)).run()
    assert len(calls) == 3


def test_event_responder_runs_and_clears_event(queues: TaskQueues) -> None:
    class Events(BaseThinker):
        def __init__(self, queues: TaskQueues) -> None:
            super().__init__(queues)
            self.responses: list[str] = []
            self.retrain = threading.Event()

        @agent
        def trigger(self) -> None:
            for _ in range(2):
                self.retrain.set()
                while self.retrain.is_set() and not self.done.is_set():
                    time.sleep(0.01)

        @event_responder(event_name="retrain")
        def first(self) -> None:
            self.responses.append("first")

        @event_responder(event_name="retrain")
        def second(self) -> None:
            time.sleep(0.05)
            self.responses.append("second")

    thinker = Events(queues)
    thinker.run()
    assert sorted(thinker.responses) == ["first", "first", "second", "second"]
    assert not thinker.retrain.is_set()


def test_event_responder_moves_slots_while_it_runs(queues: TaskQueues) -> None:
    rec = ResourceCounter(4, ["sim", "train"])
    rec.reallocate(None, "sim", 4)

    class Retrain(BaseThinker):
        def __init__(self, queues: TaskQueues, rec: ResourceCounter) -> None:
            super().__init__(queues, rec)
            self.train_slots_seen = 0

        @agent
        def trigger(self) -> None:
            self.start_training.set()
            while self.start_training.is_set() and not self.done.is_set():
                time.sleep(0.01)

        @event_responder(
            event_name="start_training",
            reallocate_resources=True,
            gather_from="sim",
            gather_to="train",
            disperse_to="sim",
            max_slots=3,
            slot_step=2,
        )
        def train(self) -> None:
            assert self.rec is not None
            assert self.rec.acquire("train", 3, timeout=10)
            self.train_slots_seen = self.rec.allocated_slots("train")
            self.rec.release("train", 3)

        start_training: threading.Event

    thinker = Retrain(queues, rec)
    assert isinstance(thinker.start_training, threading.Event), "the event was created"
    thinker.run()
    assert thinker.train_slots_seen == 3
    assert rec.allocated_slots("sim") == 4
    assert rec.allocated_slots("train") == 0


def test_subclass_inherits_and_overrides_agents(queues: TaskQueues) -> None:
    class Parent(BaseThinker):
        @agent
        def keep(self) -> None:
            pass

        @agent
        def replace(self) -> None:
            pass

        @agent
        def drop(self) -> None:
            pass

    class Child(Parent):
        @result_processor
        def replace(self, result: Result) -> None:
            pass

        def drop(self) -> None:
            pass

    assert [a.name for a in Parent.list_agents()] == ["keep", "replace", "drop"]
    kinds = {a.name: type(a).__name__ for a in Child.list_agents()}
    assert kinds == {"keep": "Agent", "replace": "ResultProcessor"}
    assert isinstance(Parent.keep, Agent)
    child = Child(queues)
    child.replace(None)  # read through an instance, an agent is its bound method
    child.drop()


# --- definition-time errors ----------------------------------------------------------------


def test_wrong_signatures_are_rejected_at_class_definition() -> None:
    with pytest.raises(
        TypeError, match=r"@agent .*Bad\.seed must take \(self\); write `def seed\(self\) -> None:`"
    ):

        class Bad(BaseThinker):
            @agent
            def seed(self, x: int) -> None:
                pass

    with pytest.raises(
        TypeError, match=r"Bad2\.got must take \(self, result\); write `def got\(self, result\)"
    ):

        class Bad2(BaseThinker):
            @result_processor(topic="simulate")
            def got(self) -> None:
                pass

    with pytest.raises(TypeError, match=r"@task_submitter .*Bad3\.submit must take \(self\)"):

        class Bad3(BaseThinker):
            @task_submitter(task_type="sim")
            def submit(self, result: Result) -> None:
                pass

    with pytest.raises(TypeError, match="must be a plain method"):

        class Bad4(BaseThinker):
            @agent
            async def seed(self) -> None:
                pass


def test_bad_decorator_options_are_rejected_at_class_definition() -> None:
    def respond(self: BaseThinker) -> None:
        pass

    with pytest.raises(TypeError, match=r"write @event_responder\(event_name='my_event'\)"):
        event_responder(respond)  # type: ignore[arg-type]  # what a bare @event_responder does

    with pytest.raises(ValueError, match="gather_from and gather_to are both 'sim'"):
        event_responder(
            event_name="e", reallocate_resources=True, gather_from="sim", gather_to="sim"
        )(lambda self: None)
    with pytest.raises(ValueError, match="n_slots must be >= 1"):
        task_submitter(n_slots=0)(lambda self: None)
    with pytest.raises(TypeError, match=r"pass its options by keyword, e.g. @agent\(...\)"):
        agent(True)  # type: ignore[call-overload]


def test_agent_outside_a_thinker_is_rejected() -> None:
    with pytest.raises((TypeError, RuntimeError)) as info:

        class NotAThinker:
            @agent
            def seed(self) -> None:
                pass

    message = f"{info.value} {info.value.__cause__}"
    assert "write `class NotAThinker(BaseThinker):`" in message


# --- construction-time errors --------------------------------------------------------------


def test_unknown_topic_is_rejected_at_construction(queues: TaskQueues) -> None:
    class Lost(BaseThinker):
        @result_processor(topic="infer")
        def got(self, result: Result) -> None:
            pass

    with pytest.raises(
        ValueError,
        match=r"@result_processor Lost\.got: topic 'infer' is not one of the queues' topics "
        r"\(default, simulate, train\); create the queues with "
        r"TaskQueues\(topics=\[\.\.\., 'infer'\]\)",
    ):
        Lost(queues)


def test_resource_needs_are_checked_at_construction(queues: TaskQueues) -> None:
    class Submit(BaseThinker):
        @task_submitter(task_type="sim")
        def submit(self) -> None:
            pass

    with pytest.raises(ValueError, match=r"@task_submitter Submit\.submit needs a ResourceCounter"):
        Submit(queues)
    with pytest.raises(
        ValueError,
        match=r"Submit\.submit: unknown task type 'sim'.*"
        r"ResourceCounter\(total_slots, task_types=\[\.\.\., 'sim'\]\)",
    ):
        Submit(queues, ResourceCounter(1, ["train"]))

    class Attr(BaseThinker):
        @task_submitter(task_type="sim", n_slots="batch")
        def submit(self) -> None:
            pass

    with pytest.raises(
        ValueError, match=r"n_slots='batch' must be an integer >= 1.*set `self.batch`"
    ):
        Attr(queues, ResourceCounter(1, ["sim"]))

    class Move(BaseThinker):
        @event_responder(
            event_name="go", reallocate_resources=True, gather_from="sim", gather_to="gpu"
        )
        def respond(self) -> None:
            pass

    with pytest.raises(ValueError, match=r"@event_responder Move\.respond needs a ResourceCounter"):
        Move(queues)
    with pytest.raises(ValueError, match=r"Move\.respond: unknown task type 'gpu'"):
        Move(queues, ResourceCounter(1, ["sim"]))


def test_event_attribute_must_be_an_event(queues: TaskQueues) -> None:
    class Wrong(BaseThinker):
        def __init__(self, queues: TaskQueues) -> None:
            super().__init__(queues)
            self.go = True

        @event_responder(event_name="go")
        def respond(self) -> None:
            pass

    with pytest.raises(
        TypeError, match=r"Wrong\.go, a bool; make it an event: `self.go = threading.Event\(\)`"
    ):
        Wrong(queues)


def test_event_set_in_subclass_init_is_used(queues: TaskQueues) -> None:
    class Own(BaseThinker):
        def __init__(self, queues: TaskQueues) -> None:
            super().__init__(queues)
            self.go = threading.Event()
            self.original = self.go

        @event_responder(event_name="go")
        def respond(self) -> None:
            pass

    thinker = Own(queues)
    assert thinker.go is thinker.original


# --- failures and Ctrl+C -------------------------------------------------------------------


class Busy(BaseThinker):
    """A thinker whose agents all wait for work: each kind is blocked somewhere."""

    def __init__(self, queues: TaskQueues, rec: ResourceCounter) -> None:
        super().__init__(queues, rec)
        self.busy = threading.Event()

    @result_processor(topic="simulate")
    def process(self, result: Result) -> None:
        pass

    @task_submitter(task_type="sim")
    def submit(self) -> None:
        pass

    @event_responder(event_name="busy")
    def respond(self) -> None:
        pass

    @event_responder(event_name="busy")
    def respond_slowly(self) -> None:
        while not self.done.wait(0.01):
            pass

    @agent
    def wait(self) -> None:
        while not self.done.wait(0.01):
            pass


def test_agent_exception_is_reraised_and_stops_every_agent(
    queues: TaskQueues, caplog: pytest.LogCaptureFixture
) -> None:
    failure = RuntimeError("bad batch")

    class Failing(Busy):
        @agent(startup=True)
        def crash(self) -> None:
            self.busy.set()
            time.sleep(0.1)
            raise failure

    thinker = Failing(queues, ResourceCounter(1, ["sim"]))
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError) as info:
        thinker.run()
    assert info.value is failure
    assert thinker.exception is failure
    assert "agent crash raised" in caplog.text
    assert not agent_threads("Failing.")


def test_result_processor_exception_is_reraised(queues: TaskQueues) -> None:
    serve(queues, {"echo": lambda x: x})

    class BadProcessor(BaseThinker):
        @agent(startup=True)
        def send(self) -> None:
            self.queues.send_inputs(1, method="echo")

        @result_processor
        def got(self, result: Result) -> None:
            raise KeyError(result.value)

        @agent
        def wait(self) -> None:
            while not self.done.wait(0.01):
                pass

    with pytest.raises(KeyError):
        BadProcessor(queues).run()
    assert not agent_threads("BadProcessor.")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_exception_is_kept_for_join_callers(queues: TaskQueues) -> None:
    class Background(BaseThinker):
        @agent
        def crash(self) -> None:
            raise ValueError("boom")

    thinker = Background(queues)
    thinker.start()
    thinker.join()
    assert isinstance(thinker.exception, ValueError)


def test_ctrl_c_stops_every_agent_and_run_returns(queues: TaskQueues) -> None:
    class CtrlC(Busy):
        pass

    thinker = CtrlC(queues, ResourceCounter(1, ["sim"]))
    thinker.busy.set()
    timer = interrupt_soon()
    thinker.run()
    timer.join()
    assert thinker.done.is_set()
    assert thinker.exception is None
    assert not agent_threads("CtrlC.")


def test_ctrl_c_while_joining_a_started_thinker(queues: TaskQueues) -> None:
    class Joined(Busy):
        pass

    thinker = Joined(queues, ResourceCounter(1, ["sim"]))
    thinker.start()
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.3, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    thinker.join()
    timer.join()
    assert not thinker.is_alive()
    assert not agent_threads("Joined.")
