"""Pending work and placement: which site runs each task, and when.

Pending tasks stay on the thinker side (late binding), ordered by priority then FIFO, and are
dispatched only when a site they may use has a free slot of their kind; the policy picks which.
Tasks are queued by (slot kind, sites allowed), so a task waiting for one busy site never holds
up tasks that could run elsewhere. The scheduler is plain data driven by the dispatcher (its one
owner): no threads, no locks, testable without starting anything.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import traceback
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from colmena_fed.models import FailureInfo, Result
from colmena_fed.mpi import (
    HTEX_SPECIFICATION_KEYS,
    MPISite,
    launch_problem,
    specification_problem,
)
from colmena_fed.policies import Availability, Observations, Policy, SiteState, only

if TYPE_CHECKING:
    from colmena_fed.warmth import WarmMap
    from colmena_fed.worker import WorkerReport


class PlacementError(ValueError):
    """A task can never be placed (no site offers what it needs)."""


class Placement(NamedTuple):
    """A decision: run ``task`` on ``site`` now."""

    task: Result
    site: str


class Step(NamedTuple):
    """What one scheduler call decided: tasks to send now, tasks that ended while pending."""

    placed: list[Placement]
    ended: list[Result]


#: A pending queue: tasks of one slot kind allowed on the same sites (None: any site), with
#: the same warm key (None: none, or warm placement off).
QueueKey = tuple[str, frozenset[str] | None, str | None]


class _Entry:
    """A pending task in its queue; ``alive`` turns False when it leaves early."""

    __slots__ = ("alive", "key", "rank", "task")

    def __init__(self, rank: tuple[int, float, int], task: Result, key: QueueKey) -> None:
        self.rank, self.task, self.key, self.alive = rank, task, key, True


#: What a queue's heap holds: the entry's rank first, so ordering never compares entries.
_Queued = tuple[tuple[int, float, int], _Entry]


class Scheduler:
    """Pending tasks, slots per site, and a `Policy` that decides placements."""

    def __init__(
        self,
        capacities: Mapping[str, Mapping[str, int]],
        policy: Policy | None = None,
        *,
        prefetch: Mapping[str, int] | None = None,
        observations: Observations | None = None,
        reach: Mapping[str, Sequence[str]] | None = None,
        locality: bool = False,
        streaming: Collection[str] | None = None,
        mpi: Mapping[str, MPISite] | None = None,
        warmth: WarmMap | None = None,
    ) -> None:
        """Schedule over sites given as ``{site: {slot kind: slots}}``.

        Args:
            capacities: Declared slots per site and kind.
            policy: Placement policy; `Availability` if None.
            prefetch: Tasks a site may hold beyond its live worker count, per site.
            observations: What the policy learns from; shared with ``policy``.
            reach: The data stores each site can read, its own first; a task whose inputs sit
                in stores (``task.stores``) runs only on sites that reach all of them.
            locality: Among otherwise equal sites, prefer one whose own store holds the task's
                inputs.
            streaming: Sites that reach a channel: a task whose method streams intermediate
                results (``task.streams``) runs only there. None: every site.
            mpi: The sites that run a ``GlobusMPIEngine``: their slots count nodes, and only
                tasks with a resource specification (``task.resources.specification``, the
                method's merged under it) run there, on as many nodes as it asks for; a task
                with one runs nowhere else.
            warmth: Where warm keys are held: a task with a warm key (``task.warm_key``) goes
                where its key is warm, weighed against waiting (`colmena_fed.warmth`). None:
                warm keys are not looked at.
        """
        prefetch = prefetch or {}
        self.reach = {name: frozenset(stores) for name, stores in (reach or {}).items()}
        self._home = {name: stores[0] for name, stores in (reach or {}).items() if stores}
        self.locality = locality
        self.streaming = None if streaming is None else frozenset(streaming)
        self.observations = observations or Observations()
        self.policy: Policy = policy or Availability(self.observations)
        self.mpi = dict(mpi or {})
        self.warmth = warmth
        self.sites = {
            name: SiteState(name, dict(slots), prefetch.get(name, 0))
            for name, slots in capacities.items()
        }
        for name, shape in self.mpi.items():
            self.sites[name].nodes_per_block = shape.nodes_per_block
        #: Slot kinds some MPI site offers: tasks of these kinds are checked against the sites.
        self._mpi_slots = {slot for name in self.mpi for slot in capacities[name]}
        self._offering: dict[str, list[SiteState]] = {}
        for site in self.sites.values():
            for slot in site.capacity:
                self._offering.setdefault(slot, []).append(site)
        self._queues: dict[QueueKey, list[_Queued]] = {}
        self._keys: dict[str, list[QueueKey]] = {}
        self._pending: dict[str, _Entry] = {}
        self._waiting: dict[str, int] = {}
        #: Pending tasks in each queue of tasks with a warm key.
        self._warm_backlog: dict[QueueKey, int] = {}
        self._superseding: dict[str, str] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._counter = itertools.count()
        #: Pending tasks the policy raised for while placing them (which may happen while
        #: another task's slot is freed): each left its queue failed, for the caller to end.
        self.refused: list[Result] = []

    @property
    def pending_count(self) -> int:
        """Tasks waiting on the thinker side for a slot."""
        return len(self._pending)

    def pending_by_slot(self) -> dict[str, int]:
        """Pending tasks per slot kind."""
        counts: dict[str, int] = {}
        for entry in self._pending.values():
            counts[entry.key[0]] = counts.get(entry.key[0], 0) + 1
        return counts

    def live_capacity(self, slot: str) -> int:
        """Tasks of kind ``slot`` the federation could hold now, over all online sites."""
        return sum(site.live_capacity(slot) for site in self._offering.get(slot, ()))

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
        elif slot not in self._offering:
            offered = sorted(self._offering)
            raise PlacementError(
                f"task {task.task_id} ({task.method}) needs a {slot!r} slot, which no site "
                f"offers; slot kinds offered: {', '.join(offered)}"
            )
        if task.stores and not self._candidates(task, mpi=False):
            raise PlacementError(
                f"task {task.task_id} ({task.method}) has inputs in store(s) "
                f"{', '.join(task.stores)}, which no site offering a {slot!r} slot reaches"
                + (f" (it asks for site {wanted!r})" if wanted else "")
            )
        if task.streams and not self._candidates(task, mpi=False):
            raise PlacementError(
                f"task {task.task_id} ({task.method}) streams intermediate results, and no site "
                f"offering a {slot!r} slot reaches a channel"
                + (f" (it asks for site {wanted!r}, which reaches none)" if wanted else "")
            )
        if self._checks_mpi(task):
            self._check_mpi(task)

    def _check_mpi(self, task: Result) -> None:
        """Raise `PlacementError` if the task's resource specification fits no site."""
        spec = task.resources.specification
        if spec and set(spec) - set(HTEX_SPECIFICATION_KEYS):
            problem = specification_problem(spec)
            if problem is not None:
                raise PlacementError(
                    f"task {task.task_id} ({task.method}), resource specification: {problem}"
                )
        sites = self._candidates(task, mpi=False)
        if any(self._never(task, site) is None for site in sites):
            return
        reasons = "; ".join(f"{self._never(task, site)}" for site in sites)
        raise PlacementError(
            f"task {task.task_id} ({task.method}) can run on no site offering a "
            f"{task.slot!r} slot: {reasons}"
        )

    def _checks_mpi(self, task: Result) -> bool:
        """Whether MPI sites or the task's specification narrow where it may run."""
        if task.resources.specification:
            return True
        return bool(self.mpi) and task.slot in self._mpi_slots

    def _never(self, task: Result, site: SiteState) -> str | None:
        """Why ``site`` can never run ``task`` as its resource specification asks (None: it can)."""
        shape = self.mpi.get(site.name)
        if shape is None:
            extra = set(task.resources.specification or {}) - set(HTEX_SPECIFICATION_KEYS)
            if extra:
                return (
                    f"site {site.name!r} does not run an MPI engine (GlobusMPIEngine), so its "
                    f"resource specification takes only {', '.join(HTEX_SPECIFICATION_KEYS)}, "
                    f"not {', '.join(sorted(extra))}"
                )
            return None
        spec = {**shape.specification, **(task.resources.specification or {})}
        problem = specification_problem(spec) or launch_problem(spec)
        if problem is not None:
            return f"site {site.name!r} runs an MPI engine, and {problem}"
        nodes = spec["num_nodes"]
        if nodes > shape.nodes_per_block:
            return (
                f"it asks for {nodes} nodes (field 'num_nodes'), but site {site.name!r} has "
                f"blocks of {shape.nodes_per_block} (nodes_per_block in {shape.source})"
            )
        declared = site.capacity.get(task.slot or "", 0)
        if nodes > declared:
            return (
                f"it asks for {nodes} nodes (field 'num_nodes'), but site {site.name!r} offers "
                f"{declared} {task.slot!r} slots (its 'resources' in the sites YAML)"
            )
        return None

    def units(self, task: Result, site: str) -> int:
        """Slots ``task`` takes at ``site``: its nodes at an MPI site, else 1."""
        shape = self.mpi.get(site)
        if shape is None:
            return 1
        nodes = (task.resources.specification or {}).get("num_nodes")
        return int(nodes if nodes is not None else shape.specification["num_nodes"])

    def submit(self, task: Result) -> Step:
        """Queue a new task (``task.slot`` set and checked) and place what can be placed."""
        ended: list[Result] = []
        if task.supersede is not None:
            older = self._pending.get(self._superseding.get(task.supersede, ""))
            if older is not None:
                self._remove(older)
                older.task.fail(
                    "superseded",
                    "Superseded",
                    f"task {task.task_id} with the same supersede key {task.supersede!r} "
                    "replaced it before it was dispatched",
                )
                ended.append(older.task)
        slot, allowed = task.slot or "", self._allowed(task)
        if not self._waiting.get(slot):  # nothing older waits for this kind: place it now
            sites = self._near_first(task, self._online(slot, allowed))
            if self.mpi:
                sites = self._with_room(task, sites, slot)
            if self.warmth is not None and task.warm_key is not None:
                queue = self._queue_key(task, allowed)
                sites = self.warmth.prefer(task, sites, slot, queue, 1) or []
            choice = self.policy.choose(task, sites, 0) if _any_free(sites, slot) else None
            if choice is not None:
                return Step([self._take(task, *choice)], ended)
        if task.supersede is not None:
            self._superseding[task.supersede] = task.task_id
        if task.max_wait is not None:
            heapq.heappush(self._deadlines, (_deadline(task), next(self._counter), task.task_id))
        self._enqueue(task, allowed)
        return Step(self._fill(slot), ended)

    def requeue(self, task: Result, now: float) -> Step:
        """Queue a task again after a site failed it (counted in ``task.retries``).

        When it is placed, a site it has not failed on wins over one it has, if one has a free
        slot. A policy that binds tasks to sites binds it among those it has not failed on
        that are online, if any. Its ``max_wait`` still counts from when it was created.
        """
        if task.max_wait is not None and now >= _deadline(task):
            _expire(task)
            return Step([], [task])
        task.retries += 1
        slot = task.slot or ""
        if task.resources.site is not None:
            allowed = self._allowed(task)
        else:
            failed = {attempt.site for attempt in task.attempts}
            candidates = self._candidates(task)
            others = [s for s in candidates if s.name not in failed and s.online]
            allowed = self._narrowed(task, others or candidates)
        if task.max_wait is not None:
            heapq.heappush(self._deadlines, (_deadline(task), next(self._counter), task.task_id))
        self._enqueue(task, allowed)
        return Step(self._fill(slot), [])

    def adopt(self, task: Result, site: str) -> None:
        """Count ``task`` in flight at ``site``: a resumed run found it still running there."""
        self._take(task, self.sites[site], task.placement or "re-attached after a resume")

    def release(self, site: str, slot: str, units: int = 1) -> list[Placement]:
        """A task of kind ``slot`` left ``site``: free its ``units`` slots and fill free slots.

        A site whose prefetched tasks still keep its workers busy is filled once enough slots
        are free (`SiteState.refill_at`), in one batch.
        """
        state = self.sites[site]
        state.in_flight[slot] -= units
        state.total_in_flight -= 1
        if state.total_in_flight and state.free(slot) < state.refill_at(slot):
            return []  # its prefetched tasks keep its workers busy: top it up in one batch
        return self._fill_site(state)

    def set_status(
        self, site: str, online: bool, workers: int | None = None, managers: int | None = None
    ) -> list[Placement]:
        """Record a site's live state; new room (back online, more workers) is filled at once.

        ``managers`` (worker pools, one per block) sizes an MPI site's live nodes.
        """
        state = self.sites[site]
        state.online, state.workers, state.suspended = online, workers, False
        if state.nodes_per_block is not None:
            state.managers = managers
        if self.warmth is not None:
            self.warmth.status(site, online, workers, managers)
        return self._fill_site(state)  # offline too: tasks waiting for it may go elsewhere

    def suspend(self, site: str) -> None:
        """Send nothing more to ``site`` until its next status report (it just failed a task).

        Without this, a site that fails every task at once would swallow the whole queue,
        one failed attempt per task, before its status caught up.
        """
        self.sites[site].suspended = True

    def observe(self, task: Result) -> None:
        """Learn from a task that finished on a site."""
        self.observations.learn(task)

    def learn_warm(self, site: str, method: str, report: WorkerReport, now: float) -> None:
        """Learn what a worker of ``site`` holds warm from its report, before its slot is used."""
        if self.warmth is not None:
            self.warmth.learn(site, method, report, now)

    def next_deadline(self) -> float | None:
        """When a pending task's ``max_wait`` expires or one stops waiting for a warm site."""
        while self._deadlines and self._deadlines[0][2] not in self._pending:
            heapq.heappop(self._deadlines)
        deadline = self._deadlines[0][0] if self._deadlines else None
        release = self.warmth.next_release() if self.warmth is not None else None
        if release is None or (deadline is not None and deadline <= release):
            return deadline
        return release

    def wake(self, now: float) -> list[Placement]:
        """Forget the warm state of long idle sites; place tasks that waited long enough for one."""
        if self.warmth is None:
            return []
        self.warmth.forget_idle(self.sites, now)
        if not self.warmth.release_due(now):
            return []
        return [placed for slot in list(self._keys) for placed in self._fill(slot)]

    def expire(self, now: float) -> list[Result]:
        """Remove and return the pending tasks whose ``max_wait`` has passed."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, task_id = heapq.heappop(self._deadlines)
            entry = self._pending.get(task_id)
            if entry is not None:
                self._remove(entry)
                _expire(entry.task)
                expired.append(entry.task)
        return expired

    def drain(self) -> list[Result]:
        """Remove and return every pending task (at shutdown)."""
        entries = sorted(self._pending.values(), key=lambda entry: entry.rank)
        for entry in entries:
            self._remove(entry)
        return [entry.task for entry in entries]

    def forget(self, task_id: str) -> bool:
        """Remove a pending task that ended some other way; False if it was not pending."""
        entry = self._pending.get(task_id)
        if entry is None:
            return False
        self._remove(entry)
        return True

    def _allowed(self, task: Result) -> frozenset[str] | None:
        """Sites the task may use: its own request narrowed by the policy (None: any)."""
        wanted = task.resources.site
        if wanted is not None:
            return only(wanted)
        return self._narrowed(task, self._candidates(task))

    def _candidates(self, task: Result, mpi: bool = True) -> list[SiteState]:
        """Sites offering the task's slot kind (and reaching the stores of its inputs).

        With ``mpi``, only those that can run it as its resource specification asks. Not to be
        modified: for most tasks it is the scheduler's own list.
        """
        offering = self._offering.get(task.slot or "", [])
        wanted = task.resources.site
        streaming = self.streaming if task.streams else None
        narrowed = mpi and self._checks_mpi(task)
        if wanted is None and not task.stores and streaming is None and not narrowed:
            return offering
        sites = [s for s in offering if wanted in (None, s.name)]
        if task.stores:
            needed = set(task.stores)
            sites = [s for s in sites if needed <= self.reach.get(s.name, frozenset())]
        if streaming is not None:
            sites = [s for s in sites if s.name in streaming]
        if narrowed:
            sites = [s for s in sites if self._never(task, s) is None]
        return sites

    def _narrowed(self, task: Result, candidates: list[SiteState]) -> frozenset[str] | None:
        """The policy's choice of allowed sites among ``candidates`` (None: all offering)."""
        allowed = self.policy.restrict(task, candidates)
        narrowed = task.stores or (task.streams and self.streaming is not None)
        if allowed is None and (narrowed or self._checks_mpi(task)):
            allowed = frozenset(site.name for site in candidates)
        return allowed

    def _queue_key(self, task: Result, allowed: frozenset[str] | None) -> QueueKey:
        """The queue ``task`` waits in: its slot kind, the sites allowed, its warm key."""
        return (task.slot or "", allowed, task.warm_key if self.warmth is not None else None)

    def _enqueue(self, task: Result, allowed: frozenset[str] | None) -> None:
        key = self._queue_key(task, allowed)
        if key[2] is not None:
            self._warm_backlog[key] = self._warm_backlog.get(key, 0) + 1
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = []
            self._keys.setdefault(key[0], []).append(key)
        entry = _Entry((-task.priority, task.timestamps.created, next(self._counter)), task, key)
        heapq.heappush(queue, (entry.rank, entry))
        self._pending[task.task_id] = entry
        self._waiting[key[0]] = self._waiting.get(key[0], 0) + 1

    def _remove(self, entry: _Entry) -> None:
        entry.alive = False
        del self._pending[entry.task.task_id]
        self._waiting[entry.key[0]] -= 1
        if entry.key[2] is not None:
            self._warm_backlog[entry.key] -= 1
            if not self._warm_backlog[entry.key]:
                assert self.warmth is not None
                self.warmth.drop(entry.key)
        supersede = entry.task.supersede
        if supersede is not None and self._superseding.get(supersede) == entry.task.task_id:
            del self._superseding[supersede]

    def _fill_site(self, site: SiteState) -> list[Placement]:
        placed: list[Placement] = []
        for slot in site.capacity:
            if slot in self._keys:
                placed.extend(self._fill(slot))
        return placed

    def _fill(self, slot: str) -> list[Placement]:
        """Place the best pending tasks of kind ``slot`` while some allowed site has room."""
        keys = self._keys.get(slot)
        if not keys or not self._waiting.get(slot):
            return []
        room = {site.name for site in self._offering[slot] if site.free(slot) > 0}
        placed: list[Placement] = []
        blocked: set[QueueKey] = set()
        while room:
            head: _Entry | None = None
            for key in keys:
                if key in blocked or (key[1] is not None and key[1].isdisjoint(room)):
                    continue
                queue = self._queues[key]
                while queue and not queue[0][1].alive:
                    heapq.heappop(queue)
                if queue and (head is None or queue[0][0] < head.rank):
                    head = queue[0][1]
            if head is None:
                break
            sites = self._near_first(head.task, self._online(slot, head.key[1]))
            if self.mpi:
                sites = self._with_room(head.task, sites, slot)
            if head.task.attempts:
                sites = _untried_first(head.task, sites, slot)
            if head.key[2] is not None:
                warmed = self._warm_sites(head, sites, slot, keys, blocked)
                if warmed is None:  # it waits for a warm site: the others go on
                    blocked.add(head.key)
                    continue
                sites = warmed
            try:
                choice = self.policy.choose(head.task, sites, self._waiting[slot] - 1)
            except Exception as exc:  # that task cannot be placed: it must not block the rest
                heapq.heappop(self._queues[head.key])
                self._remove(head)
                self.refused.append(_refuse(head.task, exc))
                continue
            if choice is None:
                blocked.add(head.key)
                if self.mpi:
                    room -= self._reserved(head, slot)
                continue
            heapq.heappop(self._queues[head.key])
            self._remove(head)
            site, reason = choice
            placed.append(self._take(head.task, site, reason))
            if site.free(slot) <= 0:
                room.discard(site.name)
        self._forget_empty(slot)
        return placed

    def _warm_sites(
        self,
        head: _Entry,
        sites: list[SiteState],
        slot: str,
        keys: list[QueueKey],
        blocked: set[QueueKey],
    ) -> list[SiteState] | None:
        """Where a task with a warm key should go now (None: it waits).

        It gives way to a task of another key, of the same priority, that is warmer on the
        free sites; else it goes to the warmest free sites, or waits for a busy warm one.
        """
        assert self.warmth is not None
        free = [site for site in sites if site.free(slot) > 0]
        others = [
            (key[2], key[1])
            for key in keys
            if key[2] is not None
            and key[2] != head.key[2]
            and key not in blocked
            and self._head_rank(key) == head.rank[0]
        ]
        if others and self.warmth.gives_way(head.task, free, slot, head.key, others):
            return None
        backlog = self._warm_backlog[head.key]
        return self.warmth.prefer(head.task, sites, slot, head.key, backlog)

    def _head_rank(self, key: QueueKey) -> int | None:
        """The priority rank of the first live task of queue ``key`` (None: it is empty)."""
        queue = self._queues[key]
        while queue and not queue[0][1].alive:
            heapq.heappop(queue)
        return queue[0][0][0] if queue else None

    def _with_room(self, task: Result, sites: list[SiteState], slot: str) -> list[SiteState]:
        """The sites with room for all the slots ``task`` takes there (its nodes: MPI sites)."""
        return [site for site in sites if site.free(slot) >= self.units(task, site.name)]

    def _reserved(self, head: _Entry, slot: str) -> set[str]:
        """The MPI site a multi-node task that cannot start yet keeps for itself.

        The highest-ranked task waiting for nodes holds the free nodes of the site it will fit
        on soonest (the one with the most free nodes now): no task ranked after it takes them,
        so a stream of smaller tasks cannot starve it. Smaller tasks still run on the other
        sites meanwhile. Nothing is backfilled around it, since run times are not known.
        """
        sites = [
            site
            for site in self._online(slot, head.key[1])
            if site.name in self.mpi and self._never(head.task, site) is None
        ]
        if not sites or all(self.units(head.task, s.name) <= 1 for s in sites):
            return set()
        return {max(sites, key=lambda site: site.free(slot)).name}

    def _near_first(self, task: Result, sites: list[SiteState]) -> list[SiteState]:
        """With locality on, the sites whose own store holds the task's inputs, first.

        Policies break ties in list order, so among equals the site near the data wins.
        """
        if not (self.locality and task.stores):
            return sites
        return sorted(sites, key=lambda site: self._home.get(site.name) not in task.stores)

    def _online(self, slot: str, allowed: frozenset[str] | None) -> list[SiteState]:
        offering = self._offering[slot]
        if allowed is None:
            return [site for site in offering if site.online]
        return [site for site in offering if site.online and site.name in allowed]

    def _forget_empty(self, slot: str) -> None:
        """Drop queues that emptied, except the common one, so scans stay short."""
        keys = self._keys[slot]
        if len(keys) > 1:
            kept = [k for k in keys if (k[1] is None and k[2] is None) or self._queues[k]]
            for key in keys:
                if key not in kept:
                    del self._queues[key]
                    self._warm_backlog.pop(key, None)
            self._keys[slot] = kept

    def _take(self, task: Result, site: SiteState, reason: str) -> Placement:
        slot = task.slot or ""
        units = self.units(task, site.name) if self.mpi else 1
        site.in_flight[slot] = site.in_flight.get(slot, 0) + units
        site.total_in_flight += 1
        if self.warmth is not None:
            self.warmth.placed(site.name, task.warm_key)
        task.site = site.name
        task.placement = sys.intern(reason)  # a few distinct reasons, shared by many records
        return Placement(task, site.name)


def _untried_first(task: Result, sites: list[SiteState], slot: str) -> list[SiteState]:
    """The sites ``task`` has not failed on, if one has a free slot; else all of them."""
    failed = {attempt.site for attempt in task.attempts}
    untried = [site for site in sites if site.name not in failed]
    return untried if _any_free(untried, slot) else sites


def _any_free(sites: list[SiteState], slot: str) -> bool:
    return any(site.free(slot) > 0 for site in sites)


def _refuse(task: Result, exc: Exception) -> Result:
    task.success = False
    task.failure = FailureInfo(
        kind="system",
        exception_type=type(exc).__name__,
        message=f"placing task {task.task_id} ({task.method}) failed: {exc}",
        traceback=traceback.format_exc(),
    )
    return task


def _deadline(task: Result) -> float:
    """When a task with a ``max_wait`` expires (time with no thinker running not counted)."""
    assert task.max_wait is not None
    return task.timestamps.created + task.max_wait + task.downtime


def _expire(task: Result) -> None:
    task.fail(
        "expired",
        "Expired",
        f"task {task.task_id} ({task.method}) was not dispatched within its max_wait of "
        f"{task.max_wait:g} s",
    )
