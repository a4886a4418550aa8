"""Placement policies: plain objects that pick a site for one task from the sites' states.

A policy sees a pending task and the online sites that may run it, and answers with a site
that has a free slot, or None to keep the task waiting. Nothing here starts or locks anything,
so every policy can be tested on plain data. `Observations` is what the task server has
learned from finished tasks (run time per site and method, round-trip latency per site).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from colmena_fed.models import Result

#: Weight of the newest sample in the learned moving averages.
LEARNING_RATE = 0.2


@dataclass
class SiteState:
    """Slot accounting for one site, refined by its live status.

    ``capacity`` holds the slots per kind declared in the sites YAML. When the site reports a
    worker count, its tasks in flight (all kinds together) are also capped at ``workers +
    prefetch``: a batch job that has not started offers nothing, one that shrinks offers less.
    A ``suspended`` site (it just failed a task) gets nothing until its next status report.

    At an MPI site (``nodes_per_block`` set) slots are nodes: ``in_flight`` counts the nodes
    its tasks hold, ``total_in_flight`` the tasks, and once its blocks are known
    (``managers``: one worker pool per block) the nodes in flight stay within theirs.
    """

    name: str
    capacity: dict[str, int]
    prefetch: int = 0
    online: bool = True
    suspended: bool = False
    workers: int | None = None
    in_flight: dict[str, int] = field(default_factory=dict)
    total_in_flight: int = 0
    nodes_per_block: int | None = None
    managers: int | None = None

    def free(self, slot: str) -> int:
        """Slots of kind ``slot`` that could take a task now (nodes, at an MPI site)."""
        if not self.online or self.suspended:
            return 0
        free = self.capacity.get(slot, 0) - self.in_flight.get(slot, 0)
        if self.workers is not None:
            tasks_room = self.workers + self.prefetch - self.total_in_flight
            if self.nodes_per_block is None:
                return min(free, tasks_room)
            if tasks_room <= 0:
                return 0
            if self.managers is not None:
                live = self.managers * self.nodes_per_block
                free = min(free, live - sum(self.in_flight.values()))
        return free

    def refill_at(self, slot: str) -> int:
        """Free slots of kind ``slot`` worth topping the site up for, as its tasks finish.

        Half the tasks it may hold beyond its workers (its prefetch, as far as its slots allow),
        at least 1: what is left in flight still keeps every worker busy, and the refill
        travels as one batch rather than one task per result.
        """
        if self.workers is None or self.nodes_per_block is not None:
            return 1
        slack = min(self.capacity.get(slot, 0) - self.workers, self.prefetch)
        return max(1, slack // 2)

    def live_capacity(self, slot: str) -> int:
        """How many tasks of kind ``slot`` the site could hold now (0 while offline)."""
        if not self.online:
            return 0
        declared = self.capacity.get(slot, 0)
        if self.nodes_per_block is not None:
            return declared if self.managers is None else min(declared, self._live_nodes())
        if self.workers is None:
            return declared
        return min(declared, self.workers + self.prefetch)

    def running_slots(self, slot: str) -> int:
        """Tasks of kind ``slot`` the site can run at once (queued ones excluded)."""
        declared = self.capacity.get(slot, 0)
        if self.nodes_per_block is not None:
            return declared if self.managers is None else min(declared, self._live_nodes())
        return declared if self.workers is None else min(declared, self.workers)

    def _live_nodes(self) -> int:
        assert self.managers is not None
        assert self.nodes_per_block is not None
        return self.managers * self.nodes_per_block


class Observations:
    """What finished tasks taught: run time per (site, method), round-trip latency per site."""

    def __init__(self) -> None:
        """Start knowing nothing."""
        self.run_time: dict[tuple[str, str], float] = {}
        self.latency: dict[str, float] = {}
        self._by_method: dict[str, dict[str, float]] = {}

    def learn(self, task: Result) -> None:
        """Update the averages from a task that ran to completion on ``task.site``."""
        site, run = task.site, task.run_time
        if site is None or run is None or not task.success:
            return
        key = (site, task.method)
        estimate = _average(self.run_time.get(key), run)
        self.run_time[key] = estimate
        self._by_method.setdefault(task.method, {})[site] = estimate
        stamps = task.timestamps
        if stamps.dispatched is not None and stamps.received is not None:
            trip = max(0.0, stamps.received - stamps.dispatched - run)
            self.latency[site] = _average(self.latency.get(site), trip)

    def expected_run(self, site: str, method: str) -> float | None:
        """Expected run time of ``method`` on ``site``: learned there, else the mean elsewhere."""
        own = self.run_time.get((site, method))
        if own is not None:
            return own
        elsewhere = self._by_method.get(method)
        return sum(elsewhere.values()) / len(elsewhere) if elsewhere else None


def _average(old: float | None, sample: float) -> float:
    return sample if old is None else old + LEARNING_RATE * (sample - old)


class Policy(Protocol):
    """Chooses where a pending task runs."""

    name: ClassVar[str]

    def restrict(self, task: Result, sites: Sequence[SiteState]) -> frozenset[str] | None:
        """Sites the task may use under this policy (None: any), decided when it is queued.

        ``sites`` are the sites that offer the task's slot kind and satisfy its own request
        (for a retry: those it has not failed on, when any is online).
        """

    def choose(
        self, task: Result, sites: Sequence[SiteState], waiting: int
    ) -> tuple[SiteState, str] | None:
        """A site with a free slot for ``task`` and why, or None to keep it waiting.

        ``sites`` are the online sites allowed to run the task, at least one with a free slot;
        ``waiting`` counts the other tasks of its slot kind still pending.
        """


class Availability:
    """The site with the most free slots of the task's kind; ties go to the faster site."""

    name: ClassVar[str] = "availability"

    def __init__(self, observations: Observations) -> None:
        """Break ties with what ``observations`` learned."""
        self.observations = observations

    def restrict(self, task: Result, sites: Sequence[SiteState]) -> frozenset[str] | None:
        """Any site that offers the slot."""
        return None

    def choose(
        self, task: Result, sites: Sequence[SiteState], waiting: int
    ) -> tuple[SiteState, str] | None:
        """Most free slots; among equals, shortest expected run time, then the first listed."""
        slot = task.slot or ""
        best: SiteState | None = None
        best_free = 0
        tied = False
        for site in sites:
            free = site.free(slot)
            if free > best_free:
                best, best_free, tied = site, free, False
            elif free == best_free and free > 0:
                tied = True
        if best is None:
            return None
        if tied:
            best = min(
                (s for s in sites if s.free(slot) == best_free),
                key=lambda s: self.observations.expected_run(s.name, task.method) or 0.0,
            )
        return best, f"availability: most free {slot} slots ({best_free})"


