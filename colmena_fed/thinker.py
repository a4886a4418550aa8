"""The thinker: agents that steer a campaign by sending tasks and reacting to results.

A thinker is a `BaseThinker` subclass whose agent methods are marked with `agent`,
`result_processor`, `task_submitter` or `event_responder`. Each decorator returns a small
descriptor (`Agent` and its subclasses) that records itself in the owning class's registry,
so subclasses inherit agents and may override them. Running the thinker starts every agent
in its own thread; the thinker ends when any non-startup agent returns, when an agent raises
(the exception is re-raised from `BaseThinker.run`) or on Ctrl+C. On a normal end, result
processors first drain the results still in flight, as in Colmena. Task submitters and event
responders take and move slots of a `ResourceCounter` (see `colmena_fed.resources`).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar, overload

from colmena_fed.exceptions import KillSignalException, TimeoutException
from colmena_fed.queues import TaskQueues
from colmena_fed.resources import REACTION_S, ReallocatorThread, ResourceCounter

__all__ = [
    "Agent",
    "BaseThinker",
    "EventResponder",
    "ReallocatorThread",
    "ResourceCounter",
    "ResultProcessor",
    "TaskSubmitter",
    "agent",
    "event_responder",
    "result_processor",
    "task_submitter",
]

_REACTION_S = REACTION_S
"""Longest an agent goes without checking whether it must stop."""
_STOP_WARN_S = 5.0
"""How often `BaseThinker.run` names the agents it is still waiting for at shutdown."""

logger = logging.getLogger(__name__)

AgentMethod = Callable[..., Any]


def _check_method(func: object, decorator: str, params: str) -> None:
    """Reject, at class definition, a decorated object that is not a method with ``params``."""
    if not inspect.isfunction(func):
        raise TypeError(
            f"@{decorator} must decorate a method (def inside a BaseThinker subclass), got "
            f"{func!r}; pass its options by keyword, e.g. @{decorator}(...)"
        )
    write = f"write `def {func.__name__}({params}) -> None:`"
    where = func.__qualname__
    if inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func):
        raise TypeError(
            f"@{decorator} {where} must be a plain method (agents run in threads); {write}"
        )
    try:
        inspect.signature(func).bind(*params.split(", "))
    except TypeError:
        raise TypeError(f"@{decorator} {where} must take ({params}); {write}") from None


class Agent:
    """One agent of a thinker: a method run in its own thread while the thinker runs.

    Created by the `agent` decorator; the subclasses say how other decorators drive their
    method. Read through the class it returns itself; through a thinker, the bound method.

    Attributes:
        func: The decorated method.
        name: Attribute name of the agent in its class.
        startup: Whether the agent may return without ending the thinker.
    """

    decorator: ClassVar[str] = "agent"
    params: ClassVar[str] = "self"

    def __init__(self, func: AgentMethod, *, startup: bool = False) -> None:
        """Wrap ``func``, checking its signature."""
        _check_method(func, self.decorator, self.params)
        self.func = func
        self.name = func.__name__
        self.startup = startup
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        if not issubclass(owner, BaseThinker):
            raise TypeError(
                f"@{self.decorator} {owner.__qualname__}.{name}: agents are methods of a thinker;"
                f" write `class {owner.__name__}(BaseThinker):`"
            )
        self.name = name
        registry: dict[str, Agent] | None = vars(owner).get("_declared_agents")
        if registry is None:
            registry = {}
            owner._declared_agents = registry
        registry[name] = self

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        return self if obj is None else self.func.__get__(obj, objtype)

    def check(self, thinker: BaseThinker) -> None:
        """Reject, when ``thinker`` is constructed, what this agent cannot work with."""

    def run(self, thinker: BaseThinker) -> None:
        """Drive the method for ``thinker``; returns when the agent is finished."""
        self.func(thinker)

    def _where(self, thinker: BaseThinker) -> str:
        return f"@{self.decorator} {type(thinker).__name__}.{self.name}"

    def _counter(self, thinker: BaseThinker, *pools: str | None) -> ResourceCounter:
        """The thinker's resource counter, checked to exist and know ``pools``."""
        if thinker.rec is None:
            raise ValueError(
                f"{self._where(thinker)} needs a ResourceCounter; build the thinker with one: "
                f"{type(thinker).__name__}(queues, ResourceCounter(total_slots, task_types))"
            )
        for pool in pools:
            try:
                thinker.rec.check_pool(pool)
            except ValueError as exc:
                raise ValueError(
                    f"{self._where(thinker)}: {exc}; add it: "
                    f"ResourceCounter(total_slots, task_types=[..., {pool!r}])"
                ) from None
        return thinker.rec

    def _count_attribute(self, thinker: BaseThinker, option: str, value: int | str) -> int:
        """Resolve an option given as an int or as the name of an int attribute of the thinker."""
        count = getattr(thinker, value, None) if isinstance(value, str) else value
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"{self._where(thinker)}: {option}={value!r} must be an integer >= 1 or the name"
                f" of one (set `self.{value}` in __init__); got {count!r}"
            )
        return count


