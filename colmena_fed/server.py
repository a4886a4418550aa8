"""TaskServer: takes requests from the queues, places them on sites, returns results by topic."""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from colmena_fed.backends import Outcome, SiteBackend, SiteStatus, make_backend
from colmena_fed.errors import SiteError
from colmena_fed.methods import Method, MethodLike, as_methods
from colmena_fed.models import FailureInfo, FailureKind, Result, WorkerInfo
from colmena_fed.queues import TaskQueues
from colmena_fed.scheduler import Placement, PlacementError, Scheduler
from colmena_fed.sites import SitesConfig
from colmena_fed.worker import WorkerReport, run_method

logger = logging.getLogger(__name__)


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

    Use it as a context manager: entering starts every site, the status poller and the
    placement loop; leaving stops them, ends any unfinished task as a failed result (reason
    ``shutdown``), and stops every engine.
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
        self.backends: dict[str, SiteBackend] = {
            name: make_backend(name, site) for name, site in sites.sites.items()
        }
        self.run_dir = Path(run_dir) if run_dir else None
        self.scheduler = Scheduler({n: s.resources for n, s in sites.sites.items()})
        self.counts = {name: SiteCounts() for name in self.backends}
        self._lock = threading.Lock()
        self._in_flight: dict[str, Result] = {}
        self._closed = True
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started: list[str] = []

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

    def start(self) -> None:
        """Start every site, then accept requests; a site that fails to start stops the rest."""
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="colmena-fed-"))
        try:
            for name, backend in self.backends.items():
                self._started.append(name)  # before start: a half-started site is stopped too
                backend.start(self.run_dir / name)
                for method in self.methods.values():
                    backend.register(method.name, _wrap(method))
        except BaseException:
            self._shutdown_backends()
            raise
        self._closed = False
        for name, backend in self.backends.items():
            self._on_status(name, backend.status())
        self._stopping.clear()
        self._poller = threading.Thread(
            target=self._poll_status, name="colmena-fed-status", daemon=True
        )
        self._poller.start()
        self.queues.connect(self._on_request)

    def stop(self) -> None:
        """Stop accepting requests, fail what did not finish, and stop every site."""
        self.queues.disconnect()
        self._stopping.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        with self._lock:
            self._closed = True
            unfinished = [*self.scheduler.drain(), *self._in_flight.values()]
            self._in_flight.clear()
        self._shutdown_backends()
        for task in unfinished:
            self._shut_out(task)

    def _shut_out(self, task: Result) -> None:
        self._fail(task, "shutdown", "TaskServerStopped", "the task server stopped first")
        self._finish(task)

    def _shutdown_backends(self) -> None:
        for name in self._started:
            try:
                self.backends[name].shutdown()
            except Exception:
                logger.exception("site %r did not shut down cleanly", name)
        self._started = []

    def _poll_status(self) -> None:
        period = self.config.scheduler.status_period
        while not self._stopping.wait(period):
            for name, backend in self.backends.items():
                self._on_status(name, backend.status())

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
        try:
            self.scheduler.check(task)
        except PlacementError as exc:
            self._reject(task, str(exc))
            return
        with self._lock:
            closed = self._closed
            placements = [] if closed else self._mark_dispatched(self.scheduler.submit(task))
        if closed:
            self._shut_out(task)
        self._send(placements)

    def _mark_dispatched(self, placements: Placement | list[Placement] | None) -> list[Placement]:
        """Book-keeping for placements about to be sent; the caller holds the lock."""
        if placements is None:
            return []
        if isinstance(placements, Placement):
            placements = [placements]
        now = time.time()
        for placement in placements:
            task = placement.task
            task.endpoint = self.backends[placement.site].endpoint_id
            task.timestamps.dispatched = now
            self._in_flight[task.task_id] = task
            self.counts[placement.site].running += 1
        return placements

    def _send(self, placements: list[Placement]) -> None:
        """Hand placed tasks to their sites (outside the lock: a backend may call back at once)."""
        for placement in placements:
            task = placement.task
            self.backends[placement.site].submit(
                task.task_id,
                task.method,
                task.args,
                task.kwargs,
                functools.partial(self._on_done, task),
            )

    def _on_done(self, task: Result, outcome: Outcome) -> None:
        """A site finished a task (runs in the backend's result thread)."""
        received = time.time()
        with self._lock:
            if self._in_flight.pop(task.task_id, None) is None:
                return
            task.timestamps.received = received
            site = task.site
            assert site is not None
            assert task.slot is not None
            counts = self.counts[site]
            counts.running -= 1
            if isinstance(outcome, SiteError):
                self._fail(task, outcome.kind, outcome.code, outcome.message)
            else:
                self._record(task, outcome)
            if task.success:
                counts.done += 1
            else:
                counts.failed += 1
            counts.by_method[task.method] = counts.by_method.get(task.method, 0) + 1
            placements = self._mark_dispatched(self.scheduler.release(site, task.slot))
        self._send(placements)
        self._finish(task)

    def _on_status(self, site: str, status: SiteStatus) -> None:
        with self._lock:
            self.counts[site].status = status
            placements = self._mark_dispatched(self.scheduler.set_online(site, status.online))
        self._send(placements)

    def _record(self, task: Result, report: WorkerReport) -> None:
        stamps = task.timestamps
        stamps.compute_started = report.compute_started
        stamps.compute_ended = report.compute_ended
        task.worker = WorkerInfo(
            hostname=report.hostname, pid=report.pid, accelerator=report.accelerator
        )
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

    def _fail(self, task: Result, kind: FailureKind, exception_type: str, message: str) -> None:
        task.success = False
        task.failure = FailureInfo(kind=kind, exception_type=exception_type, message=message)

    def _reject(self, task: Result, message: str) -> None:
        self._fail(task, "rejected", "PlacementError", message)
        self._finish(task)

    def _finish(self, task: Result) -> None:
        if not task.keep_inputs:
            task.args, task.kwargs = (), {}
        self.queues.put_result(task)


def _wrap(method: Method) -> functools.partial[tuple[Any, ...]]:
    """The function a site runs for ``method``: `run_method` bound to it, under its name."""
    wrapper = functools.partial(run_method, method.function)
    wrapper.__name__ = method.name  # type: ignore[attr-defined]
    return wrapper
