"""TaskServer: takes requests from the queues, places them on sites, returns results by topic.

The data flow, and who does what:

1. ``send_inputs`` hands a new task to `TaskServer._request`, in the thinker's thread: the
   method is looked up, the slot kind set, and large inputs put in a data store.
2. The `Dispatcher` (the one owner of task state) queues it with the `Scheduler`, places it
   when a site has a free slot, and sends it through the site's backend.
3. The backend reports the attempt's outcome; the `StatusPoller` reports each site's status.
   The dispatcher retries, fails over or ends the task, and puts its result on its topic.
4. ``get_result`` resolves a proxied result in the thinker's thread (`TaskServer._deliver`) and
   tells the dispatcher it was delivered.

The task server builds those parts and owns their lifetime: starting every site, and stopping
them all so that nothing it started outlives it (`stop`, or the thinker's exit).
"""

from __future__ import annotations

import atexit
import functools
import logging
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from colmena_fed.backends import SiteBackend, make_backend
from colmena_fed.backends.globus import ServiceClients
from colmena_fed.backends.sim import SimWorld
from colmena_fed.capacity import CapacityCallback, CapacityWatchers
from colmena_fed.channels import ChannelReader, stream_key
from colmena_fed.data import DataPlane, ResultPolicy
from colmena_fed.dispatcher import Dispatcher, SiteCounts
from colmena_fed.files import private_dir
from colmena_fed.journal import Journal, RunIdentity
from colmena_fed.methods import Method, MethodLike, as_methods
from colmena_fed.models import Result
from colmena_fed.mpi import mpi_sites
from colmena_fed.policies import Observations, make_policy
from colmena_fed.poller import StatusPoller
from colmena_fed.queues import Resumed, TaskQueues
from colmena_fed.recovery import Recovery, recover, take_over
from colmena_fed.scheduler import Scheduler
from colmena_fed.signals import SignalHold
from colmena_fed.sites import SiteConfig, SitesConfig
from colmena_fed.stream import StreamTarget
from colmena_fed.warmth import WarmMap, forget_after
from colmena_fed.worker import pack_method
from colmena_fed.worker_cache import CacheBounds

logger = logging.getLogger(__name__)

__all__ = ["SiteCounts", "TaskServer"]

T = TypeVar("T")