class ResultProcessor(Agent):
    """Agent that calls its method with each result of one topic, until the thinker is done."""

    decorator = "result_processor"
    params = "self, result"

    def __init__(self, func: AgentMethod, *, topic: str = "default") -> None:
        """Wrap ``func`` to process the results of ``topic``."""
        super().__init__(func)
        if not isinstance(topic, str):
            raise TypeError(f"@result_processor {func.__qualname__}: topic must be a str")
        self.topic = topic

    def check(self, thinker: BaseThinker) -> None:
        """Reject a topic the thinker's queues do not have."""
        if self.topic not in thinker.queues.topics:
            raise ValueError(
                f"{self._where(thinker)}: topic {self.topic!r} is not one of the queues' topics "
                f"({', '.join(thinker.queues.topics)}); create the queues with "
                f"TaskQueues(topics=[..., {self.topic!r}]) or call "
                f"queues.add_topic({self.topic!r}) before building the thinker"
            )

    def run(self, thinker: BaseThinker) -> None:
        """Process results of the topic until the thinker is done and nothing is in flight.

        As in Colmena, results of tasks sent before ``done`` are still processed once it is
        set (once every task submitter has returned, too); an agent raising or Ctrl+C stops
        it at once.
        """
        queues = thinker.queues
        while not (thinker.done.is_set() and thinker.submitters_done.is_set()) or (
            queues.active_count > 0
        ):
            try:
                result = queues.get_result(self.topic, timeout=_REACTION_S)
            except TimeoutException:
                continue
            except KillSignalException:
                return
            self.func(thinker, result)


class TaskSubmitter(Agent):
    """Agent that calls its method each time it acquires ``n_slots`` slots of its task type."""

    decorator = "task_submitter"

    def __init__(self, func: AgentMethod, *, task_type: str | None, n_slots: int | str) -> None:
        """Wrap ``func`` to run whenever ``n_slots`` slots of ``task_type`` are acquired."""
        super().__init__(func)
        if isinstance(n_slots, int) and (isinstance(n_slots, bool) or n_slots < 1):
            raise ValueError(f"@task_submitter {func.__qualname__}: n_slots must be >= 1")
        self.task_type = task_type
        self.n_slots = n_slots

    def check(self, thinker: BaseThinker) -> None:
        """Require a resource counter that knows the task type, and a valid ``n_slots``."""
        self._counter(thinker, self.task_type)
        self._count_attribute(thinker, "n_slots", self.n_slots)

    def run(self, thinker: BaseThinker) -> None:
        """Acquire slots then call the method, until ``done`` is set."""
        rec = self._counter(thinker)
        n_slots = self._count_attribute(thinker, "n_slots", self.n_slots)
        while not thinker.done.is_set():
            if not rec.acquire(self.task_type, n_slots, cancel_if=thinker.done):
                continue
            if thinker.done.is_set():  # taken as the thinker ended: nothing more to submit
                rec.release(self.task_type, n_slots)
                return
            self.func(thinker)


