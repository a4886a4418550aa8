"""The dispatcher: the one owner of every task's state.

Nothing else changes a task once it is sent. The queues, the site backends, the status poller
and the data plane post *events* (a task was requested; an attempt ended; a site reported its
status; a deadline passed; a result was delivered), and the dispatcher applies them one at a
time, in the order they were posted. Applying an event decides the transitions (placed,
dispatched, retried, failed over, expired, superseded, ended) and queues their *effects* (send a
task to its site, put a result on its topic, evict objects); the effects run once the queued
events are applied. An effect that posts an event (a backend that fails a task at once) only
queues it, so nothing re-enters placement, however many tasks are refused at once, and an
exception while applying an event ends that task as a failure with the reason. With a run
journal (`colmena_fed.journal`), the transitions a batch of events made are written down before
its effects run, and `resume` takes over the tasks a dead thinker's journal left.

No thread of its own runs the dispatcher: whichever thread posts an event while no other
thread is applying events applies them all (a combining lock). One thread at a time owns the
state, and the hot path has no thread hand-off. A thread that finds the dispatcher busy leaves
its event to the thread at work and returns at once. The main thread holds back its SIGINT
and SIGTERM handlers while it applies events (`colmena_fed.signals`), so Ctrl+C never lands
halfway through a transition.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from colmena_fed import clock
from colmena_fed.backends import Outcome, OutcomeCallback, SiteBackend, SiteStatus
from colmena_fed.capacity import CapacityWatchers
from colmena_fed.channels import Intermediate
from colmena_fed.data import DataPlane
from colmena_fed.errors import SiteError
from colmena_fed.journal import Journal, UnjournaledInputs, delivery_key
from colmena_fed.methods import Method
from colmena_fed.models import (
    Attempt,
    FailureInfo,
    Result,
    Timestamps,
    WarmRecord,
    WarmUse,
    WorkerInfo,
)
from colmena_fed.recovery import InFlight, Recovery
from colmena_fed.scheduler import Placement, PlacementError, Scheduler
from colmena_fed.signals import SignalHold
from colmena_fed.stream import CHANNEL_UNREACHABLE
from colmena_fed.worker import WALLTIME_EXCEEDED, WorkerReport, walltime_message

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: An event or an effect: a bound method of the dispatcher and its arguments.
_Call = tuple[Any, ...]

#: Claims the outcomes of tasks a resumed run finds still at sites whose tasks outlive the
#: thinker (`colmena_fed.backends.globus.ServiceClients.reattach`): each task, its site, its
#: Globus Compute id if known, and where its outcome goes; then every id the journal knows.
Reattach = Callable[[list[tuple[Result, str, "str | None", OutcomeCallback]], set[str]], None]

#: Seconds a finished streaming task waits for its intermediate results, by default.
LOST_AFTER_S = 30.0

#: Why a resumed run sends again a task that was in flight at a local site.
RESENT = "the thinker restarted; the local site's engine, and the task with it, died with it"


@dataclass
class SiteCounts:
    """What the dispatcher has seen of one site, for displays and reports."""

    running: int = 0
    done: int = 0
    failed: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    status: SiteStatus = field(default_factory=lambda: SiteStatus(online=False, detail="starting"))


@dataclass
class _Stream:
    """What a streaming task has passed on to the thinker, across its attempts."""

    #: Intermediate results taken so far: the sequence number of the next one.
    next: int = 0
    #: The attempt whose values are taken now; an older attempt's are dropped.
    attempt: int = 0
    #: Values of that attempt that came ahead of their turn, by sequence number.
    early: dict[int, Intermediate] = field(default_factory=dict)


@dataclass
class _Held:
    """A finished streaming task whose intermediate results are still on their way."""

    report: WorkerReport
    site: str
    #: When they count as lost (monotonic seconds: a network's delay, in real time).
    deadline: float


class Dispatcher:
    """Owns the scheduler, the record of every unfinished task, and each site's counts.

    Post events with `requested`, `finished`, `status`, `tick` and `delivered`, from any
    thread; read a consistent view with `read`; end everything with `close`.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        backends: Mapping[str, SiteBackend],
        methods: Mapping[str, Method],
        deliver: Callable[[Result], None],
        *,
        data: DataPlane | None = None,
        capacity: CapacityWatchers | None = None,
        staleness: float = float("inf"),
        journal: Journal | None = None,
        lost_after: Mapping[str, tuple[str, float]] | None = None,
    ) -> None:
        """Dispatch over ``backends`` with ``scheduler``; ``deliver`` hands a result to the thinker.

        Args:
            scheduler: Pending work and placement (owned by the dispatcher from now on).
            backends: The sites, by name.
            methods: The methods tasks may name (for their retry limits).
            deliver: Puts a finished task's record on its topic (`TaskQueues.put_result`).
            data: The stores that carry the tasks' large inputs and results, if any.
            capacity: Watchers of the live capacity per slot kind, told after status changes.
            staleness: Seconds after which a site's last online report no longer counts.
            journal: Where every transition is written down before its effects run, if any.
            lost_after: Per site that streams, its channel, and the seconds a finished
                streaming task waits for intermediate results still on their way there before
                they count as lost.
        """
        self.scheduler = scheduler
        self.backends = backends
        self.methods = methods
        self.data = data
        self.capacity = capacity or CapacityWatchers()
        self.staleness = staleness
        #: The run's journal; None without one (or once writing to it failed).
        self.journal = journal
        #: Holds the main thread's signals back while it applies events, once installed.
        self.signals = SignalHold()
        #: Per-site counts; read them through `read` for a consistent view.
        self.counts = {name: SiteCounts() for name in backends}
        self._deliver = deliver
        self._events: deque[_Call] = deque()
        self._effects: list[_Call] = []
        self._lock = threading.Lock()
        self._live: dict[str, Result] = {}  # requested and not yet ended
        self._in_flight: dict[str, Result] = {}  # sent to a site, outcome not yet in
        self._journaled_status: dict[str, tuple[bool, int | None]] = {}
        self.lost_after = dict(lost_after or {})
        self._streams: dict[str, _Stream] = {}  # streaming tasks that sent something
        self._held: dict[str, _Held] = {}  # finished, intermediate results still to come
        self._closed = False
        self._main = threading.main_thread().ident

    # Events: any thread may post them.

    def requested(self, task: Result) -> None:
        """The thinker sent ``task`` (its slot set; ``task.failure`` set if refused already)."""
        self._post((self._on_requested, task))

    def finished(self, task: Result, attempt: int, outcome: Outcome) -> None:
        """Attempt number ``attempt`` of ``task`` ended at its site with ``outcome``."""
        self._post((self._on_finished, task, attempt, outcome))

    def status(self, site: str, status: SiteStatus) -> None:
        """``site`` reported its live state."""
        self._post((self._on_status, site, status))

    def tick(self) -> None:
        """Time passed: expire pending tasks whose ``max_wait`` is over."""
        self._post((self._on_tick,))

    def intermediates(self, channel: str, batch: list[Intermediate], position: str) -> None:
        """``channel`` carried ``batch``; returns once it is applied (and journaled).

        ``position`` is the channel's stream position after the batch (a resumed run reads on
        from the journaled one).
        """
        self._post((self._on_intermediates, channel, batch, position))
        self.read(lambda: None)

    def overdue_streams(self) -> None:
        """Time passed: run again finished tasks whose intermediate results never came."""
        if self._held:
            self._post((self._on_overdue_streams,))

    def delivered(self, task: Result) -> None:
        """The thinker took ``task``'s result from its topic.

        The journal notes it at once, in the caller's thread. Only the data plane acts on a
        delivery (it evicts the result's object), so without one there is nothing to post.
        """
        journal = self.journal
        if journal is not None:
            journal.delivered(delivery_key(task), clock.now())
        if self.data is not None:
            self._post((self._on_delivered, task))

    def resume(self, recovery: Recovery, reattach: Reattach | None = None) -> None:
        """Take over the tasks of a run whose thinker died, as its journal left them.

        Results that came back and were never delivered are delivered; tasks in flight at
        sites whose tasks outlive the thinker are claimed there with ``reattach``; those in
        flight at local sites are sent again; pending tasks are queued again, with what was
        left of their ``max_wait``. Returns once that is applied.
        """
        self._post((self._on_resume, recovery, reattach))
        self.read(lambda: None)

    def close(self) -> None:
        """End every unfinished task as ``shutdown``; tasks requested later end the same way.

        Returns once that is applied and every result is on its topic.
        """
        self._post((self._on_close,))
        self.read(lambda: None)

    def read(self, query: Callable[[], T]) -> T:
        """The answer of ``query`` on the dispatcher's state, once every posted event is applied.

        Not to be called from inside the dispatcher (a backend's ``submit``, a policy).
        """
        with self._lock:
            answer: T = self._apply(query)
        self._run(applied=True)  # events posted while this thread held the dispatcher
        return answer

    # Running the dispatcher.

    def _post(self, event: _Call) -> None:
        self._events.append(event)
        self._run()

    def _run(self, applied: bool = False) -> None:
        """Apply every queued event, unless another thread is at it (it applies ours too).

        The thread that applied events then tells the capacity watchers, outside the lock.
        """
        lock = self._lock
        while self._events and lock.acquire(blocking=False):
            applied = True
            try:
                self._apply(None)
            finally:
                lock.release()
        if applied:
            self.capacity.deliver()

    def _apply(self, query: Callable[[], Any] | None) -> Any:
        """Drain the events (and answer ``query``); the caller holds the lock."""
        if threading.get_ident() != self._main:
            self._drain()
            return None if query is None else query()
        signals = self.signals
        signals.held = True
        try:
            self._drain()
            answer = None if query is None else query()
        finally:
            signals.held = False
        if signals.pending:  # now that no transition is half done
            signals.release()
        return answer

    def _drain(self) -> None:
        events, effects = self._events, self._effects
        while events:
            while events:
                event = events.popleft()
                try:
                    event[0](*event[1:])
                except Exception as exc:
                    self._event_failed(event, exc)
                if self.scheduler.refused:
                    self._end_refused()
            if self.journal is not None and self.journal.rows:
                self._commit()
            try:
                for effect in effects:
                    try:
                        effect[0](*effect[1:])
                    except Exception:
                        logger.exception("%s failed", effect[0].__name__)
            finally:
                effects.clear()

    def _commit(self) -> None:
        """Write down what the events decided; a journal that cannot be written is dropped."""
        assert self.journal is not None
        try:
            self.journal.commit()
        except OSError as exc:
            logger.error(
                "cannot write the run journal %s (%s): the run goes on, but can no longer be "
                "resumed after its thinker dies",
                self.journal.path,
                exc,
            )
            self.journal = None

    def _end_refused(self) -> None:
        """End the tasks the scheduler could not place because the policy raised for them."""
        refused, self.scheduler.refused = self.scheduler.refused, []
        for task in refused:
            failure = task.failure
            logger.error("%s\n%s", failure and failure.message, failure and failure.traceback)
            self._end(task)

    def _event_failed(self, event: _Call, exc: Exception) -> None:
        """An event could not be applied: end its task as a failure, keeping the rest whole."""
        task = next((arg for arg in event[1:] if isinstance(arg, Result)), None)
        logger.error(
            "applying %s failed%s",
            event[0].__name__,
            f" for task {task.task_id}" if task is not None else "",
            exc_info=exc,
        )
        if task is None or task.task_id not in self._live:
            return
        try:
            self.scheduler.forget(task.task_id)
            if self._in_flight.pop(task.task_id, None) is not None:
                self._left_site(task, task.attempts[-1].site)
        except Exception:
            logger.exception("could not free what task %s held", task.task_id)
        task.fail(
            "system",
            type(exc).__name__,
            f"colmena-fed could not handle task {task.task_id} ({task.method}): {exc}",
        )
        self._end(task)

    # Transitions: only ever run by `_drain`, one at a time.

    def _on_requested(self, task: Result) -> None:
        method = self.methods.get(task.method)
        if task.walltime is None and method is not None:
            task.walltime = method.walltime
        self._live[task.task_id] = task
        if self.journal is not None:
            self._write_submitted(task)
        if task.failure is not None:  # refused before it reached the dispatcher
            self._end(task)
            return
        if self._closed:
            self._shut_out(task)
            return
        try:
            self.scheduler.check(task)
        except PlacementError as exc:
            task.fail("rejected", "PlacementError", str(exc))
            self._end(task)
            return
        placed, ended = self.scheduler.submit(task)
        self._dispatch(placed)
        for old in ended:
            self._end(old)

    def _on_finished(self, task: Result, attempt: int, outcome: Outcome) -> None:
        received = clock.now()
        if self._in_flight.get(task.task_id) is not task or len(task.attempts) != attempt:
            logger.info("late outcome of task %s (attempt %d) ignored", task.task_id, attempt)
            if self.data is not None and not isinstance(outcome, SiteError):
                self._effects.append((self.data.discard, outcome.value))
            return
        del self._in_flight[task.task_id]
        task.timestamps.received = received
        site = task.attempts[-1].site
        counts = self.counts[site]
        if isinstance(outcome, SiteError) and _stopped_at_walltime(task, outcome, received):
            # Its worker was stopped for running too long (or lost after that): not the site's
            # fault, and running it again would take as long.
            message = walltime_message(task.method, task.walltime or 0.0)
            outcome = SiteError(
                site, WALLTIME_EXCEEDED, f"{message} (its worker was replaced)", kind="timeout"
            )
        failed_here = isinstance(outcome, SiteError) and outcome.kind == "system"
        if failed_here and self.backends[site].polled:  # its next report lifts it
            self.scheduler.suspend(site)  # before its slot frees: nothing more goes there
        if not isinstance(outcome, SiteError) and outcome.warm is not None:
            # Before its slot frees: the task that takes it goes where its key is warm.
            self.scheduler.learn_warm(site, task.method, outcome, received)
        self._left_site(task, site)
        task.attempts[-1].ended = received
        if isinstance(outcome, SiteError):
            counts.failed += 1
            if outcome.kind == "system":
                self._retry_or_fail(task, outcome.code, outcome.message, received)
            else:
                task.fail(outcome.kind, outcome.code, outcome.message)
                self._end(task)
        elif outcome.exception_type == CHANNEL_UNREACHABLE:  # the site's channel failed
            counts.failed += 1
            self._retry_or_fail(task, CHANNEL_UNREACHABLE, outcome.message or "", received)
        elif outcome.intermediates and self._stream_short(task, outcome.intermediates):
            lost_after = self.lost_after.get(site, ("", LOST_AFTER_S))[1]
            self._held[task.task_id] = _Held(outcome, site, time.monotonic() + lost_after)
        else:
            self._conclude(task, outcome, site)

    def _conclude(self, task: Result, report: WorkerReport, site: str) -> None:
        """The method returned (or raised) at ``site``: record the outcome and end the task."""
        _record(task, report)
        if self.data is not None:
            self.data.note_result(task)
        counts = self.counts[site]
        counts.done += task.success is True
        counts.failed += task.success is False
        counts.by_method[task.method] = counts.by_method.get(task.method, 0) + 1
        self.scheduler.observe(task)
        self._end(task)

    def _stream_short(self, task: Result, sent: int) -> bool:
        """Whether fewer of the task's intermediate results reached the thinker than it sent."""
        stream = self._streams.get(task.task_id)
        return stream is None or stream.next < sent

    def _on_status(self, site: str, status: SiteStatus) -> None:
        now = clock.now()
        if self.journal is not None:
            for task_id, remote_id in status.acknowledged:
                if task_id in self._in_flight:
                    self.journal.acknowledged(task_id, site, remote_id, now)
        online = status.online and now - status.updated <= self.staleness
        if status.online and not online:
            status = replace(status, online=False, detail="status is stale")
        self.counts[site].status = status
        if self.journal is not None and self._journaled_status.get(site) != (
            online,
            status.workers,
        ):
            self._journaled_status[site] = (online, status.workers)
            self.journal.status(site, online, status.workers, now)
        was_online = self.scheduler.sites[site].online
        self._dispatch(self.scheduler.set_status(site, online, status.workers, status.managers))
        if was_online and not online:
            self._fail_over(site, status.detail or "site offline", now)
        if self.capacity.slots:
            self.capacity.update(self.scheduler.live_capacity)

    def _on_tick(self) -> None:
        now = clock.now()
        for task in self.scheduler.expire(now):
            self._end(task)
        self._dispatch(self.scheduler.wake(now))

    def _on_intermediates(self, channel: str, batch: list[Intermediate], position: str) -> None:
        now = clock.now()
        for item in batch:
            task = self._live.get(item.task_id)
            if task is None or item.attempt != len(task.attempts):
                continue  # of a task that ended, or of an attempt given up on
            stream = self._streams.get(task.task_id)
            if stream is None:
                stream = self._streams[task.task_id] = _Stream()
            if item.attempt != stream.attempt:  # a new attempt streams from the start again
                stream.attempt, stream.early = item.attempt, {}
            if item.sequence < stream.next:
                continue  # taken already, from an earlier attempt (or sent twice)
            stream.early[item.sequence] = item
            while stream.next in stream.early:
                self._pass_on(task, stream.early.pop(stream.next), now)
                stream.next += 1
            held = self._held.get(task.task_id)
            if held is not None and stream.next >= (held.report.intermediates or 0):
                del self._held[task.task_id]
                self._conclude(task, held.report, held.site)
        if self.journal is not None:
            self.journal.channel(channel, position, now)

    def _pass_on(self, task: Result, item: Intermediate, now: float) -> None:
        """Journal one intermediate result and queue it for the thinker."""
        stamps = task.timestamps
        record = task.model_copy(
            update={
                "value": item.value,
                "success": item.error is None,
                "sequence": item.sequence,
                "attempts": list(task.attempts),
                "timestamps": Timestamps(
                    created=stamps.created,
                    dispatched=stamps.dispatched,
                    compute_ended=item.sent,
                    received=now,
                ),
            }
        )
        if item.error is not None:
            where = f"intermediate result {item.sequence} of task {task.task_id} ({task.method})"
            record.fail("system", "UnreadableIntermediate", f"{where}: {item.error}")
        if not task.keep_inputs:
            record.args, record.kwargs = (), {}
        if self.journal is not None:
            self.journal.intermediate(record, item.data, now)
        if self.data is not None:
            self.data.note_result(record)
        self._effects.append((self._deliver, record))

    def _on_overdue_streams(self) -> None:
        now, wall = clock.now(), time.monotonic()
        for task_id, held in list(self._held.items()):
            if wall < held.deadline:
                continue
            del self._held[task_id]
            task = self._live[task_id]
            stream = self._streams.get(task_id)
            got, sent = (0 if stream is None else stream.next), held.report.intermediates
            if self.data is not None:
                self.data.discard(held.report.value)
            self.counts[held.site].failed += 1
            channel, waited = self.lost_after.get(held.site, ("", LOST_AFTER_S))
            message = (
                f"task {task_id} ({task.method}) streamed {sent} intermediate results at site "
                f"{held.site!r}, but only {got} reached the thinker within {waited:g} s: "
                f"channel {channel!r} lost the rest"
            )
            self._retry_or_fail(task, "IntermediatesLost", message, now)

    def _on_delivered(self, task: Result) -> None:
        if self.data is not None:
            self._effects.append((self.data.after_delivery, task))

    def _on_resume(self, recovery: Recovery, reattach: Reattach | None) -> None:
        now = clock.now()
        downtime = max(0.0, now - recovery.last_event)
        if self.journal is not None:
            self.journal.resumed(now)
        if self.data is not None:
            self.data.adopt(recovery)
        for record in recovery.untaken_intermediates:  # before their tasks' final results
            if self.data is not None:
                self.data.note_result(record)
            self._effects.append((self._deliver, record))
        for task_id, (taken, attempt) in recovery.streamed.items():
            self._streams[task_id] = _Stream(next=taken, attempt=attempt)
        for task in recovery.undelivered:  # ended in the journal already: delivered only
            if self.data is not None:
                self.data.note_result(task)
            self._effects.append((self._put, task))
        claims: list[tuple[Result, str, str | None, OutcomeCallback]] = []
        queued = list(recovery.pending)
        for entry in recovery.in_flight:
            if reattach is not None and self.backends[entry.site].outlives_thinker:
                claims.append(self._adopt(entry))
            else:
                entry.task.attempts[-1].ended, entry.task.attempts[-1].reason = now, RESENT
                if self.journal is not None:
                    self.journal.resent(entry.task, RESENT, now)
                queued.append(entry.task)
        for task in (*queued, *(claim[0] for claim in claims)):
            task.downtime += downtime
            self._live[task.task_id] = task
        if claims:
            assert reattach is not None
            self._effects.append((reattach, claims, recovery.remote_ids))  # before new sends
        queued.sort(key=lambda task: task.timestamps.created)  # submission order, for FIFO
        for task in queued:
            task.site = None
            placed, ended = self.scheduler.submit(task)
            self._dispatch(placed)
            for old in ended:
                self._end(old)

    def _adopt(self, entry: InFlight) -> tuple[Result, str, str | None, OutcomeCallback]:
        """Count a task found in flight at its site as in flight there now."""
        task, site = entry.task, entry.site
        self._in_flight[task.task_id] = task
        self.scheduler.adopt(task, site)
        self.counts[site].running += 1
        on_done = functools.partial(self.finished, task, len(task.attempts))
        return task, site, entry.remote_id, on_done

    def _on_close(self) -> None:
        self._closed = True
        if self.journal is not None:
            self.journal.closed(clock.now())
        for task in self._in_flight.values():
            self.counts[task.attempts[-1].site].running -= 1
        unfinished = [*self.scheduler.drain(), *self._in_flight.values()]
        self._in_flight.clear()
        for task in unfinished:
            self._shut_out(task)
        held, self._held = self._held, {}
        for task_id, entry in held.items():  # it ended: what it streamed is all there will be
            self._conclude(self._live[task_id], entry.report, entry.site)

    # Steps the transitions share.

    def _dispatch(self, placements: list[Placement]) -> None:
        """Record each placement as a new attempt and queue its send."""
        if not placements:
            return
        now = clock.now()
        for task, site in placements:
            task.endpoint = self.backends[site].endpoint_id
            task.timestamps.dispatched = now
            task.attempts.append(Attempt(site=site, dispatched=now))
            if self.journal is not None:
                self.journal.dispatched(task, site, len(task.attempts), now)
            self._in_flight[task.task_id] = task
            self.counts[site].running += 1
            self._effects.append((self._send, task, site, len(task.attempts)))

    def _left_site(self, task: Result, site: str) -> None:
        """``task`` no longer holds a slot at ``site``: free it and fill free slots."""
        self.counts[site].running -= 1
        scheduler = self.scheduler
        units = scheduler.units(task, site) if scheduler.mpi else 1
        self._dispatch(scheduler.release(site, task.slot or "", units))

    def _retry_or_fail(self, task: Result, code: str, message: str, now: float) -> None:
        """Close the task's current attempt; place it again if it has retries left."""
        current = task.attempts[-1]
        current.ended, current.reason = now, f"{code}: {message}"
        limit = task.max_retries
        if limit is None:
            limit = self.methods[task.method].max_retries
        if task.retries < limit:
            task.site = None
            if self.journal is not None:
                self.journal.requeued(task, current.reason, now)
            placed, ended = self.scheduler.requeue(task, now)
            self._dispatch(placed)
            for expired in ended:
                self._end(expired)
            return
        tries = len(task.attempts)
        task.fail("system", code, f"{message} (after {tries} attempt{'s' * (tries > 1)})")
        self._end(task)

    def _fail_over(self, site: str, detail: str, now: float) -> None:
        """Re-place every task in flight on a site that went offline."""
        lost = [t for t in self._in_flight.values() if t.attempts[-1].site == site]
        for task in lost:
            del self._in_flight[task.task_id]
            self.counts[site].failed += 1
            self._left_site(task, site)
            self._retry_or_fail(task, "SiteOffline", f"site {site!r}: {detail}", now)
        if lost:
            logger.warning("site %r offline (%s): %d tasks placed again", site, detail, len(lost))

    def _shut_out(self, task: Result) -> None:
        task.fail("shutdown", "TaskServerStopped", "the task server stopped first")
        self._end(task)

    def _end(self, task: Result) -> None:
        """The task has its final outcome: hand it to the thinker once the events are applied."""
        self._live.pop(task.task_id, None)
        self._streams.pop(task.task_id, None)
        if self.journal is not None:
            self.journal.ended(task, clock.now())
        self._effects.append((self._put, task))

    def _write_submitted(self, task: Result) -> None:
        """Journal a new task; one whose inputs cannot be written down is refused."""
        assert self.journal is not None
        keys = self.data.input_keys(task.task_id) if self.data is not None else []
        try:
            self.journal.submitted(task, keys)
        except UnjournaledInputs as exc:
            if task.failure is None:
                task.fail("rejected", "UnjournaledInputs", str(exc))
            self.journal.submitted(task.model_copy(update={"args": (), "kwargs": {}}), keys)

    # Effects: run by `_drain` after the events that queued them.

    def _send(self, task: Result, site: str, attempt: int) -> None:
        on_done = functools.partial(self.finished, task, attempt)
        try:
            self.backends[site].submit(task, on_done)
        except Exception as exc:  # a backend bug must not lose the task
            logger.exception("site %r failed to take task %s", site, task.task_id)
            on_done(SiteError(site, type(exc).__name__, f"the site refused the task: {exc}"))

    def _put(self, task: Result) -> None:
        if self.data is not None:
            self.data.release_inputs(task)
        if not task.keep_inputs:
            task.args, task.kwargs = (), {}
        self._deliver(task)


