"""The ``sim`` backend: sites modelled in virtual time, under the real task server and scheduler.

A `SimWorld` holds the virtual clock and the events of every simulated site of a federation;
each `SimBackend` is one site: workers per slot kind, a speed factor, a start-up delay, a round
trip latency and outages. Tasks do not run: each takes its work divided by the site's speed.
A task's work is drawn once from its method's load model (a retry keeps it), or fixed
beforehand with `SimWorld.set_work` so that runs under different policies get the same tasks.
Each worker keeps what tasks load warm (`colmena_fed.warm`): a task sent with a warm key that
its worker does not hold first spends its method's modelled load time (``sim: loads:``), and
the worker then holds the key, up to its site's ``warm.max_items``. An arriving task takes a
random idle worker, as an engine's worker pool would.
A site that goes down loses what it held, as a real one would, and says so through its status.

Drive it from the thread that owns the campaign: send the tasks, then `SimWorld.run`, which
advances virtual time event by event until nothing is left to happen.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from colmena_fed import clock
from colmena_fed.backends import OutcomeCallback, SiteStatus, StatusCallback
from colmena_fed.methods import Method
from colmena_fed.models import Result
from colmena_fed.sites import LoadModel, SimConfig, SimSiteConfig
from colmena_fed.stream import CHANNEL_UNREACHABLE, ChannelUnreachable, StreamTarget, TaskStream
from colmena_fed.worker import WALLTIME_EXCEEDED, WorkerReport, walltime_message
from colmena_fed.worker_cache import CacheBounds

#: Run time of a method that has no load model, in seconds at speed 1.0.
DEFAULT_WORK_S = 1.0


class SimWorld:
    """Virtual time and the event queue shared by the simulated sites of one federation."""

    def __init__(self, config: SimConfig) -> None:
        """A world whose random run times come from ``config.seed``."""
        self.config = config
        self.elapsed = 0.0
        self._epoch = time.time()
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._work: dict[str, float] = {}
        self._before_event: Callable[[], None] = lambda: None
        self._settle: Callable[[], None] = lambda: None
        self._deadline: Callable[[], float | None] = lambda: None

    def now(self) -> float:
        """Virtual time, as seconds since the epoch."""
        return self._epoch + self.elapsed

    def begin(
        self,
        before_event: Callable[[], None],
        settle: Callable[[], None] = lambda: None,
        deadline: Callable[[], float | None] = lambda: None,
    ) -> None:
        """Install the virtual clock; ``before_event`` runs each time virtual time moves.

        ``settle`` returns once the task server has applied what was posted so far (another
        thread, such as a channel's reader, may be applying this thread's events, and their
        effects add events here). ``deadline`` is the next time (on the clock) the task server
        acts on its own, such as a ``max_wait`` expiring: time stops there too.
        """
        self._epoch = time.time()
        self.elapsed = 0.0
        self._before_event = before_event
        self._settle = settle
        self._deadline = deadline
        clock.install(self.now)

    def end(self) -> None:
        """Give the wall clock back."""
        clock.install(None)

    def at(self, elapsed: float, action: Callable[[], None]) -> None:
        """Run ``action`` when virtual time reaches ``elapsed`` seconds from the start."""
        with self._lock:
            heapq.heappush(self._events, (max(elapsed, self.elapsed), next(self._order), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` virtual seconds from now."""
        self.at(self.elapsed + delay, action)

    def run(self, until: float | None = None) -> float:
        """Process events in time order until none is left (or ``until``); returns the time.

        Time also stops at the task server's own deadlines between events, so that a task
        held until then moves on when it is due, not at whatever event comes next.
        """
        while True:
            wake = self._wake_at(until)
            action: Callable[[], None] | None = None
            with self._lock:
                if wake is not None:
                    when = wake
                elif self._events and (until is None or self._events[0][0] <= until):
                    when, _, action = heapq.heappop(self._events)
                else:
                    when = self.elapsed if until is None else max(until, self.elapsed)
                moved = when > self.elapsed
                self.elapsed = when
            if moved:
                self._before_event()
            if action is not None:
                action()
                continue
            self._settle()
            if wake is not None:
                continue
            with self._lock:
                due = self._events and (until is None or self._events[0][0] <= until)
            if not due:
                return self.elapsed

    def _wake_at(self, until: float | None) -> float | None:
        """The task server's next deadline, if it comes later than now and before any event.

        Asked only when time is about to move: events due now need no deadline.
        """
        with self._lock:
            first = self._events[0][0] if self._events else math.inf
        if first <= self.elapsed:
            return None
        deadline = self._deadline()
        if deadline is None:
            return None
        at = deadline - self._epoch
        if at <= self.elapsed or at >= first or (until is not None and at > until):
            return None
        return at

    def set_work(self, task_id: str, seconds: float) -> None:
        """Fix how long task ``task_id`` runs at speed 1.0 (before it reaches a site)."""
        with self._lock:
            self._work[task_id] = seconds

    def work_of(self, task_id: str, method: str) -> float:
        """The task's run time at speed 1.0: as set, else drawn from its method's load model."""
        with self._lock:
            work = self._work.get(task_id)
            if work is None:
                model = self.config.methods.get(method)
                work = DEFAULT_WORK_S if model is None else _draw(model, self._rng)
                self._work[task_id] = work
            return work


