"""Slots shared among a thinker's task types: Colmena's `ResourceCounter`."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from colmena_fed.server import TaskServer

#: Longest a cancellable wait goes without checking its ``cancel_if`` event.
REACTION_S = 0.1

SlotCount = int | Literal["all"]

logger = logging.getLogger(__name__)


class ResourceCounter:
    """Slots (nodes, GPUs, ...) shared among task types, as in Colmena.

    Every slot belongs to one pool: a task type, or ``None`` for the unallocated pool, where
    all slots start. `reallocate` moves slots between pools; `acquire` takes free slots of a
    pool for a task and `release` gives them back to the same pool. Waits are first come,
    first served per pool, and all operations are thread-safe.

    A pool can also `follow` the federation: its size then tracks how many tasks of a slot
    kind the task server's online sites can hold, as batch jobs start and sites go down.
    """

    def __init__(self, total_slots: int, task_types: Iterable[str] = ()) -> None:
        """Create ``total_slots`` unallocated slots and an empty pool per task type."""
        types = list(dict.fromkeys(task_types))
        if not all(isinstance(t, str) for t in types):
            raise ValueError(
                f"task_types must be names (str); None is the unallocated pool: {types}"
            )
        if total_slots < 0:
            raise ValueError(f"total_slots must be >= 0, got {total_slots}")
        self._total = total_slots
        self._types = types
        self._allocated: dict[str | None, int] = {None: total_slots, **dict.fromkeys(types, 0)}
        self._available = dict(self._allocated)
        self._lines: dict[str | None, deque[object]] = {pool: deque() for pool in self._allocated}
        #: Slots a shrunk pool still owes: acquired slots that vanish when released.
        self._owed: dict[str | None, int] = dict.fromkeys(self._allocated, 0)
        self._followed: set[str] = set()
        self._cond = threading.Condition()

    @property
    def total_slots(self) -> int:
        """Number of slots in all."""
        return self._total

    @property
    def task_types(self) -> list[str]:
        """Names of the pools (the unallocated pool, ``None``, not included)."""
        return list(self._types)

    @property
    def unallocated_slots(self) -> int:
        """Number of slots in the unallocated pool."""
        return self.allocated_slots(None)

    def check_pool(self, task: str | None) -> None:
        """Raise `UnknownPoolError` naming the known task types if ``task`` is not one of them."""
        if task not in self._allocated:
            known = ", ".join(repr(t) for t in self._types) or "none"
            raise UnknownPoolError(
                f"unknown task type {task!r}; known task types: {known} (None: unallocated)"
            )

    def allocated_slots(self, task: str | None) -> int:
        """Number of slots allocated to ``task``'s pool, acquired or not."""
        self.check_pool(task)
        with self._cond:
            return self._allocated[task]

    def available_slots(self, task: str | None) -> int:
        """Number of slots of ``task``'s pool that are free to acquire."""
        self.check_pool(task)
        with self._cond:
            return self._available[task]

    def acquire(
        self,
        task: str | None,
        n_slots: int,
        timeout: float = -1.0,
        cancel_if: threading.Event | None = None,
    ) -> bool:
        """Take ``n_slots`` free slots of ``task``'s pool, waiting until they are free.

        A ``timeout`` (seconds) of 0 or less waits for ever, as in Colmena; the wait also ends
        as soon as ``cancel_if`` is set (a set ``cancel_if`` takes nothing). Returns whether
        the slots were taken.
        """
        _check_count(n_slots)
        self.check_pool(task)
        if n_slots > self._total and task not in self._followed:  # a followed pool may grow
            raise ValueError(f"cannot acquire {n_slots} slots: there are {self._total} in all")
        with self._cond:
            return self._take(task, n_slots, timeout, cancel_if) is not None

    def release(
        self,
        task: str | None = None,
        n_slots: int = 1,
        rerequest: bool = False,
        timeout: float = -1.0,
    ) -> bool | None:
        """Give back ``n_slots`` acquired slots of ``task``'s pool.

        With ``rerequest``, acquire as many again (waiting up to ``timeout``) and return
        whether that succeeded; otherwise return None.
        """
        _check_count(n_slots)
        self.check_pool(task)
        with self._cond:
            owed = self._owed[task]
            held = self._allocated[task] - self._available[task] + owed
            if n_slots > held:
                raise ValueError(f"cannot release {n_slots} slots of {task!r}: {held} acquired")
            repaid = min(owed, n_slots)
            self._owed[task] -= repaid
            self._available[task] += n_slots - repaid
            self._cond.notify_all()
        return self.acquire(task, n_slots, timeout) if rerequest else None

    def reallocate(  # noqa: PLR0917 - Colmena's signature, positional arguments included
        self,
        task_from: str | None,
        task_to: str | None,
        n_slots: SlotCount,
        block: bool = True,
        callback: Callable[[], None] | None = None,
        timeout: float = -1.0,
        cancel_if: threading.Event | None = None,
    ) -> bool:
        """Move ``n_slots`` slots from one pool to another, once they are free in the first.

        ``None`` names the unallocated pool; ``n_slots="all"`` moves every slot allocated to
        ``task_from``. Waits as `acquire` does and returns whether the slots moved; with
        ``block=False`` it moves them in a daemon thread, which calls ``callback()`` once they
        moved, and returns True at once.
        """
        self.check_pool(task_from)
        self.check_pool(task_to)
        followed = {task_from, task_to} & self._followed
        if followed:
            raise ValueError(
                f"pool {followed.pop()!r} follows the federation's capacity; its slots cannot "
                "be moved by hand"
            )
        if task_from == task_to:
            raise ValueError(f"cannot move slots from pool {task_from!r} to itself")
        if n_slots != "all":
            _check_count(n_slots)
        if not block:

            def move_then_call_back() -> None:
                self.reallocate(task_from, task_to, n_slots, True, None, timeout, cancel_if)
                if callback is not None:
                    callback()

            threading.Thread(target=move_then_call_back, daemon=True).start()
            return True
        with self._cond:
            moved = self._take(task_from, n_slots, timeout, cancel_if)
            if moved is None:
                return False
            self._allocated[task_from] -= moved
            self._allocated[task_to] += moved
            self._available[task_to] += moved
            self._cond.notify_all()
        logger.info("moved %d slots from %r to %r", moved, task_from, task_to)
        return True

    def follow(
        self,
        server: TaskServer,
        slot: str,
        pool: str,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        """Size ``pool`` to the federation's live capacity for ``slot``, now and as it changes.

        When capacity grows, the new slots are free at once; when it shrinks, free slots go
        first and acquired ones vanish as they are released. ``on_change(slots)`` is called
        after each change (from the task server's status thread).
        """
        self.check_pool(pool)
        if pool is None:
            raise ValueError("the unallocated pool cannot follow a slot kind; name a task type")

        with self._cond:
            self._followed.add(pool)
        last: list[int] = []  # the size told before this one, once there is one

        def resize(slots: int) -> None:
            self._resize(pool, slots)
            if on_change is not None and last and last[0] != slots:
                on_change(slots)
            last[:] = [slots]

        server.watch_capacity(slot, resize)  # calls resize at once with the current capacity

    def _resize(self, pool: str, slots: int) -> None:
        with self._cond:
            change = slots - self._allocated[pool]
            if change >= 0:
                repaid = min(self._owed[pool], change)
                self._owed[pool] -= repaid
                self._available[pool] += change - repaid
            else:
                freed = min(self._available[pool], -change)
                self._available[pool] -= freed
                self._owed[pool] += -change - freed
            self._allocated[pool] = slots
            self._total += change
            self._cond.notify_all()
        logger.info("pool %r follows the federation: %d slots", pool, slots)

    def _take(
        self,
        pool: str | None,
        n_slots: SlotCount,
        timeout: float,
        cancel_if: threading.Event | None,
    ) -> int | None:
        """Wait in line for free slots of ``pool`` and take them; call with the lock held."""
        deadline = None if timeout is None or timeout <= 0 else time.monotonic() + timeout
        ticket = object()
        line = self._lines[pool]
        line.append(ticket)
        try:
            while cancel_if is None or not cancel_if.is_set():
                wanted = self._allocated[pool] if n_slots == "all" else n_slots
                if line[0] is ticket and self._available[pool] >= wanted:
                    self._available[pool] -= wanted
                    return wanted
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                if cancel_if is not None:  # an Event cannot notify our condition
                    wait = REACTION_S if wait is None else min(wait, REACTION_S)
                self._cond.wait(wait)
            return None
        finally:
            line.remove(ticket)
            self._cond.notify_all()


class UnknownPoolError(KeyError, ValueError):
    """A task type the `ResourceCounter` was not created with (Colmena raises KeyError)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ReallocatorThread(threading.Thread):
    """Colmena's thread that lends slots to a pool while an event is unset.

    Until ``stop_event`` is set, it moves ``slot_step`` slots at a time from ``gather_from``
    to ``gather_to`` (up to ``max_slots`` there); once set, it moves every slot of
    ``gather_to`` to ``disperse_to``. ``cancel_if`` (colmena-fed's addition) abandons that
    last move, e.g. the thinker's ``done``, so that a campaign ending does not leave it
    waiting for slots that are never released.
    """

    def __init__(  # noqa: PLR0917 - Colmena's signature, positional arguments included
        self,
        resource_counter: ResourceCounter,
        gather_from: str | None,
        gather_to: str | None,
        disperse_to: str | None,
        max_slots: int | None = None,
        stop_event: threading.Event | None = None,
        slot_step: int = 1,
        logger_name: str | None = None,
        *,
        cancel_if: threading.Event | None = None,
    ) -> None:
        """Set up the lending; `start` begins it."""
        super().__init__(daemon=True, name=f"reallocate:{gather_from}->{gather_to}")
        self.resource_counter = resource_counter
        self.gather_from = gather_from
        self.gather_to = gather_to
        self.disperse_to = disperse_to
        self.max_slots = max_slots
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.slot_step = slot_step
        self.cancel_if = cancel_if
        self.logger = logger if logger_name is None else logging.getLogger(logger_name)

    def run(self) -> None:
        """Gather until ``stop_event`` is set (or the cap is reached), then disperse."""
        rec = self.resource_counter
        while not self.stop_event.is_set():
            have = rec.allocated_slots(self.gather_to)
            if self.max_slots is not None and have >= self.max_slots:
                break
            step = self.slot_step
            if self.max_slots is not None:  # never past the cap (Colmena's last step can be)
                step = min(step, self.max_slots - have)
            rec.reallocate(self.gather_from, self.gather_to, step, cancel_if=self.stop_event)
        self.stop_event.wait()
        if self.disperse_to == self.gather_to:
            return
        if self.cancel_if is not None and self.cancel_if.is_set():  # only if all are free now
            rec.reallocate(self.gather_to, self.disperse_to, "all", timeout=REACTION_S)
        else:
            rec.reallocate(self.gather_to, self.disperse_to, "all", cancel_if=self.cancel_if)
        self.logger.info("slots of %r went back to %r", self.gather_to, self.disperse_to)


def _check_count(n_slots: object) -> None:
    if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 0:
        raise ValueError(f"n_slots must be an integer >= 0, got {n_slots!r}")
