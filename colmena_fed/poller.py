"""The status poller: reads each polled site's live state on its schedule, and keeps time.

Every ``status_period`` it asks each polled site for its status (`SiteBackend.status`, which
never raises) and posts the answer to the dispatcher; a local site whose engine has no workers
yet is asked every `STARTING_POLL_S`, so its first tasks go out as soon as its workers connect.
Between polls it wakes at the earliest ``max_wait`` deadline of a pending task and posts a tick.
It never changes a task itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping

from colmena_fed import clock
from colmena_fed.backends import SiteBackend
from colmena_fed.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

#: Seconds between status polls of a local site whose engine has no workers yet.
STARTING_POLL_S = 0.25


class StatusPoller:
    """A thread that polls sites and posts their status and the passing of time."""

    def __init__(
        self,
        backends: Mapping[str, SiteBackend],
        dispatcher: Dispatcher,
        period: float,
        *,
        quick: Collection[str] = (),
        expiring: bool = True,
    ) -> None:
        """Poll the ``polled`` sites of ``backends`` every ``period`` seconds.

        Args:
            backends: The sites, by name; only those whose backend is ``polled`` are asked.
            dispatcher: Where statuses and ticks go.
            period: Seconds between two polls of a site.
            quick: Sites polled every `STARTING_POLL_S` while online with no workers.
            expiring: Post ticks at ``max_wait`` deadlines (a simulated federation's world
                expires tasks itself, as its virtual time moves).
        """
        self.backends = backends
        self.dispatcher = dispatcher
        self.period = period
        self.quick = frozenset(quick)
        self.expiring = expiring
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling (the sites were asked once already by whoever started them)."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="colmena-fed-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; returns once the thread has ended."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        period = self.period
        polled = [name for name, backend in self.backends.items() if backend.polled]
        due = dict.fromkeys(polled, time.monotonic() + period)
        next_deadline = self.dispatcher.scheduler.next_deadline
        while True:
            wait = min(due.values(), default=time.monotonic() + period) - time.monotonic()
            if self.expiring:
                deadline = self.dispatcher.read(next_deadline)
                if deadline is not None:
                    wait = min(wait, deadline - clock.now())
            if self._stopping.wait(max(wait, 0.0)):
                return
            try:
                if self.expiring:
                    self.dispatcher.tick()
                for name in polled:
                    if time.monotonic() >= due[name]:
                        status = self.backends[name].status()
                        self.dispatcher.status(name, status)
                        starting = name in self.quick and status.online and status.workers == 0
                        due[name] = time.monotonic() + (
                            min(period, STARTING_POLL_S) if starting else period
                        )
            except Exception:  # this thread must outlive any one bad poll
                logger.exception("status poll failed; polling again next period")
                due = {name: max(when, time.monotonic() + period) for name, when in due.items()}