def _draw(model: LoadModel, rng: random.Random) -> float:
    if model.distribution == "constant":
        return model.mean
    if model.distribution == "exponential":
        return rng.expovariate(1 / model.mean)
    if model.distribution == "uniform":
        half = model.sigma * model.mean
        return rng.uniform(max(model.mean - half, 0.0), model.mean + half)
    mu = math.log(model.mean) - model.sigma**2 / 2
    return rng.lognormvariate(mu, model.sigma)


class _Job:
    """One task at the site: what it needs, and where its outcome goes."""

    __slots__ = (
        "attempt",
        "load",
        "method",
        "on_done",
        "slot",
        "stream",
        "task_id",
        "walltime",
        "warm",
        "warm_key",
        "work",
        "worker",
    )

    def __init__(self, task: Result, slot: str, on_done: OutcomeCallback) -> None:
        self.task_id, self.method, self.slot, self.on_done = (
            task.task_id,
            task.method,
            slot,
            on_done,
        )
        self.attempt = len(task.attempts)
        self.walltime = task.walltime
        self.warm_key = task.warm_key
        self.work = 0.0
        #: Seconds it loads its warm key first (0: warm, or none), once it has a worker.
        self.load = 0.0
        self.worker = 0
        self.warm: tuple[tuple[tuple[str, bool, float], ...], tuple[str, ...]] | None = None
        #: Its intermediate results, once it runs (a streaming method), and what failed them.
        self.stream: tuple[TaskStream, list[str]] | None = None

    @property
    def runs(self) -> float:
        """Seconds it holds its worker: its load and work, or its walltime if that is shorter."""
        busy = self.load + self.work
        return busy if self.walltime is None else min(busy, self.walltime)


