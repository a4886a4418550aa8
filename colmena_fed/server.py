"""TaskServer: takes requests from the queues, places them on sites, returns results by topic."""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from colmena_fed import clock
from colmena_fed.backends import Outcome, SiteBackend, SiteStatus, make_backend
from colmena_fed.backends.globus import ServiceClients
from colmena_fed.backends.sim import SimWorld
from colmena_fed.data import DataPlane
from colmena_fed.errors import SiteError
from colmena_fed.methods import Method, MethodLike, as_methods
from colmena_fed.models import Attempt, FailureInfo, Result, WorkerInfo
from colmena_fed.policies import Observations, make_policy
from colmena_fed.queues import TaskQueues
from colmena_fed.scheduler import Placement, PlacementError, Scheduler, Step
from colmena_fed.sites import SitesConfig
from colmena_fed.worker import WorkerReport, pack_method

logger = logging.getLogger(__name__)

#: Seconds between status polls of a local site whose engine has no workers yet.
STARTING_POLL_S = 0.25

CapacityCallback = Callable[[int], None]
#: A task about to be sent: the task, its site, and which attempt this is (1 for the first).
_Dispatch = tuple[Result, str, int]


@dataclass
class SiteCounts:
    """What the task server has seen of one site, for displays and reports."""

    running: int = 0
    done: int = 0
    failed: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    status: SiteStatus = field(default_factory=lambda: SiteStatus(online=False, detail="starting"))