def _record(task: Result, report: WorkerReport) -> None:
    stamps = task.timestamps
    stamps.compute_started = report.compute_started
    stamps.compute_ended = report.compute_ended
    task.worker = WorkerInfo(
        hostname=report.hostname, pid=report.pid, accelerator=report.accelerator
    )
    if report.resolve_inputs_s is not None:
        task.data.resolve_inputs_s = report.resolve_inputs_s
    if report.result_bytes is not None:
        task.data.proxy_result_s = report.proxy_result_s
        task.data.result_bytes = report.result_bytes
    task.intermediates = report.intermediates or 0
    if report.shell is not None:
        task.shell = report.shell
    if report.warm is not None:
        uses, held = report.warm
        task.warm = WarmRecord([WarmUse(*use) for use in uses], list(held))
    task.success = report.success
    if task.success:
        task.value = report.value
    else:
        task.failure = FailureInfo(
            kind="timeout" if report.exception_type == WALLTIME_EXCEEDED else "user",
            exception_type=report.exception_type or "Exception",
            message=report.message or "",
            traceback=report.traceback,
        )


def _stopped_at_walltime(task: Result, failure: SiteError, now: float) -> bool:
    """Whether ``failure`` is the worker of ``task`` exiting past its walltime (the watchdog)."""
    if task.walltime is None or not task.attempts or failure.kind != "system":
        return False
    lost = "WorkerLost" in failure.code or "WorkerLost" in failure.message
    return lost and now - task.attempts[-1].dispatched >= task.walltime
