"""TaskQueues: the thinker's side of the federation, organised by topic."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from colmena_fed import clock
from colmena_fed.compat import ResourceRequirements
from colmena_fed.exceptions import KillSignalException, TimeoutException
from colmena_fed.models import ANYWHERE, ResourceRequest, Result

RequestSink = Callable[[Result], None]

#: How often a blocked ``get_result`` looks whether the queues were told to stop (seconds).
_WAKE_S = 0.1

#: Colmena's serialization methods; records travel in-process here, so either is accepted.
SERIALIZATION_METHODS = ("json", "pickle")
ResourcesLike = ResourceRequest | ResourceRequirements | Mapping[str, Any] | str | None


def as_resource_request(resources: ResourcesLike, site: str | None = None) -> ResourceRequest:
    """Turn what a caller passed as ``resources`` (and ``site``) into a `ResourceRequest`.

    A string names the slot kind (``"gpu"``); a mapping gives the fields of `ResourceRequest`,
    or those of Colmena's `ResourceRequirements`, which is accepted too.
    """
    if (
        isinstance(resources, Mapping)
        and resources
        and set(resources) <= set(ResourceRequirements.model_fields)
    ):
        resources = ResourceRequirements(**resources)
    if isinstance(resources, ResourceRequest):
        request = resources
    elif resources is None:
        request = ANYWHERE
    elif isinstance(resources, str):
        request = ResourceRequest(slot=resources)
    elif isinstance(resources, ResourceRequirements):
        spec = resources.specification()
        request = ANYWHERE if spec is None else ResourceRequest(specification=spec)
    else:
        try:
            request = ResourceRequest(**dict(resources))
        except ValidationError as exc:
            fields = ", ".join(ResourceRequest.model_fields)
            raise ValueError(
                f"resources={dict(resources)!r} is not a valid request; its fields are {fields}"
            ) from exc
    if site is not None:
        if request.site not in (None, site):
            raise ValueError(f"site={site!r} contradicts resources site={request.site!r}")
        request = request.model_copy(update={"site": site})
    return request


def _check_arguments(
    topic: object,
    *,
    input_kwargs: object,
    resources: object,
    priority: object,
    retries: object,
    warm: object,
) -> None:
    """Refuse, naming the argument, what `TaskQueues.send_inputs` cannot take."""
    if not isinstance(topic, str):
        raise TypeError(f"topic={topic!r}: a topic is one name (a str)")
    if input_kwargs is not None and not isinstance(input_kwargs, Mapping):
        raise TypeError(
            f"input_kwargs={input_kwargs!r}: keyword inputs are a dict of name to value; pass "
            "positional inputs as send_inputs(*args, method=...)"
        )
    if resources is not None and not isinstance(
        resources, (str, Mapping, ResourceRequest, ResourceRequirements)
    ):
        raise TypeError(
            f"resources={resources!r}: pass a slot kind ('gpu'), a dict such as "
            "{'slot': 'gpu', 'site': 'polaris'}, a ResourceRequest or a ResourceRequirements"
        )
    for name, value in (("priority", priority), ("max_retries", retries)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name}={value!r}: pass an integer (or None for the default)")
    if warm is not None and (not isinstance(warm, str) or not warm):
        raise TypeError(
            f"warm={warm!r}: a warm key is a non-empty string, the key the method passes to "
            "colmena_fed.warm (e.g. warm='surrogate-v3')"
        )


@dataclass(frozen=True)
class Resumed:
    """What a resumed run carried over from the thinker that died, for the new one to read.

    Attributes:
        delivered: Results the old thinker took, in order; each is also replayed on its
            topic, marked ``replayed``, before any new result.
        outstanding: Tasks the old thinker sent whose results it never took: each arrives on
            its topic as a new result (the run goes on with them).
    """

    delivered: Sequence[Result]
    outstanding: Sequence[Result]

    def count(self, method: str | None = None, topic: str | None = None) -> int:
        """Tasks the old thinker sent (delivered or outstanding), of ``method`` and ``topic``."""
        return sum(
            (method is None or task.method == method) and (topic is None or task.topic == topic)
            for task in (*self.delivered, *self.outstanding)
        )


class TaskQueues:
    """Topic-organised queues between a thinker and a task server, in one process.

    ``send_inputs`` creates the task's `Result` record and hands it to the task server;
    results come back on the topic they were sent with, each exactly once.
    """

    def __init__(
        self,
        topics: Iterable[str] = (),
        serialization_method: Any = "json",
        keep_inputs: bool = True,
        proxystore_name: str | Mapping[str, str] | None = None,
        proxystore_threshold: int | Mapping[str, int] | None = None,
        *,
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        """Create queues for ``topics``; the ``default`` topic always exists.

        The positional arguments are Colmena's, in Colmena's order.

        Args:
            topics: Names of the topics results come back on.
            serialization_method: Colmena's ``"json"`` or ``"pickle"`` (or its enum). Records
                stay in the thinker's process here, so both mean the same.
            keep_inputs: Whether results carry their inputs back, for tasks whose
                ``send_inputs`` does not say (Colmena's queue-wide default).
            proxystore_name: Refused: large objects travel through the stores of the sites
                YAML's ``data:`` section, which the task server sets up for every site.
            proxystore_threshold: Refused, likewise (``data: threshold_bytes:``).
            priorities: Ranks topics (higher first, 0 for those not named): pending tasks of a
                higher-priority topic are dispatched before older tasks of a lower one.
        """
        method = str(getattr(serialization_method, "value", serialization_method)).lower()
        if method not in SERIALIZATION_METHODS:
            raise ValueError(
                f"serialization_method={serialization_method!r}: expected one of "
                f"{', '.join(SERIALIZATION_METHODS)}"
            )
        for name, given in (
            ("proxystore_name", proxystore_name),
            ("proxystore_threshold", proxystore_threshold),
        ):
            if given is not None:
                raise ValueError(
                    f"{name}={given!r}: colmena-fed moves large inputs and results through the "
                    "data stores of the sites YAML instead (a 'data:' section with 'stores:' and "
                    "'threshold_bytes:', and 'stores:' per site for which sites reach which); "
                    "see docs/data.md"
                )
        self.serialization_method = method
        self.keep_inputs = keep_inputs
        names = ["default", *(t for t in topics if t != "default")]
        self.topics: tuple[str, ...] = tuple(dict.fromkeys(names))
        self.priorities = dict(priorities or {})
        for topic in self.priorities:
            self._check_known(topic, names)
        self._results: dict[str, queue.SimpleQueue[Result]] = {
            t: queue.SimpleQueue() for t in self.topics
        }
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Event()
        self._idle.set()
        self._sink: RequestSink | None = None
        self._on_delivery: RequestSink | None = None
        self._unsent: deque[Result] = deque()
        self._killed = threading.Event()
        self._waking = threading.Event()
        #: What a resumed run carried over (None in a new run); read it in a startup agent.
        self.resumed: Resumed | None = None

    def add_topic(self, topic: str, priority: int | None = None) -> None:
        """Add a topic after creation (e.g. by a campaign factory that was handed the queues).

        ``priority`` ranks it as ``TaskQueues(priorities=...)`` would.
        """
        with self._lock:
            if topic not in self._results:
                self._results[topic] = queue.SimpleQueue()
                self.topics = (*self.topics, topic)
            if priority is not None:
                self.priorities[topic] = priority

    def _check_topic(self, topic: str) -> None:
        if topic not in self._results:
            self._check_known(topic, self.topics)

    @staticmethod
    def _check_known(topic: str, topics: Iterable[str]) -> None:
        if topic not in topics:
            raise ValueError(f"unknown topic {topic!r}; known topics: {', '.join(topics)}")

    @property
    def active_count(self) -> int:
        """Tasks sent whose results the thinker has not yet taken."""
        return self._active

    def send_inputs(
        self,
        *args: Any,
        method: str,
        topic: str = "default",
        input_kwargs: Mapping[str, Any] | None = None,
        resources: ResourcesLike = None,
        keep_inputs: bool | None = None,
        keep_result: bool = False,
        task_info: Mapping[str, Any] | None = None,
        site: str | None = None,
        max_wait: float | None = None,
        supersede: str | None = None,
        max_retries: int | None = None,
        priority: int | None = None,
        walltime: float | None = None,
        warm: str | None = None,
    ) -> str:
        """Submit one task; returns its task id.

        Args:
            *args: Positional inputs of the method.
            method: Name of the method to run (a name the task server was given).
            topic: Topic the result will be delivered on.
            input_kwargs: Keyword inputs of the method.
            resources: Slot kind (``"gpu"``), a mapping or a `ResourceRequest` narrowing
                where the task may run.
            keep_inputs: Keep the inputs on the result record (default: the queues').
            keep_result: If the result comes back through a data store, deliver it as its
                proxy and keep the object there until ``server.data.release(result.value)``
                (e.g. a model that later tasks take as an input, without a round trip).
            task_info: Free-form data returned untouched on the result.
            site: Run only on this site.
            max_wait: Seconds the task may wait to be dispatched; after that it ends as a
                failed result of kind ``expired``.
            supersede: A key: this task replaces a pending (not yet dispatched) task sent
                with the same key, which ends as a failed result of kind ``superseded``.
            max_retries: Re-sends allowed after a site fails the task (default: the
                method's own ``max_retries``); the method raising is never retried.
            priority: Dispatch rank among pending tasks (default: the topic's priority).
            walltime: Seconds the method may run (default: the method's ``walltime``); past
                it the task ends as a failed result of kind ``timeout``.
            warm: The key of the state the method keeps on its worker (the key it passes to
                `colmena_fed.warm`): the task server sends the task where that key is warm,
                weighed against waiting (see docs/warm.md).
        """
        _check_arguments(
            topic,
            input_kwargs=input_kwargs,
            resources=resources,
            priority=priority,
            retries=max_retries,
            warm=warm,
        )
        self._check_topic(topic)
        # Only what differs from the defaults: a record holds ~100k pending tasks' worth of
        # these, and pydantic keeps a set of the fields given to each.
        fields: dict[str, Any] = {"method": method, "topic": topic, "args": args}
        if input_kwargs:
            fields["kwargs"] = dict(input_kwargs)
        if not (self.keep_inputs if keep_inputs is None else keep_inputs):
            fields["keep_inputs"] = False
        if keep_result:
            fields["keep_result"] = True
        if resources is not None or site is not None:
            fields["resources"] = as_resource_request(resources, site)
        if task_info:
            fields["task_info"] = dict(task_info)
        if max_wait is not None:
            fields["max_wait"] = max_wait
        if supersede is not None:
            fields["supersede"] = supersede
        if max_retries is not None:
            fields["max_retries"] = max_retries
        if walltime is not None:
            fields["walltime"] = walltime
        if warm is not None:
            fields["warm_key"] = warm
        priority = self.priorities.get(topic, 0) if priority is None else priority
        if priority:
            fields["priority"] = priority
        result = Result(**fields)
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._idle.clear()
            sink = self._sink
            if sink is None:
                self._unsent.append(result)
        if sink is not None:
            sink(result)
        return result.task_id

    def get_result(self, topic: str = "default", timeout: float | None = None) -> Result:
        """Take the next result of ``topic``, waiting up to ``timeout`` seconds (None: for ever).

        Raises:
            TimeoutException: No result came within ``timeout`` (Colmena's meaning).
            KillSignalException: There is no result and the queues were told to stop
                (`send_kill_signal`, or the thinker stopped): a blocked agent wakes.
        """
        self._check_topic(topic)
        result = self._next(self._results[topic], timeout)
        if self._on_delivery is not None and not result.replayed:
            try:
                self._on_delivery(result)
            except Exception as exc:  # the result is off its queue: deliver it, as a failure
                result.value = None
                result.fail(
                    "system",
                    type(exc).__name__,
                    f"task {result.task_id} ({result.method}) came back, but its result could "
                    f"not be delivered: {exc}",
                )
        if not result.replayed:
            result.timestamps.delivered = clock.now()
        if result.sequence is None:  # after an intermediate result its task is still active
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._idle.set()
        return result

    def _next(self, results: queue.SimpleQueue[Result], timeout: float | None) -> Result:
        """The next of ``results``, looking every `_WAKE_S` whether the queues were stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._killed.is_set() or (deadline is None and self._waking.is_set()):
                try:
                    return results.get_nowait()
                except queue.Empty:
                    raise KillSignalException("the queues were told to stop") from None
            wait = _WAKE_S if deadline is None else min(_WAKE_S, deadline - time.monotonic())
            try:
                return results.get(timeout=max(wait, 0.0))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutException(f"no result within {timeout} s") from None

    def send_kill_signal(self) -> None:
        """Tell everything waiting on these queues to stop (Colmena's shutdown idiom).

        A task server's `join` returns (and stops it); every ``get_result`` that would block
        raises `KillSignalException`. `reset_kill_signal` undoes it, for a next campaign.
        """
        self._killed.set()

    def wake_blocked(self) -> None:
        """Wake ``get_result`` calls without a timeout: with no result waiting, they raise.

        They raise `KillSignalException` instead of blocking; calls with a timeout go on as
        before. The thinker does this when it is done, so that an agent waiting for results without
        a timeout wakes while result processors still drain what is in flight.
        `reset_kill_signal` undoes it.
        """
        self._waking.set()

    @property
    def killed(self) -> bool:
        """Whether `send_kill_signal` was called (and not reset since)."""
        return self._killed.is_set()

    def reset_kill_signal(self) -> None:
        """Let ``get_result`` block again (a thinker starting anew).

        Undoes `send_kill_signal` and `wake_blocked`.
        """
        self._killed.clear()
        self._waking.clear()

    def wait_for_kill_signal(self, timeout: float | None = None) -> bool:
        """Block until `send_kill_signal` is called; False on timeout."""
        return self._killed.wait(timeout)

    def flush(self) -> int:
        """Remove every result waiting on every topic; how many final results were removed.

        Removed results count as taken: `active_count` drops by as many (intermediate
        results do not count).
        """
        removed = 0
        for results in list(self._results.values()):
            while True:
                try:
                    result = results.get_nowait()
                except queue.Empty:
                    break
                removed += result.sequence is None
        with self._lock:
            self._active = max(0, self._active - removed)
            if self._active == 0:
                self._idle.set()
        return removed

    def wait_until_done(self, timeout: float | None = None) -> bool:
        """Block until every task sent has had its result taken; False on timeout."""
        return self._idle.wait(timeout)

    def connect(self, sink: RequestSink, on_delivery: RequestSink | None = None) -> None:
        """Route new requests to ``sink`` (the task server), first flushing those sent before.

        ``on_delivery`` is called with each result as the thinker takes it, in the thinker's
        thread (the task server resolves a proxied result there); if it raises, the result is
        delivered all the same, as a failure naming what went wrong.
        """
        with self._lock:
            if self._sink is not None:
                raise RuntimeError("these TaskQueues already feed a running task server")
            while self._unsent:
                sink(self._unsent.popleft())
            self._sink = sink
            self._on_delivery = on_delivery

    def disconnect(self) -> None:
        """Stop routing requests; later ones wait until a task server connects again."""
        with self._lock:
            self._sink = None

    def resume(self, resumed: Resumed) -> None:
        """Carry a resumed run over (called by the task server before it takes requests).

        The delivered results are replayed on their topics, and they and the outstanding
        tasks count in `active_count` until the thinker takes them.
        """
        for topic in {task.topic for task in (*resumed.delivered, *resumed.outstanding)}:
            self.add_topic(topic)
        with self._lock:
            self.resumed = resumed
            finals = sum(result.sequence is None for result in resumed.delivered)
            self._active += finals + len(resumed.outstanding)
            if self._active:
                self._idle.clear()
        for result in resumed.delivered:
            self._results[result.topic].put(result)

    def put_result(self, result: Result) -> None:
        """Deliver a task's record to its topic (called by the task server).

        Its final result, or an intermediate one (``sequence`` set), which leaves the task
        active.
        """
        self._results[result.topic].put(result)