class EventResponder(Agent):
    """Agent that calls its method each time the thinker's event ``event_name`` is set.

    With ``reallocate_resources``, slots move from ``gather_from`` to ``gather_to`` (up to
    ``max_slots`` there, ``slot_step`` at a time) while the method runs, and every slot of
    ``gather_to`` goes to ``disperse_to`` once the method returned. The event is cleared when
    every responder to it has finished.
    """

    decorator = "event_responder"

    def __init__(
        self,
        func: AgentMethod,
        *,
        event_name: str,
        reallocate_resources: bool = False,
        gather_from: str | None = None,
        gather_to: str | None = None,
        disperse_to: str | None = None,
        max_slots: int | str | None = None,
        slot_step: int = 1,
    ) -> None:
        """Wrap ``func`` to respond to the event attribute ``event_name``."""
        super().__init__(func)
        where = f"@event_responder {func.__qualname__}"
        if reallocate_resources and gather_from == gather_to:
            raise ValueError(
                f"{where}: gather_from and gather_to are both {gather_from!r}; slots must move "
                f"between two pools, e.g. gather_from='simulate', gather_to='train'"
            )
        if isinstance(slot_step, bool) or not isinstance(slot_step, int) or slot_step < 1:
            raise ValueError(f"{where}: slot_step must be an integer >= 1, got {slot_step!r}")
        self.event_name = event_name
        self.reallocate_resources = reallocate_resources
        self.gather_from = gather_from
        self.gather_to = gather_to
        self.disperse_to = disperse_to
        self.max_slots = max_slots
        self.slot_step = slot_step

    def check(self, thinker: BaseThinker) -> None:
        """Require the event attribute to be a threading.Event (creating it if absent)."""
        event = getattr(thinker, self.event_name, None)
        if event is None:
            setattr(thinker, self.event_name, threading.Event())
        elif not isinstance(event, threading.Event):
            raise TypeError(
                f"{self._where(thinker)} waits on {type(thinker).__name__}.{self.event_name}, "
                f"a {type(event).__name__}; make it an event: "
                f"`self.{self.event_name} = threading.Event()`"
            )
        if self.reallocate_resources:
            self._counter(thinker, self.gather_from, self.gather_to, self.disperse_to)
            if self.max_slots is not None:
                self._count_attribute(thinker, "max_slots", self.max_slots)

    def run(self, thinker: BaseThinker) -> None:
        """Respond each time the event is set, until ``done`` is set."""
        event: threading.Event = getattr(thinker, self.event_name)
        barrier = thinker.barriers[self.event_name]
        while not thinker.done.is_set():
            if not event.wait(_REACTION_S) or thinker.done.is_set():
                continue
            thinker.logger.info("event %s is set; responding", self.event_name)
            if self.reallocate_resources:
                self._respond_with_slots(thinker)
            else:
                self.func(thinker)
            try:
                barrier.wait()  # its action clears the event once every responder is done
            except threading.BrokenBarrierError:
                return

    def _respond_with_slots(self, thinker: BaseThinker) -> None:
        limit = None
        if self.max_slots is not None:
            limit = self._count_attribute(thinker, "max_slots", self.max_slots)
        lender = ReallocatorThread(
            self._counter(thinker),
            self.gather_from,
            self.gather_to,
            self.disperse_to,
            limit,
            slot_step=self.slot_step,
            logger_name=f"{thinker.logger.name}.allocate",
            cancel_if=thinker.done,
        )
        lender.start()
        try:
            self.func(thinker)
        finally:
            lender.stop_event.set()
            lender.join()


@overload
def agent(func: AgentMethod, *, startup: bool = False) -> Agent: ...
@overload
def agent(func: None = None, *, startup: bool = False) -> Callable[[AgentMethod], Agent]: ...
def agent(
    func: AgentMethod | None = None, *, startup: bool = False
) -> Agent | Callable[[AgentMethod], Agent]:
    """Mark a method ``(self)`` as an agent, run in its own thread when the thinker runs.

    Args:
        func: The method (when used bare, as ``@agent``).
        startup: If True, the agent returning does not end the thinker (an exception does).
    """

    def wrap(f: AgentMethod) -> Agent:
        return Agent(f, startup=startup)

    return wrap if func is None else wrap(func)