class TaskServer:
    """Runs the methods a thinker asks for on the sites of a federation.

    Use it as a context manager: entering starts every site and the status poller; leaving
    stops them, ends any unfinished task as a failed result (reason ``shutdown``), and stops
    every engine. A task a site fails (worker lost, site offline) is placed again, up to its
    ``max_retries``; a task whose method raised is reported, never retried.
    """

    def __init__(
        self,
        queues: TaskQueues,
        sites: SitesConfig,
        methods: Iterable[MethodLike],
        run_dir: str | Path | None = None,
    ) -> None:
        """Prepare a server; nothing starts until `start` (or ``with server:``).

        Args:
            queues: The queues the thinker sends on and reads from.
            sites: The federation, usually ``SitesConfig.from_yaml(...)``.
            methods: Task functions, bare (needing a 'cpu' slot) or as `Method`.
            run_dir: Where engines keep their logs; a new temporary directory if None.
        """
        self.queues = queues
        self.config = sites
        self.methods: dict[str, Method] = as_methods(methods)
        #: The virtual world of a simulated federation (all sites `sim`); None otherwise.
        self.world = SimWorld(sites.sim) if sites.simulated else None
        # Globus Compute clients shared by all globus sites, made when the first one starts.
        clients = ServiceClients(sites.globus)
        self.backends: dict[str, SiteBackend] = {
            name: make_backend(name, site, self.world, clients)
            for name, site in sites.sites.items()
        }
        self.run_dir = Path(run_dir) if run_dir else None
        settings = sites.scheduler
        reach = sites.reach()
        observations = Observations()
        self.scheduler = Scheduler(
            {name: site.resources for name, site in sites.sites.items()},
            make_policy(settings.policy, observations, settings.static),
            prefetch={name: site.prefetch for name, site in sites.sites.items()},
            observations=observations,
            reach=reach,
            locality=sites.data.locality,
        )
        #: The stores that carry large inputs and results; None without a 'data:' section.
        self.data = DataPlane(sites.data, reach) if sites.data.stores else None
        sites.check_methods({name: method.slot for name, method in self.methods.items()})
        self.counts = {name: SiteCounts() for name in self.backends}
        self._lock = threading.Lock()
        self._in_flight: dict[str, Result] = {}
        self._closed = True
        self._housekeeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started: list[str] = []
        self._watchers: dict[str, list[CapacityCallback]] = {}
        self._capacity: dict[str, int] = {}  # as last told to the watchers
        self._notifying = threading.Lock()  # one thread tells the watchers at a time, in order

    def __enter__(self) -> TaskServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pending_count(self) -> int:
        """Tasks waiting on the thinker side for a free slot."""
        return self.scheduler.pending_count

    def snapshot(self) -> tuple[dict[str, SiteCounts], dict[str, int]]:
        """A consistent copy of each site's counts and of the pending tasks per slot kind."""
        with self._lock:
            sites = {
                name: replace(counts, by_method=dict(counts.by_method))
                for name, counts in self.counts.items()
            }
            return sites, self.scheduler.pending_by_slot()

    def live_capacity(self, slot: str) -> int:
        """Tasks of kind ``slot`` the federation can hold now, over its online sites."""
        with self._lock:
            return self.scheduler.live_capacity(slot)

    def watch_capacity(self, slot: str, callback: CapacityCallback) -> None:
        """Call ``callback(slots)`` now and whenever the live capacity for ``slot`` changes.

        Later calls come from the thread that saw the change (a status poll), in order, never
        under the task server's lock; an exception a callback raises is logged.
        """
        with self._notifying:
            with self._lock:
                self._watchers.setdefault(slot, []).append(callback)
                slots = self.scheduler.live_capacity(slot)
            self._capacity.setdefault(slot, slots)
            _call_watcher(callback, slot, slots)

    def start(self) -> None:
        """Start every site, then accept requests; a site that fails to start stops the rest."""
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="colmena-fed-"))
        if self.world is not None:
            self.world.begin(self._expire)
        try:
            if self.data is not None:
                self.data.start()
            for name, backend in self.backends.items():
                self._started.append(name)  # before start: a half-started site is stopped too
                backend.start(self.run_dir / name, functools.partial(self._on_status, name))
                results = self.data.result_policy(name) if self.data is not None else None
                for method in self.methods.values():
                    backend.register(method, pack_method(method.function, method.name, results))
        except BaseException:
            self._shutdown_backends()
            if self.data is not None:
                self.data.close()
            raise
        self._closed = False
        for name, backend in self.backends.items():
            self._on_status(name, backend.status())
        self._stopping.clear()
        self._housekeeper = threading.Thread(
            target=self._housekeep, name="colmena-fed-status", daemon=True
        )
        self._housekeeper.start()
        self.queues.connect(
            self._on_request, None if self.data is None else self.data.resolve_result
        )

    def stop(self) -> None:
        """Stop accepting requests, fail what did not finish, and stop every site."""
        self.queues.disconnect()
        self._stopping.set()
        if self._housekeeper is not None:
            self._housekeeper.join()
            self._housekeeper = None
        with self._lock:
            self._closed = True
            unfinished = [*self.scheduler.drain(), *self._in_flight.values()]
            self._in_flight.clear()
        self._shutdown_backends()
        if self.world is not None:
            self.world.end()
        for task in unfinished:
            self._shut_out(task)
        if self.data is not None:
            self.data.close()

    def _shut_out(self, task: Result) -> None:
        task.fail("shutdown", "TaskServerStopped", "the task server stopped first")
        self._finish(task)

    def _shutdown_backends(self) -> None:
        for name in self._started:
            try:
                self.backends[name].shutdown()
            except Exception:
                logger.exception("site %r did not shut down cleanly", name)
        self._started = []

    def _housekeep(self) -> None:
        """Poll each polled site every status period, and expire tasks at their deadlines.

        A local site whose engine has no workers yet is polled every `STARTING_POLL_S`, so its
        first tasks go out as soon as its workers connect. In a simulated federation the
        world expires tasks itself, as virtual time moves.
        """
        period = self.config.scheduler.status_period
        polled = [name for name, backend in self.backends.items() if backend.polled]
        quick = {name for name in polled if self.config.sites[name].backend == "local"}
        due = dict.fromkeys(polled, time.monotonic() + period)
        expiring = self.world is None
        while True:
            wait = min(due.values(), default=time.monotonic() + period) - time.monotonic()
            if expiring:
                with self._lock:
                    deadline = self.scheduler.next_deadline()
                if deadline is not None:
                    wait = min(wait, deadline - clock.now())
            if self._stopping.wait(max(wait, 0.0)):
                return
            try:
                if expiring:
                    self._expire()
                for name in polled:
                    if time.monotonic() >= due[name]:
                        self._on_status(name, self.backends[name].status())
                        state = self.scheduler.sites[name]
                        starting = name in quick and state.online and state.workers == 0
                        due[name] = time.monotonic() + (
                            min(period, STARTING_POLL_S) if starting else period
                        )
            except Exception:  # this thread must outlive any one bad poll
                logger.exception("status poll failed; polling again next period")
                due = {name: max(when, time.monotonic() + period) for name, when in due.items()}

    def _expire(self) -> None:
        with self._lock:
            expired = self.scheduler.expire(clock.now())
        for task in expired:
            self._finish(task)

    def _on_request(self, task: Result) -> None:
        """A new task from the thinker (runs in the thread that called send_inputs)."""
        method = self.methods.get(task.method)
        if method is None:
            self._reject(
                task,
                f"unknown method {task.method!r} for task {task.task_id}; "
                f"methods: {', '.join(self.methods) or 'none'}",
            )
            return
        task.slot = task.resources.slot or method.slot
        if self.data is not None:
            try:
                self.data.proxy_inputs(task)
            except Exception as exc:
                self._reject(
                    task, f"cannot put the inputs of task {task.task_id} in a store: {exc}"
                )
                return
        try:
            self.scheduler.check(task)
        except PlacementError as exc:
            self._reject(task, str(exc))
            return
        with self._lock:
            closed = self._closed
            if not closed:
                placed, ended = self.scheduler.submit(task)
                dispatches = self._mark_dispatched(placed)
        if closed:
            self._shut_out(task)
            return
        self._send(dispatches)
        for old in ended:
            self._finish(old)

    def _mark_dispatched(self, placements: list[Placement]) -> list[_Dispatch]:
        """Book-keeping for placements about to be sent; the caller holds the lock."""
        if not placements:
            return []
        now = clock.now()
        dispatches = []
        for placement in placements:
            task, site = placement.task, placement.site
            task.endpoint = self.backends[site].endpoint_id
            task.timestamps.dispatched = now
            task.attempts.append(Attempt(site=site, dispatched=now))
            self._in_flight[task.task_id] = task
            self.counts[site].running += 1
            dispatches.append((task, site, len(task.attempts)))
        return dispatches

    def _send(self, dispatches: list[_Dispatch]) -> None:
        """Hand placed tasks to their sites (outside the lock: a backend may call back at once)."""
        for task, site, attempt in dispatches:
            on_done = functools.partial(self._on_done, task, attempt)
            try:
                backend = self.backends[site]
                backend.submit(task, on_done)
            except Exception as exc:  # a backend bug must not lose the task
                logger.exception("site %r failed to take task %s", site, task.task_id)
                on_done(SiteError(site, type(exc).__name__, f"the site refused the task: {exc}"))

    def _on_done(self, task: Result, attempt: int, outcome: Outcome) -> None:
        """A site finished one attempt of a task (runs in the backend's result thread)."""
        received = clock.now()
        with self._lock:
            if self._in_flight.get(task.task_id) is not task or len(task.attempts) != attempt:
                logger.info("late outcome of task %s (attempt %d) ignored", task.task_id, attempt)
                if self.data is not None and not isinstance(outcome, SiteError):
                    self.data.discard(outcome.value)
                return
            del self._in_flight[task.task_id]
            task.timestamps.received = received
            site, slot = task.attempts[-1].site, task.slot or ""
            counts = self.counts[site]
            counts.running -= 1
            failed_here = isinstance(outcome, SiteError) and outcome.kind == "system"
            if failed_here and self.backends[site].polled:  # its next report lifts it
                self.scheduler.suspend(site)  # before its slot frees: nothing more goes there
            placed = self.scheduler.release(site, slot)
            ended: list[Result] = [task]
            if isinstance(outcome, SiteError):
                counts.failed += 1
                task.attempts[-1].ended = received
                if outcome.kind == "system":
                    step = self._retry_or_fail(task, outcome.code, outcome.message, received)
                    placed.extend(step.placed)
                    ended = step.ended
                else:
                    task.fail(outcome.kind, outcome.code, outcome.message)
            else:
                _record(task, outcome)
                if self.data is not None:
                    self.data.note_result(task)
                counts.done += task.success is True
                counts.failed += task.success is False
                counts.by_method[task.method] = counts.by_method.get(task.method, 0) + 1
                task.attempts[-1].ended = received
                self.scheduler.observe(task)
            dispatches = self._mark_dispatched(placed)
        self._send(dispatches)
        for done in ended:
            self._finish(done)

    def _retry_or_fail(self, task: Result, code: str, message: str, now: float) -> Step:
        """Close the task's current attempt; place it again if it has retries left."""
        current = task.attempts[-1]
        current.ended, current.reason = now, f"{code}: {message}"
        limit = task.max_retries
        if limit is None:
            limit = self.methods[task.method].max_retries
        if task.retries < limit:
            task.site = None
            return self.scheduler.requeue(task, now)
        tries = len(task.attempts)
        task.fail("system", code, f"{message} (after {tries} attempt{'s' * (tries > 1)})")
        return Step([], [task])

    def _on_status(self, site: str, status: SiteStatus) -> None:
        """A site's new live state: update its slots, and fail over its tasks if it went down."""
        now = clock.now()
        online = status.online and now - status.updated <= self.config.scheduler.staleness
        if status.online and not online:
            status = replace(status, online=False, detail="status is stale")
        ended: list[Result] = []
        with self._lock:
            self.counts[site].status = status
            was_online = self.scheduler.sites[site].online
            placed = self.scheduler.set_status(site, online, status.workers)
            if was_online and not online:
                step = self._fail_over(site, status.detail or "site offline", now)
                placed.extend(step.placed)
                ended = step.ended
            dispatches = self._mark_dispatched(placed)
        self._send(dispatches)
        for task in ended:
            self._finish(task)
        if self._watchers:
            self._tell_watchers()

    def _fail_over(self, site: str, detail: str, now: float) -> Step:
        """Re-place every task in flight on a site that went offline; the caller holds the lock."""
        lost = [t for t in self._in_flight.values() if t.attempts[-1].site == site]
        placed: list[Placement] = []
        ended: list[Result] = []
        for task in lost:
            del self._in_flight[task.task_id]
            self.counts[site].running -= 1
            self.counts[site].failed += 1
            placed.extend(self.scheduler.release(site, task.slot or ""))
            step = self._retry_or_fail(task, "SiteOffline", f"site {site!r}: {detail}", now)
            placed.extend(step.placed)
            ended.extend(step.ended)
        if lost:
            logger.warning("site %r offline (%s): %d tasks placed again", site, detail, len(lost))
        return Step(placed, ended)

    def _tell_watchers(self) -> None:
        """Call the watchers of each slot kind whose live capacity changed since they were told."""
        with self._notifying:
            with self._lock:
                now = {slot: self.scheduler.live_capacity(slot) for slot in self._watchers}
                watchers = {slot: list(callbacks) for slot, callbacks in self._watchers.items()}
            for slot, slots in now.items():
                if slots != self._capacity.get(slot):
                    self._capacity[slot] = slots
                    for callback in watchers[slot]:
                        _call_watcher(callback, slot, slots)

    def _reject(self, task: Result, message: str) -> None:
        task.fail("rejected", "PlacementError", message)
        self._finish(task)

    def _finish(self, task: Result) -> None:
        if self.data is not None:
            self.data.evict_inputs(task)
        if not task.keep_inputs:
            task.args, task.kwargs = (), {}
        self.queues.put_result(task)


def _call_watcher(callback: CapacityCallback, slot: str, slots: int) -> None:
    try:
        callback(slots)
    except Exception:
        logger.exception("a watcher of the %r capacity failed", slot)


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
    task.success = report.success
    if task.success:
        task.value = report.value
    else:
        task.failure = FailureInfo(
            kind="user",
            exception_type=report.exception_type or "Exception",
            message=report.message or "",
            traceback=report.traceback,
        )
