"""Capacity watching: tell callbacks how many tasks of a slot kind the federation can hold.

A `ResourceCounter` pool that follows the federation (and anyone else who asks) registers a
callback per slot kind. The dispatcher reports the live capacity of every watched kind after it
applies a site's status; changes are queued here and delivered later, outside the dispatcher,
in the order they happened, one delivery at a time. A callback may therefore do anything (send
tasks, read the task server) without holding up or re-entering the dispatcher.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)

CapacityCallback = Callable[[int], None]


class CapacityWatchers:
    """The callbacks watching each slot kind's live capacity, and the changes not yet told."""

    def __init__(self) -> None:
        """Start with no watchers."""
        self._watchers: dict[str, list[CapacityCallback]] = {}
        self._told: dict[str, int] = {}
        self._pending: deque[tuple[str, int, list[CapacityCallback]]] = deque()
        self._notifying = threading.RLock()  # one thread delivers at a time, in order

    @property
    def slots(self) -> list[str]:
        """The slot kinds someone watches."""
        return list(self._watchers)

    def add(self, slot: str, callback: CapacityCallback, capacity: int) -> None:
        """Watch ``slot`` with ``callback``, first told ``capacity`` (the capacity now).

        Called by the dispatcher's holder; the first call reaches ``callback`` at the next
        `deliver`.
        """
        self._watchers.setdefault(slot, []).append(callback)
        self._told.setdefault(slot, capacity)
        self._pending.append((slot, capacity, [callback]))

    def update(self, capacity: Callable[[str], int]) -> None:
        """Queue a change for each watched kind whose ``capacity(slot)`` differs from the last."""
        for slot, callbacks in self._watchers.items():
            slots = capacity(slot)
            if slots != self._told.get(slot):
                self._told[slot] = slots
                self._pending.append((slot, slots, list(callbacks)))

    def deliver(self) -> None:
        """Call the callbacks of every queued change, oldest first (outside the dispatcher).

        An exception a callback raises is logged; the others are still told.
        """
        if not self._pending:
            return
        with self._notifying:
            while self._pending:
                slot, slots, callbacks = self._pending.popleft()
                for callback in callbacks:
                    try:
                        callback(slots)
                    except Exception:
                        logger.exception("a watcher of the %r capacity failed", slot)