class Fastest:
    """The site where the task is expected to finish first: wait for a slot, round trip, run.

    Run times are learned per site and method, round trips per site. A task waits on the
    thinker side when a busy site is still expected to finish it before a free one would.
    """

    name: ClassVar[str] = "fastest"

    def __init__(self, observations: Observations) -> None:
        """Estimate from ``observations``."""
        self.observations = observations
        self._fallback = Availability(observations)

    def restrict(self, task: Result, sites: Sequence[SiteState]) -> frozenset[str] | None:
        """Any site that offers the slot."""
        return None

    def choose(
        self, task: Result, sites: Sequence[SiteState], waiting: int
    ) -> tuple[SiteState, str] | None:
        """Earliest expected finish; a site never seen yet is expected to be average.

        A free slot starts the task now. A busy site makes it wait for the tasks already
        queued there, plus its share of the ``waiting`` ones: so with a long queue every free
        slot is worth using, and at the end of a run a fast busy site beats a slow free one.
        """
        slot = task.slot or ""
        learned = self.observations
        running_total = sum(site.running_slots(slot) for site in sites) or 1
        best: SiteState | None = None
        best_key = (float("inf"), True)
        for site in sites:
            run = learned.expected_run(site.name, task.method)
            if run is None:
                return self._fallback.choose(task, sites, waiting)
            busy = site.free(slot) <= 0
            if site.running_slots(slot) == 0:  # no workers yet: no telling when it will run
                continue
            finish = learned.latency.get(site.name, 0.0) + run
            running = site.running_slots(slot)
            ahead = float(max(site.in_flight.get(slot, 0) - running + 1, 0))
            if busy:
                ahead += waiting * running / running_total
            finish += run * ahead / running
            key = (finish, busy)
            if key < best_key:
                best, best_key = site, key
        if best is None:  # only sites without workers: hand it to one with room, if any
            return self._fallback.choose(task, sites, waiting)
        if best_key[1]:
            return None
        best_finish = best_key[0]
        return best, f"fastest: expected to finish in {best_finish:.3g} s"