class TaskServer:
    """Runs the methods a thinker asks for on the sites of a federation.

    Use it as a context manager: entering starts every site and the status poller; leaving
    stops them, ends any unfinished task as a failed result (reason ``shutdown``), and stops
    every engine. A task a site fails (worker lost, site offline) is placed again, up to its
    ``max_retries``; a task whose method raised is reported, never retried. A server the thinker
    leaves running is stopped as its process exits; if the process is killed, the guard
    (`colmena_fed.guard`) stops the processes its local sites started.

    Every run writes a journal in its run directory (`colmena_fed.journal`); a run whose
    thinker died is continued by a server made with ``resume=True`` on the same run directory,
    sites and methods (see docs/journal.md).
    """

    def __init__(
        self,
        queues: TaskQueues,
        sites: SitesConfig,
        methods: Iterable[MethodLike],
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        journal: bool = True,
    ) -> None:
        """Prepare a server; nothing starts until `start` (or ``with server:``).

        Args:
            queues: The queues the thinker sends on and reads from.
            sites: The federation, usually ``SitesConfig.from_yaml(...)``.
            methods: Task functions, bare (needing a 'cpu' slot) or as `Method`.
            run_dir: The run directory: the journal, and the engines' logs; a new temporary
                directory if None.
            resume: Continue the run whose journal is in ``run_dir`` (its thinker died).
            journal: Write a journal (a simulated federation too, in virtual time: to report on).
        """
        self.queues = queues
        self.config = sites
        self.methods: dict[str, Method] = as_methods(methods)
        sites.check_methods(
            {name: method.slot for name, method in self.methods.items()},
            [name for name, method in self.methods.items() if method.streams],
        )
        #: The virtual world of a simulated federation (all sites `sim`); None otherwise.
        self.world = SimWorld(sites.sim) if sites.simulated else None
        #: The Globus Compute task group of this run's tasks at `globus` sites.
        self.task_group = uuid.uuid4()
        self._clients = ServiceClients(sites.globus, self.task_group)
        self.backends: dict[str, SiteBackend] = {
            name: make_backend(name, site, self.world, self._clients)
            for name, site in sites.sites.items()
        }
        self.run_dir = Path(run_dir) if run_dir else None
        if resume and self.run_dir is None:
            raise ValueError("resume=True needs the run_dir of the run to resume")
        if resume and self.world is not None:
            raise ValueError(
                "a simulated federation cannot be resumed: its virtual world ended with its "
                "thinker; its journal is there to report on (colmena-fed report)"
            )
        self.resume = resume
        self._journaled = journal
        #: What the journal of a resumed run held; None in a new run.
        self.recovery: Recovery | None = None
        settings = sites.scheduler
        reach = sites.reach()
        self._channel_reach = channels = sites.channel_reach()
        observations = Observations()
        self.scheduler = Scheduler(
            {name: site.resources for name, site in sites.sites.items()},
            make_policy(settings.policy, observations, settings.static),
            prefetch={name: site.prefetch for name, site in sites.sites.items()},
            observations=observations,
            reach=reach,
            locality=sites.data.locality,
            streaming={name for name, reached in channels.items() if reached},
            mpi=mpi_sites(sites),
            warmth=WarmMap(forget_after(sites)) if settings.warm else None,
        )
        #: The stores that carry large inputs and results; None without a 'data:' section.
        self.data = DataPlane(sites.data, reach) if sites.data.stores else None
        self.capacity = CapacityWatchers()
        self.dispatcher = Dispatcher(
            self.scheduler,
            self.backends,
            self.methods,
            queues.put_result,
            data=self.data,
            capacity=self.capacity,
            staleness=settings.staleness,
            lost_after={
                name: (reached[0], sites.data.channels[reached[0]].lost_after_s)
                for name, reached in channels.items()
                if reached
            },
        )
        #: Readers of the channels that carry intermediate results (started with the sites).
        self.channels: list[ChannelReader] = []
        self.poller = StatusPoller(
            self.backends,
            self.dispatcher,
            settings.status_period,
            quick=[name for name, site in sites.sites.items() if site.backend == "local"],
            expiring=self.world is None,
        )
        self._started: list[str] = []
        self._running = False
        self._stopping = threading.Lock()

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
    def counts(self) -> dict[str, SiteCounts]:
        """What the dispatcher has seen of each site (live; `snapshot` for a consistent copy)."""
        return self.dispatcher.counts

    @property
    def pending_count(self) -> int:
        """Tasks waiting on the thinker side for a free slot."""
        return self.dispatcher.read(lambda: self.scheduler.pending_count)

    def snapshot(self) -> tuple[dict[str, SiteCounts], dict[str, int]]:
        """A consistent copy of each site's counts and of the pending tasks per slot kind."""

        def copy() -> tuple[dict[str, SiteCounts], dict[str, int]]:
            sites = {
                name: replace(counts, by_method=dict(counts.by_method))
                for name, counts in self.dispatcher.counts.items()
            }
            return sites, self.scheduler.pending_by_slot()

        return self.dispatcher.read(copy)

    def live_capacity(self, slot: str) -> int:
        """Tasks of kind ``slot`` the federation can hold now, over its online sites."""
        return self.dispatcher.read(lambda: self.scheduler.live_capacity(slot))

    def watch_capacity(self, slot: str, callback: CapacityCallback) -> None:
        """Call ``callback(slots)`` now and whenever the live capacity for ``slot`` changes.

        Later calls come after a site's status changed it, in order, never from inside the
        dispatcher; an exception a callback raises is logged.
        """
        self.dispatcher.read(
            lambda: self.capacity.add(slot, callback, self.scheduler.live_capacity(slot))
        )

    def start(self) -> None:
        """Start every site, then accept requests; a site that fails to start stops the rest.

        A resumed run checks its journal's run facts first, and reads and sorts the tasks it
        holds while the sites start (a corrupt journal then stops them again).
        """
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="colmena-fed-"))
        private_dir(self.run_dir)
        recovering: Future[Recovery] | None = None
        if self._journaled:
            self.dispatcher.journal = journal = self._open_journal(self.run_dir)
            if self.resume:
                recovering = _in_background(functools.partial(recover, journal))
        if self.world is not None:
            dispatcher = self.dispatcher
            self.world.begin(
                dispatcher.tick,
                lambda: dispatcher.read(lambda: None),
                lambda: dispatcher.read(dispatcher.scheduler.next_deadline),
            )
        try:
            if self.data is not None:
                self.data.start()
            for name, backend in self.backends.items():
                self._started.append(name)  # before start: a half-started site is stopped too
                backend.start(self.run_dir / name, functools.partial(self.dispatcher.status, name))
                results = self.data.result_policy(name) if self.data is not None else None
                stream = self._stream_target(name, results)
                warm = self.config.sites[name].warm
                cache = CacheBounds(
                    warm.max_items, None if warm.max_bytes is None else int(warm.max_bytes)
                )
                for method in self.methods.values():
                    packed = pack_method(
                        method.function,
                        method.name,
                        results,
                        stream if method.streams else None,
                        cache,
                    )
                    backend.register(method, packed)
            if recovering is not None:
                self.recovery = recovering.result()
            self._open_channels()
        except BaseException:
            if recovering is not None:
                wait([recovering])  # nothing closes the journal under it
            self._stop_channels(finished=False)  # a resumed run's stream holds what it holds
            self._shutdown_backends()
            self._clients.stop()
            if self.data is not None:
                self.data.close()
            self._close_journal()
            raise
        for name, backend in self.backends.items():
            self.dispatcher.status(name, backend.status())
        if self.recovery is not None:
            recovery = self.recovery
            self.queues.resume(Resumed(recovery.delivered, recovery.outstanding))
            self.dispatcher.resume(recovery, self._clients.reattach)
        for reader in self.channels:  # once the resumed tasks' streams are known
            reader.start()
        self.poller.start()
        self.dispatcher.signals.install()
        self._running = True
        _left_running.add(self)
        self.queues.connect(self._request, self._deliver)

    def _stream_target(self, site: str, results: ResultPolicy | None) -> StreamTarget | None:
        """Where ``site``'s workers send intermediate results (None: it reaches no channel)."""
        reached = self._channel_reach[site]
        if not reached:
            return None
        spec = self.config.data.channels[reached[0]]
        return StreamTarget(
            reached[0],
            spec.hostname,
            spec.port,
            spec.password_env,
            None if spec.password_file is None else str(spec.password_file),
            spec.tls,
            spec.timeout_s,
            stream_key(str(self.task_group)),
            results,
        )

    def _open_channels(self) -> None:
        """A reader (not started) of every channel a site streams through, if a method streams.

        Raises `ConfigError` if a channel's password cannot be read here.
        """
        if not any(method.streams for method in self.methods.values()):
            return
        targets: dict[str, StreamTarget] = {}
        for site in self.backends:
            target = self._stream_target(site, None)
            if target is not None:
                targets.setdefault(target.channel, target)
        positions = self.recovery.channels if self.recovery is not None else {}
        dispatcher = self.dispatcher
        for name, target in targets.items():
            position = positions.get(name, "0-0")
            reader = ChannelReader(
                target, dispatcher.intermediates, dispatcher.overdue_streams, position
            )
            self.channels.append(reader)
            reader.connect()

    def _stop_channels(self, finished: bool = True) -> None:
        """Stop reading the channels; the run's streams go with a run that ended."""
        readers, self.channels = self.channels, []
        for reader in readers:
            reader.stop(finished=finished)

    def _open_journal(self, run_dir: Path) -> Journal:
        """The journal of a new run, or of the run to resume (its run facts checked)."""
        sites = self.config.sites
        identity = RunIdentity(
            {name: _kind(site) for name, site in sites.items()}, list(self.methods)
        )
        if not self.resume:
            reach = self.config.reach()
            facts = {
                "capacity": {name: site.resources for name, site in sites.items()},
                "result_stores": {name: next(iter(reach.get(name, [])), None) for name in sites},
            }
            return Journal.create(run_dir, identity, str(self.task_group), facts)
        journal, meta = take_over(run_dir, identity)
        self.task_group = self._clients.task_group = uuid.UUID(meta["task_group"])
        return journal

    def _close_journal(self) -> None:
        """Detach the journal from the dispatcher (between two of its events), and close it."""

        def detach() -> Journal | None:
            journal, self.dispatcher.journal = self.dispatcher.journal, None
            return journal

        journal = self.dispatcher.read(detach)
        if journal is not None:
            journal.close()

    def join(self, timeout: float | None = None) -> bool:
        """Serve until the queues get the kill signal, then stop (Colmena's shutdown idiom).

        ``thinker.join(); queues.send_kill_signal(); server.join()``: the thinker stopping
        sends the signal itself. Ctrl+C while waiting stops the server too. Returns False if
        ``timeout`` passed first (the server then keeps running).
        """
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.queues.wait_for_kill_signal(0.1):  # in slices: Ctrl+C is seen
                if end is not None and time.monotonic() >= end:
                    return False
        except KeyboardInterrupt:
            self.stop()
            raise
        self.stop()
        return True

    def stop(self) -> None:
        """Stop accepting requests, end what did not finish, and stop every site.

        The stop runs to its end whatever happens meanwhile: a second Ctrl+C (or SIGTERM, which
        the command line turns into one) is acknowledged and raised only once every unfinished
        task has its result, the stores are emptied and every site is shut down.
        """
        with self._stopping:  # a second caller waits for the first to finish
            if not self._running:
                return
            interrupted = _run_to_the_end(self._shut_down, self.dispatcher.signals)
            self.dispatcher.signals.uninstall()
        if interrupted:
            raise KeyboardInterrupt

    def _shut_down(self) -> None:
        """Every step of a stop, each taken even if an earlier one failed."""
        steps: list[Callable[[], None]] = [
            self.queues.disconnect,
            self.poller.stop,
            self.dispatcher.close,  # every unfinished task ends now, with its result
            self._stop_channels,
            self._shutdown_backends,
            self._close_journal,
            self._clients.stop,
        ]
        if self.world is not None:
            steps.append(self.world.end)
        if self.data is not None:
            steps.append(self.data.close)
        for step in steps:
            try:
                step()
            except Exception:
                logger.exception("stopping the task server: %s failed", step.__name__)
        self._running = False
        _left_running.discard(self)

    def _shutdown_backends(self) -> None:
        for name in self._started:
            try:
                self.backends[name].shutdown()
            except Exception:
                logger.exception("site %r did not shut down cleanly", name)
        self._started = []

    def _request(self, task: Result) -> None:
        """A new task from the thinker (runs in the thread that called send_inputs)."""
        method = self.methods.get(task.method)
        if method is None:
            task.fail(
                "rejected",
                "PlacementError",
                f"unknown method {task.method!r} for task {task.task_id}; "
                f"methods: {', '.join(self.methods) or 'none'}",
            )
        else:
            task.slot = task.resources.slot or method.slot
            task.streams = bool(method.streams)
            if method.specification is not None:
                own = task.resources.specification or {}
                merged = {**method.specification, **own}
                task.resources = task.resources.model_copy(update={"specification": merged})
            if self.data is not None:
                try:
                    self.data.proxy_inputs(task)
                except Exception as exc:
                    message = f"cannot put the inputs of task {task.task_id} in a store: {exc}"
                    task.fail("rejected", "PlacementError", message)
        self.dispatcher.requested(task)

    def _deliver(self, task: Result) -> None:
        """The thinker takes ``task``'s result (runs in its thread, inside get_result)."""
        try:
            if self.data is not None:
                self.data.resolve_result(task)
        finally:
            self.dispatcher.delivered(task)