class SimBackend:
    """One simulated site; it reports every change of state, so it is not polled."""

    polled = False
    outlives_thinker = False

    def __init__(self, name: str, config: SimSiteConfig, world: SimWorld) -> None:
        """Model the site ``name`` as ``config`` describes, in ``world``."""
        self.name = name
        self.config = config
        self.world = world
        self.endpoint_id = str(uuid.uuid4())
        self._slots: dict[str, str] = {}
        self._streams: dict[str, StreamTarget] = {}  # of the streaming methods
        self._idle: dict[str, list[int]] = {kind: [] for kind in config.workers}
        #: What each worker keeps warm, least recently used first.
        self._caches: dict[int, OrderedDict[str, None]] = {}
        self._max_items = 2
        self._rng = random.Random(f"{world.config.seed}-{name}")
        self._queued: dict[str, deque[_Job]] = {kind: deque() for kind in config.workers}
        self._running: set[_Job] = set()  # by job: a retry may arrive while its lost twin runs
        self._up = False
        self._online = True
        self._on_status: StatusCallback = lambda status: None
        self._lock = threading.Lock()

    def start(self, run_dir: Path, on_status: StatusCallback) -> None:
        """Schedule the site's start-up and outages; report its state through ``on_status``."""
        self._on_status = on_status
        if self.config.startup > 0:
            self.world.at(self.config.startup, self._workers_arrive)
        else:
            self._up, self._idle = True, self._all_workers()
        for begin, end in self.config.outages:
            self.world.at(begin, lambda: self._set_online(False))
            self.world.at(end, lambda: self._set_online(True))

    def register(self, method: Method, function: Callable[..., Any]) -> None:
        """Note the slot kind ``method`` runs on (the function itself never runs).

        A streaming method's packed function names the channel its modelled intermediate
        results go to (they travel through it for real).
        """
        self._slots[method.name] = method.slot
        bound = getattr(function, "args", ())
        target = next((arg for arg in bound if isinstance(arg, StreamTarget)), None)
        if target is not None:
            self._streams[method.name] = target
        bounds = next((arg for arg in bound if isinstance(arg, CacheBounds)), None)
        if bounds is not None:
            self._max_items = bounds.max_items

    def submit(self, task: Result, on_done: OutcomeCallback) -> None:
        """The task reaches the site after half the round trip, then waits for a worker."""
        slot = self._slots.get(task.method, "")
        if slot not in self.config.workers:
            slot = next(iter(self.config.workers))
        job = _Job(task, slot, on_done)
        self.world.after(self.config.latency / 2, lambda: self._arrive(job))

    def status(self) -> SiteStatus:
        """Workers and queues as they stand now."""
        with self._lock:
            if not self._online:
                return SiteStatus(online=False, detail="simulated outage")
            workers = sum(self.config.workers.values()) if self._up else 0
            return SiteStatus(
                online=True,
                workers=workers,
                idle_workers=sum(len(idle) for idle in self._idle.values()),
                pending_tasks=sum(len(q) for q in self._queued.values()),
                outstanding_tasks=len(self._running) + sum(len(q) for q in self._queued.values()),
                managers=1 if self._up else 0,
            )

    def shutdown(self) -> None:
        """Forget every task the site holds."""
        with self._lock:
            self._running.clear()
            for queue in self._queued.values():
                queue.clear()

    def _all_workers(self) -> dict[str, list[int]]:
        """Every worker idle, numbered across the slot kinds."""
        numbers = itertools.count()
        return {
            kind: [next(numbers) for _ in range(count)]
            for kind, count in self.config.workers.items()
        }

    def _workers_arrive(self) -> None:
        with self._lock:
            self._up = True
            self._idle = self._all_workers()
        self._start_queued()
        self._on_status(self.status())

    def _set_online(self, online: bool) -> None:
        with self._lock:
            self._online = online
            if not online:  # everything the site held is lost with it
                self._running.clear()
                for queue in self._queued.values():
                    queue.clear()
                self._idle = self._all_workers() if self._up else self._idle
                self._caches.clear()  # its workers went with it
        self._on_status(self.status())

    def _arrive(self, job: _Job) -> None:
        job.work = self.world.work_of(job.task_id, job.method) / self.config.speed
        with self._lock:
            if not self._online:
                return
            self._queued[job.slot].append(job)
        self._start_queued()

    def _start_queued(self) -> None:
        with self._lock:
            for slot, queue in self._queued.items():
                idle = self._idle[slot]
                while queue and idle:
                    job = queue.popleft()
                    job.worker = idle.pop(self._rng.randrange(len(idle)))
                    self._use_cache(job)
                    self._running.add(job)
                    finish = functools.partial(self._finish, job, self.world.elapsed)
                    self.world.after(job.runs, finish)
                    self._plan_stream(job)

    def _use_cache(self, job: _Job) -> None:
        """Load the job's warm key on its worker unless the worker holds it; note what it holds."""
        cache = self._caches.setdefault(job.worker, OrderedDict())
        key = job.warm_key
        if key is not None:
            hit = key in cache
            model = self.world.config.loads.get(job.method)
            job.load = 0.0 if hit or model is None else _draw(model, self._rng)
            cache[key] = None
            cache.move_to_end(key)
            while len(cache) > self._max_items:
                cache.popitem(last=False)
            job.warm = ((key, hit, job.load),), tuple(cache)
        elif cache:
            job.warm = (), tuple(cache)

    def _plan_stream(self, job: _Job) -> None:
        """Send a streaming job's modelled intermediate results at even intervals of its run."""
        target = self._streams.get(job.method)
        count = self.world.config.intermediates.get(job.method, 0)
        if target is None or not count:
            return
        job.stream = (TaskStream(target, job.task_id, job.attempt), [])
        for i in range(count):
            when = job.load + job.work * (i + 1) / (count + 1)
            if when < job.runs:
                self.world.after(when, functools.partial(self._send, job))

    def _send(self, job: _Job) -> None:
        if job not in self._running or job.stream is None or job.stream[1]:
            return  # lost in an outage, or its channel failed already
        stream, failed = job.stream
        try:
            stream.send(stream.sent)
        except ChannelUnreachable as exc:
            failed.append(str(exc))

    def _finish(self, job: _Job, started: float) -> None:
        with self._lock:
            if job not in self._running:
                return  # lost in an outage
            self._running.remove(job)
            self._idle[job.slot].append(job.worker)
        epoch = self.world.now() - self.world.elapsed
        finished = job.runs == job.load + job.work
        failure = (
            (None, None)
            if finished
            else (WALLTIME_EXCEEDED, walltime_message(job.method, job.runs))
        )
        sent = None
        if job.stream is not None:
            stream, failed = job.stream
            try:
                stream.finish()
            except ChannelUnreachable as exc:
                failed.append(str(exc))
            sent = stream.sent
            if failed:
                finished, failure = False, (CHANNEL_UNREACHABLE, failed[0])
        report = WorkerReport(
            finished,
            None,
            failure[0],
            failure[1],
            None,
            epoch + started,
            epoch + started + job.runs,
            self.name,
            job.worker,
            None,
            intermediates=sent,
            warm=job.warm,
        )
        self.world.after(self.config.latency / 2, lambda: job.on_done(report))
        self._start_queued()