class RoundRobin:
    """Baseline: each task is bound, when submitted, to the next site in turn and waits for it."""

    name: ClassVar[str] = "round_robin"

    def __init__(self) -> None:
        """Start every rotation at the first site."""
        self._turns: dict[tuple[str, ...], itertools.cycle[str]] = {}

    def restrict(self, task: Result, sites: Sequence[SiteState]) -> frozenset[str] | None:
        """The next site in the rotation over the sites that may run the task."""
        names = tuple(s.name for s in sites)
        turn = self._turns.get(names)
        if turn is None:
            turn = self._turns[names] = itertools.cycle(names)
        return only(next(turn))

    def choose(
        self, task: Result, sites: Sequence[SiteState], waiting: int
    ) -> tuple[SiteState, str] | None:
        """The bound site, once it has a free slot."""
        slot = task.slot or ""
        site = sites[0]
        return (site, "round_robin: its turn") if site.free(slot) > 0 else None


class Static:
    """Baseline: a fixed method -> site map, as Colmena's Globus task server has."""

    name: ClassVar[str] = "static"

    def __init__(self, assignments: Mapping[str, str], observations: Observations) -> None:
        """Send each method in ``assignments`` to its site."""
        self.assignments = dict(assignments)
        self._fallback = Availability(observations)

    def restrict(self, task: Result, sites: Sequence[SiteState]) -> frozenset[str] | None:
        """The site the method is assigned to, if it is."""
        site = self.assignments.get(task.method)
        if site is None or all(s.name != site for s in sites):  # e.g. a slot kind it lacks
            return None
        return only(site)

    def choose(
        self, task: Result, sites: Sequence[SiteState], waiting: int
    ) -> tuple[SiteState, str] | None:
        """The assigned site once it has a free slot; unassigned methods by availability."""
        assigned = self.assignments.get(task.method)
        site = next((s for s in sites if s.name == assigned), None)
        if site is None:  # not assigned, or assigned to a site without the task's slot kind
            return self._fallback.choose(task, sites, waiting)
        return (site, "static: assigned site") if site.free(task.slot or "") > 0 else None


@functools.cache
def only(site: str) -> frozenset[str]:
    """The set of just ``site``, shared: every task bound to one site uses the same set."""
    return frozenset((site,))


POLICY_NAMES = ("availability", "fastest", "round_robin", "static")


def make_policy(
    name: str, observations: Observations, assignments: Mapping[str, str] | None = None
) -> Policy:
    """The policy called ``name`` (one of `POLICY_NAMES`)."""
    if name == "availability":
        return Availability(observations)
    if name == "fastest":
        return Fastest(observations)
    if name == "round_robin":
        return RoundRobin()
    if name == "static":
        return Static(assignments or {}, observations)
    raise ValueError(f"unknown placement policy {name!r}; policies: {', '.join(POLICY_NAMES)}")