def _kind(site: SiteConfig) -> str:
    """What a site is, as a journal records it (a resumed run must find the same)."""
    if site.sim is not None:
        return "sim"
    return "local" if site.local is not None else f"globus endpoint {site.endpoint}"


def _in_background(call: Callable[[], T]) -> Future[T]:
    """``call()`` in a thread of its own; its result or exception in the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="colmena-fed-recovery", daemon=True).start()
    return future


def _run_to_the_end(work: Callable[[], None], hold: SignalHold) -> bool:
    """Run ``work`` in a thread of its own and wait for it through any Ctrl+C.

    Returns whether the wait was interrupted. Signals reach only the main thread, so the work
    itself is never cut short; ``hold`` keeps them back until the wait is ready for them.
    """
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="colmena-fed-stop")
    main = threading.current_thread() is threading.main_thread()
    if main:  # only the main thread receives signals (and only it flips this)
        hold.held = True
    try:
        thread.start()
    except RuntimeError:  # no new thread at interpreter shutdown: nothing can interrupt now
        work()
        return False
    interrupted = False
    while not done.is_set():
        try:
            if main:
                hold.held = False
                if hold.pending:
                    hold.release()
            time.sleep(0.02)  # not join nor Event.wait: Ctrl+C inside their locks breaks them
        except KeyboardInterrupt:
            interrupted = True
            sys.stderr.write(
                "colmena-fed: still stopping; every unfinished task gets its result and every "
                "site is shut down first\n"
            )
    thread.join()
    if failure:
        raise failure[0]
    return interrupted


#: Task servers started and not stopped: stopped as the process exits, if the thinker did not.
_left_running: set[TaskServer] = set()


def _stop_left_running() -> None:
    for server in list(_left_running):
        try:
            server.stop()
        except BaseException:
            logger.exception("stopping a task server left running at exit failed")


# Run before the interpreter joins non-daemon threads at exit (as concurrent.futures does): the
# Globus Compute SDK joins its own there, waiting for every task still out, unless the server
# stopped its Executors first. Older interpreters fall back to atexit.
_at_exit: Callable[[Callable[[], None]], object] = getattr(
    threading, "_register_atexit", atexit.register
)
_at_exit(_stop_left_running)