@overload
def result_processor(func: AgentMethod, *, topic: str = "default") -> ResultProcessor: ...
@overload
def result_processor(
    func: None = None, *, topic: str = "default"
) -> Callable[[AgentMethod], ResultProcessor]: ...
def result_processor(
    func: AgentMethod | None = None, *, topic: str = "default"
) -> ResultProcessor | Callable[[AgentMethod], ResultProcessor]:
    """Mark a method ``(self, result)`` to be called with each result of ``topic``.

    Args:
        func: The method (when used bare).
        topic: Topic whose results it processes; must be one of the queues' topics.
    """

    def wrap(f: AgentMethod) -> ResultProcessor:
        return ResultProcessor(f, topic=topic)

    return wrap if func is None else wrap(func)


@overload
def task_submitter(
    func: AgentMethod, *, task_type: str | None = None, n_slots: int | str = 1
) -> TaskSubmitter: ...
@overload
def task_submitter(
    func: None = None, *, task_type: str | None = None, n_slots: int | str = 1
) -> Callable[[AgentMethod], TaskSubmitter]: ...
def task_submitter(
    func: AgentMethod | None = None, *, task_type: str | None = None, n_slots: int | str = 1
) -> TaskSubmitter | Callable[[AgentMethod], TaskSubmitter]:
    """Mark a method ``(self)`` to be called each time slots for a task are acquired.

    The method runs holding the slots; whoever handles the task's result should release them.

    Args:
        func: The method (when used bare).
        task_type: Pool of the thinker's `ResourceCounter` to acquire from (None: unallocated).
        n_slots: Slots to acquire per call: an integer or the name of an int attribute.
    """

    def wrap(f: AgentMethod) -> TaskSubmitter:
        return TaskSubmitter(f, task_type=task_type, n_slots=n_slots)

    return wrap if func is None else wrap(func)


def event_responder(
    func: None = None,
    *,
    event_name: str | None = None,
    reallocate_resources: bool = False,
    gather_from: str | None = None,
    gather_to: str | None = None,
    disperse_to: str | None = None,
    max_slots: int | str | None = None,
    slot_step: int = 1,
) -> Callable[[AgentMethod], EventResponder]:
    """Mark a method ``(self)`` to be called each time the thinker's event ``event_name`` is set.

    Args:
        func: Not for use: ``event_name`` is required, so write ``@event_responder(...)``.
        event_name: Attribute of the thinker holding a threading.Event (created if absent).
        reallocate_resources: Move slots to ``gather_to`` while the method runs.
        gather_from: Pool to take slots from.
        gather_to: Pool to put them in while the method runs.
        disperse_to: Pool that receives every slot of ``gather_to`` afterwards.
        max_slots: Most slots ``gather_to`` may hold: an integer, the name of an int
            attribute, or None for no limit.
        slot_step: Slots moved per reallocation.
    """
    if func is not None or not isinstance(event_name, str):
        raise TypeError(
            "@event_responder needs the name of the event it waits on; "
            "write @event_responder(event_name='my_event')"
        )
    name = event_name

    def wrap(f: AgentMethod) -> EventResponder:
        return EventResponder(
            f,
            event_name=name,
            reallocate_resources=reallocate_resources,
            gather_from=gather_from,
            gather_to=gather_to,
            disperse_to=disperse_to,
            max_slots=max_slots,
            slot_step=slot_step,
        )

    return wrap


class _AgentData(threading.local):
    """What each agent thread sees as its own: its name and logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.name: str | None = None


class _ThinkerType(type):
    """Checks a thinker's agents once it is fully constructed (subclass __init__ included)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        thinker = super().__call__(*args, **kwargs)
        for spec in thinker.list_agents():
            spec.check(thinker)
        return thinker


