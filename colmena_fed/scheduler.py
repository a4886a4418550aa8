"""Placement: which site runs each task, and when.

Pending work stays on the thinker side (late binding): a task is dispatched only when an
eligible site has a free slot of its kind. The scheduler is a plain object driven by the task
server's event loop, so it holds no locks and can be tested without starting anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from colmena_fed.models import Result


class PlacementError(ValueError):
    """A task can never be placed (no site offers what it needs)."""


@dataclass
class SiteSlots:
    """Slot accounting for one site."""

    name: str
    capacity: dict[str, int]
    in_flight: dict[str, int] = field(default_factory=dict)
    online: bool = True

    def free(self, slot: str) -> int:
        """Slots of kind ``slot`` that could take a task now."""
        if not self.online:
            return 0
        return self.capacity.get(slot, 0) - self.in_flight.get(slot, 0)


@dataclass(frozen=True)
class Placement:
    """A decision: run ``task`` on ``site`` now."""

    task: Result
    site: str


class Scheduler:
    """Keeps pending tasks per slot kind and places them on the site with most free slots.

    This is the ``availability`` policy: among online sites that offer the task's slot kind
    (and, if the task names one, that site), the one with most free slots wins; ties go to the
    site listed first.
    """

    def __init__(self, capacities: Mapping[str, Mapping[str, int]]) -> None:
        """Create a scheduler for sites given as ``{site: {slot kind: slots}}``."""
        self.sites = {name: SiteSlots(name, dict(slots)) for name, slots in capacities.items()}
        self._pending: dict[str, deque[Result]] = {}

    @property
    def pending_count(self) -> int:
        """Tasks waiting on the thinker side for a slot."""
        return sum(len(q) for q in self._pending.values())

    def pending_by_slot(self) -> dict[str, int]:
        """Pending tasks per slot kind."""
        return {slot: len(q) for slot, q in self._pending.items() if q}

    def check(self, task: Result) -> None:
        """Raise `PlacementError` if no site could ever run ``task`` (``task.slot`` set)."""
        slot, wanted = task.slot or "", task.resources.site
        if wanted is not None:
            site = self.sites.get(wanted)
            if site is None:
                raise PlacementError(
                    f"task {task.task_id} ({task.method}) asks for site {wanted!r}, which does "
                    f"not exist; sites: {', '.join(self.sites)}"
                )
            if slot not in site.capacity:
                raise PlacementError(
                    f"task {task.task_id} ({task.method}) needs a {slot!r} slot but site "
                    f"{wanted!r} offers only {', '.join(site.capacity)}"
                )
            return
        if not any(slot in s.capacity for s in self.sites.values()):
            offered = sorted({k for s in self.sites.values() for k in s.capacity})
            raise PlacementError(
                f"task {task.task_id} ({task.method}) needs a {slot!r} slot, which no site "
                f"offers; slot kinds offered: {', '.join(offered)}"
            )

    def submit(self, task: Result) -> Placement | None:
        """Place ``task`` now if a slot is free, else keep it pending (returns None)."""
        site = self._best_site(task)
        if site is None:
            self._pending.setdefault(task.slot or "", deque()).append(task)
            return None
        return self._take(task, site)

    def release(self, site: str, slot: str) -> list[Placement]:
        """A task of kind ``slot`` left ``site``: free its slot and fill free slots."""
        slots = self.sites[site]
        slots.in_flight[slot] -= 1
        return self._fill(slot)

    def set_online(self, site: str, online: bool) -> list[Placement]:
        """Mark a site on- or offline; a site coming back fills its free slots."""
        slots = self.sites[site]
        was, slots.online = slots.online, online
        if online and not was:
            return [p for slot in slots.capacity for p in self._fill(slot)]
        return []

    def drain(self) -> list[Result]:
        """Remove and return every pending task (at shutdown)."""
        tasks = [t for q in self._pending.values() for t in q]
        self._pending.clear()
        return tasks

    def _fill(self, slot: str) -> list[Placement]:
        queue = self._pending.get(slot)
        placements: list[Placement] = []
        while queue and any(s.free(slot) > 0 for s in self.sites.values()):
            choice = next(
                ((i, site) for i, t in enumerate(queue) if (site := self._best_site(t))), None
            )
            if choice is None:
                break
            index, site = choice
            task = queue[index]
            del queue[index]
            placements.append(self._take(task, site))
        return placements

    def _best_site(self, task: Result) -> SiteSlots | None:
        slot = task.slot or ""
        if task.resources.site is not None:
            site = self.sites[task.resources.site]
            return site if site.free(slot) > 0 else None
        best: SiteSlots | None = None
        best_free = 0
        for site in self.sites.values():
            free = site.free(slot)
            if free > best_free:
                best, best_free = site, free
        return best

    def _take(self, task: Result, site: SiteSlots) -> Placement:
        slot = task.slot or ""
        free = site.free(slot)
        site.in_flight[slot] = site.in_flight.get(slot, 0) + 1
        task.site = site.name
        task.placement = f"availability: {free} of {site.capacity[slot]} {slot} slots free"
        return Placement(task, site.name)