class BaseThinker(threading.Thread, metaclass=_ThinkerType):
    """Base class of a thinker: a set of agents that steer a campaign.

    Subclass it and mark methods with `agent`, `result_processor`, `task_submitter` or
    `event_responder`. `run` (directly, or through ``start``/``join``) starts every agent in
    its own thread and returns when they have all stopped.

    Attributes:
        queues: Queues to the task server.
        rec: Resource counter shared by the agents, if any.
        done: Set to stop every agent; set when a non-startup agent returns.
        submitters_done: Set once every task submitter has returned (at once if none).
        barriers: Per event name, the barrier its event responders meet before it clears.
        exception: The first exception an agent raised in the last run, if any.
        failed_agent: ``Class.agent`` name of the agent that raised `exception`, if any.
        interrupted: Whether the last run was stopped by Ctrl+C.
        local_details: Per-agent-thread data (name, logger); agents may store their own.
    """

    _declared_agents: ClassVar[dict[str, Agent]]

    def __init__(
        self,
        queue: TaskQueues,
        resource_counter: ResourceCounter | None = None,
        daemon: bool = True,
        logger_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the thinker; its agents are checked once construction ends.

        Args:
            queue: Queues to the task server (Colmena's name for the argument).
            resource_counter: Slots shared by task submitters and event responders.
            daemon: Whether the thinker's thread (``start``) is a daemon thread.
            logger_name: Name of the thinker's logger (default: module.ClassName).
            **kwargs: Passed to `threading.Thread` (``name`` defaults to the class name).
        """
        super().__init__(daemon=daemon, **{"name": type(self).__name__, **kwargs})
        self.queues = queue
        self.rec = resource_counter
        self.logger_name = logger_name
        self.done = threading.Event()
        self.submitters_done = threading.Event()
        self.exception: BaseException | None = None
        self.failed_agent: str | None = None
        self.interrupted = False
        self.local_details = _AgentData(self.make_logger())
        self.barriers: dict[str, threading.Barrier] = {}
        self._state_lock = threading.Lock()
        self._running = 0
        self._submitting = 0
        self._finished = threading.Event()

    @property
    def logger(self) -> logging.Logger:
        """Logger of the calling agent (the thinker's own outside agents)."""
        return self.local_details.logger

    @property
    def agent_name(self) -> str | None:
        """Name of the calling agent; None outside agents."""
        return self.local_details.name

    def make_logger(self, name: str | None = None) -> logging.Logger:
        """Return the thinker's logger, or its child logger ``name``."""
        base = self.logger_name or f"{type(self).__module__}.{type(self).__name__}"
        return logging.getLogger(base if name is None else f"{base}.{name}")

    def prepare_agent(self) -> None:
        """Run in each agent's thread before the agent starts; override to set up."""

    def tear_down_agent(self) -> None:
        """Run in each agent's thread after the agent ends; override to clean up."""

    @classmethod
    def list_agents(cls) -> list[Agent]:
        """The agents of this class, inherited ones included, minus those overridden."""
        found: dict[str, Agent] = {}
        for klass in reversed(cls.__mro__):
            declared = vars(klass).get("_declared_agents", {})
            for name, value in vars(klass).items():
                if name in declared and declared[name] is value:
                    found[name] = value
                else:
                    found.pop(name, None)
        return list(found.values())

    def run(self) -> None:
        """Run every agent in its own thread until the thinker is done, then stop them all.

        The thinker is done when ``done`` is set, when a non-startup agent returns, when an
        agent raises, or on Ctrl+C in the thread calling this. Every agent is then joined.

        Raises:
            BaseException: The first exception an agent raised, itself (also `exception`).
        """
        try:
            self._run_agents()
        finally:
            self._finished.set()
        if self.exception is not None:
            raise self.exception

    def _run_agents(self) -> None:
        agents = self.list_agents()
        self.exception = None
        self.failed_agent = None
        self.interrupted = False
        counts = Counter(a.event_name for a in agents if isinstance(a, EventResponder))
        self.barriers = {
            name: threading.Barrier(n, action=getattr(self, name).clear)
            for name, n in counts.items()
        }
        self._running = len(agents)
        self._submitting = sum(isinstance(a, TaskSubmitter) for a in agents)
        if self._submitting:
            self.submitters_done.clear()
        else:
            self.submitters_done.set()
        self.queues.reset_kill_signal()
        threads = [
            threading.Thread(
                target=self._run_agent, args=(a,), name=f"{self.name}.{a.name}", daemon=True
            )
            for a in agents
        ]
        self.logger.info("starting %d agents in process %d", len(agents), os.getpid())
        try:
            for thread in threads:
                thread.start()
            while threads and not self.done.wait(_REACTION_S):  # timed: Ctrl+C is seen promptly
                pass
        except KeyboardInterrupt:
            self._interrupt()
        finally:
            self.done.set()
            if self.exception is not None:
                self.queues.send_kill_signal()  # an agent raised: stop now, drain nothing
            else:
                self.queues.wake_blocked()  # result processors drain what is in flight
            self._stop_agents([t for t in threads if t.ident is not None])
            self.queues.send_kill_signal()  # a task server's join() returns

    def _interrupt(self) -> None:
        """Ctrl+C: stop every agent now (result processors too, whatever is in flight)."""
        self.interrupted = True
        self.logger.warning("interrupted (Ctrl+C): stopping every agent")
        self.done.set()
        self.queues.send_kill_signal()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thinker's thread; on Ctrl+C, set ``done`` and wait for it to stop.

        The wait is on an event, in slices: Ctrl+C inside `threading.Thread.join` would leave
        the thread marked as stopped while it still runs (CPython 3.11).
        """
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while self.ident is not None and not self._finished.is_set():
                left = _REACTION_S if end is None else min(end - time.monotonic(), _REACTION_S)
                if left <= 0:
                    return
                self._finished.wait(left)
        except KeyboardInterrupt:
            self._interrupt()
            self._finished.wait()
        super().join()

    def _stop_agents(self, threads: list[threading.Thread]) -> None:
        for barrier in self.barriers.values():
            barrier.abort()
        while True:
            try:
                self._join_agents(threads)
            except KeyboardInterrupt:
                if not self.interrupted:
                    self._interrupt()
                    continue
                names = ", ".join(t.name for t in threads if t.is_alive())
                self.logger.error("interrupted again: leaving agents %s running (daemons)", names)
                return
            self.logger.info("all agents stopped")
            return

    def _join_agents(self, threads: list[threading.Thread]) -> None:
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(_STOP_WARN_S)
            if alive[0].is_alive():
                names = ", ".join(t.name for t in alive)
                in_flight = self.queues.active_count
                if in_flight and not self.queues.killed:
                    self.logger.warning(
                        "waiting for %d results in flight (agents %s process them; Ctrl+C "
                        "stops now)",
                        in_flight,
                        names,
                    )
                else:
                    self.logger.warning("waiting for agents %s to see `done` and return", names)

    def _run_agent(self, spec: Agent) -> None:
        self.local_details.name = spec.name
        self.local_details.logger = self.make_logger(spec.name)
        failed = False
        try:
            self.prepare_agent()
            self.logger.info("%s started", spec.name)
            try:
                spec.run(self)
            finally:
                self.tear_down_agent()
        except KillSignalException:  # woken in get_result as the campaign ends: a clean stop
            self.logger.info("%s woken by the kill signal", spec.name)
        except BaseException as exc:
            failed = True
            with self._state_lock:
                if self.exception is None:
                    self.exception = exc
                    self.failed_agent = f"{type(self).__name__}.{spec.name}"
            self.logger.error("agent %s raised; stopping every agent", spec.name, exc_info=exc)
            self.queues.send_kill_signal()  # result processors stop draining at once
        finally:
            with self._state_lock:
                self._running -= 1
                last = self._running == 0
                if isinstance(spec, TaskSubmitter):
                    self._submitting -= 1
                    if self._submitting == 0:
                        self.submitters_done.set()
            if failed or last or not spec.startup:
                self.done.set()
            self.logger.info("%s ended", spec.name)
