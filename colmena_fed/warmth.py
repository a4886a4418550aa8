"""Where each warm key is held, learned from task reports, and whether a task should wait for it.

Methods keep state on their workers with `colmena_fed.warm`; every task reports which keys its
worker holds afterwards, and how long a load took. A `WarmMap` (plain data, owned by the
scheduler) keeps, per site, the keys each worker (hostname, pid) holds, and forgets a site's
workers when its block ends (fewer managers, no workers, offline) or when it has been idle past
its ``forget_after`` (an engine scales idle blocks in after ``max_idletime``).

Placement weighs loading against waiting. A task sent with a warm key costs, at a site with a
free slot, the load it will probably pay there: ``(1 - warm fraction) x load time``, where the
warm fraction is the share of the site's workers that hold the key (an engine hands a task to
any idle worker of the site). Among free sites the cheapest wins. The task instead waits for a
busy warm site when that site's warm workers are expected to drain the key's backlog (the
waiting tasks with the same key) sooner than the load would take, and for no longer than that
load time: a warm site busy for an hour loses to a cold one free now.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

import yaml

from colmena_fed import clock
from colmena_fed.policies import LEARNING_RATE, SiteState

if TYPE_CHECKING:
    from colmena_fed.models import Result
    from colmena_fed.sites import SitesConfig
    from colmena_fed.worker import WorkerReport

#: Globus Compute's default ``max_idletime``: an idle block above ``min_blocks`` ends after it.
DEFAULT_FORGET_AFTER_S = 120.0

#: A worker of a site: (hostname, pid), as the task's report names it.
WorkerId = tuple[str, int]


class _Site:
    """What one site's workers hold: keys per worker, how many hold each key, which are idle."""

    __slots__ = ("active", "counts", "held", "idle", "live", "managers", "seen")

    def __init__(self) -> None:
        self.held: dict[WorkerId, frozenset[str]] = {}
        self.seen: dict[WorkerId, float] = {}
        self.counts: dict[str, int] = {}
        #: Workers that reported a task and have (as far as is known) taken none since.
        self.idle: set[WorkerId] = set()
        self.live: int | None = None
        self.managers: int | None = None
        self.active = 0.0

    def set(self, worker: WorkerId, keys: frozenset[str], now: float) -> None:
        self.drop(worker)
        self.held[worker], self.seen[worker] = keys, now
        self.idle.add(worker)
        for key in keys:
            self.counts[key] = self.counts.get(key, 0) + 1

    def drop(self, worker: WorkerId) -> None:
        for key in self.held.pop(worker, ()):
            left = self.counts[key] - 1
            if left:
                self.counts[key] = left
            else:
                del self.counts[key]
        self.seen.pop(worker, None)
        self.idle.discard(worker)

    def clear(self) -> None:
        self.held.clear()
        self.seen.clear()
        self.counts.clear()
        self.idle.clear()

    def trim(self) -> None:
        """Drop the workers heard from longest ago beyond the live worker count (replaced)."""
        if self.live is None or len(self.held) <= self.live:
            return
        for worker in sorted(self.seen, key=self.seen.__getitem__)[: len(self.held) - self.live]:
            self.drop(worker)

    def workers(self) -> int:
        return max(len(self.held), self.live or 0)

    def idle_holding(self, key: str) -> int:
        return sum(key in self.held[worker] for worker in self.idle)

    def take_idle(self, key: str | None) -> None:
        """A task went to the site: an idle worker takes it, one holding ``key`` if any.

        With one idle worker (the common case: a slot freed as its task ended) this is the
        worker the engine hands it to; among several the engine picks any.
        """
        if not self.idle:
            return
        chosen = next((w for w in self.idle if key is not None and key in self.held[w]), None)
        if chosen is None:
            chosen = min(self.idle, key=lambda worker: len(self.held[worker]))
        self.idle.discard(chosen)


class WarmMap:
    """Where each key is warm, how long it takes to load, and which tasks wait for it."""

    def __init__(self, forget_after: Mapping[str, float | None]) -> None:
        """Track the sites in ``forget_after`` (None: a site never forgets while idle)."""
        self.forget_after = dict(forget_after)
        self._sites = {name: _Site() for name in forget_after}
        self._load: dict[str, float] = {}
        self._method_load: dict[str, float] = {}
        self._work: dict[str, float] = {}
        self._holds: dict[Hashable, float] = {}
        self._released: set[Hashable] = set()

    def learn(self, name: str, method: str, report: WorkerReport, now: float) -> None:
        """Learn from a task's report what its worker holds now and what its loads took."""
        site = self._sites.get(name)
        if site is None or report.warm is None:
            return
        uses, held = report.warm
        site.active = now
        site.set((report.hostname, report.pid), frozenset(held), now)
        site.trim()
        loaded = 0.0
        for key, hit, load_s in uses:
            if not hit:
                loaded += load_s
                self._load[key] = _average(self._load.get(key), load_s)
                self._method_load[method] = _average(self._method_load.get(method), load_s)
        if report.success and uses:
            run = max(report.compute_ended - report.compute_started - loaded, 0.0)
            self._work[method] = _average(self._work.get(method), run)

    def placed(self, name: str, key: str | None) -> None:
        """A task (with warm key ``key``, or None) was sent to ``name``."""
        site = self._sites.get(name)
        if site is not None:
            site.take_idle(key)

    def status(self, name: str, online: bool, workers: int | None, managers: int | None) -> None:
        """A site's live state: a block that ended (or no workers, or offline) took its keys."""
        site = self._sites[name]
        ended = managers is not None and site.managers is not None and managers < site.managers
        if not online or workers == 0 or ended:
            site.clear()
        if online:
            site.managers = managers
        site.live = workers if online else 0
        site.trim()

    def forget(self, name: str) -> None:
        """Count on nothing warm at ``name`` any more."""
        self._sites[name].clear()

    def forget_idle(self, sites: Mapping[str, SiteState], now: float) -> None:
        """Forget the sites with nothing in flight for longer than their ``forget_after``."""
        for name, after in self.forget_after.items():
            site = self._sites[name]
            idle = not sites[name].total_in_flight
            if after is not None and site.held and idle and now - site.active > after:
                site.clear()

    def fraction(self, name: str, key: str) -> float:
        """The share of the site's workers holding ``key`` (0 when none is known)."""
        site = self._sites[name]
        count = site.counts.get(key, 0)
        return count / site.workers() if count else 0.0

    def free_fraction(self, state: SiteState, key: str, slot: str) -> float:
        """The chance that a task with ``key`` sent to a site with room lands on a warm worker.

        Its idle workers take it: the share of them holding the key, counting the free slots
        of workers not heard from yet as cold (a site that queues tasks beyond its workers is
        taken at its overall fraction).
        """
        site = self._sites[state.name]
        if key not in site.counts:
            return 0.0
        free = state.free(slot)
        if state.workers is not None and state.total_in_flight >= state.workers:
            return self.fraction(state.name, key)  # queued there: the next worker to free
        return min(1.0, site.idle_holding(key) / max(free, len(site.idle), 1))

    def held(self, name: str) -> dict[str, int]:
        """Workers holding each key at ``name``."""
        return dict(self._sites[name].counts)

    def load_time(self, key: str, method: str) -> float | None:
        """Seconds a load of ``key`` is expected to take: learned for it, else for its method."""
        load = self._load.get(key)
        return self._method_load.get(method) if load is None else load

    def prefer(
        self, task: Result, sites: Sequence[SiteState], slot: str, queue: Hashable, backlog: int
    ) -> list[SiteState] | None:
        """The sites among ``sites`` to place ``task`` (its ``warm_key`` set) on; None: wait.

        ``queue`` names the scheduler's queue it heads, and ``backlog`` counts the tasks in
        it, itself included. The tasks of a queue wait together: once its head has waited as
        long as a load would take, the whole queue goes wherever is free, until one of its
        tasks finds a warm slot free again (the next one then may wait one load again).
        """
        key = task.warm_key
        assert key is not None
        free = [site for site in sites if site.free(slot) > 0]
        if not free:
            return list(sites)
        warmth = {site.name: self.free_fraction(site, key, slot) for site in free}
        best = max(warmth.values())
        if best < 1.0 and self._waits(task, sites, slot, queue=queue, best=best, backlog=backlog):
            return None
        if best > 0.0:
            self.drop(queue)
        warmest = [site for site in free if warmth[site.name] == best]
        return self._least_held(warmest, key) if len(warmest) > 1 else warmest

    def gives_way(
        self,
        task: Result,
        free: Sequence[SiteState],
        slot: str,
        queue: Hashable,
        others: Sequence[tuple[str, frozenset[str] | None]],
    ) -> bool:
        """Whether ``task`` lets another key's task take the free slots warm first.

        ``others`` are the warm keys (and the sites allowed) of the tasks heading the other
        queues of the same slot kind and priority. If one of them is warmer on a free site
        than ``task`` would be anywhere free, ``task`` waits, at most as long as its own load
        would take, and that task takes the slot.
        """
        key = task.warm_key
        assert key is not None
        load = self.load_time(key, task.method)
        if load is None or not free or queue in self._released:
            return False
        best = max(self.free_fraction(site, key, slot) for site in free)
        if best >= 1.0:
            return False
        warmer = any(
            self.free_fraction(site, other, slot) > best
            for other, allowed in others
            for site in free
            if allowed is None or site.name in allowed
        )
        return warmer and self._hold(queue, (1.0 - best) * load)

    def _waits(
        self,
        task: Result,
        sites: Sequence[SiteState],
        slot: str,
        *,
        queue: Hashable,
        best: float,
        backlog: int,
    ) -> bool:
        """Whether ``task`` should wait for busy sites warmer than the best free one.

        It waits when their warm workers are expected to run the tasks with its key that wait
        (``backlog``) before a load at the best free site would end.
        """
        key, work = task.warm_key, self._work.get(task.method)
        load = self.load_time(key or "", task.method)
        if work is None or load is None or queue in self._released:
            return False
        warm_slots = 0.0
        for site in sites:
            if site.free(slot) <= 0:
                warmth = self.fraction(site.name, key or "")
                if warmth > best:
                    warm_slots += (warmth - best) * site.running_slots(slot)
        cost_now = (1.0 - best) * load
        if warm_slots <= 0 or work * backlog / warm_slots >= cost_now:
            return False
        return self._hold(queue, cost_now)

    def _hold(self, queue: Hashable, longest: float) -> bool:
        """Keep ``queue`` waiting, at most ``longest`` seconds from when it first waited.

        The clock is the queue's, not its head's: the tasks of a backlog then wait one load
        in all, not one load per task before them.
        """
        now = clock.now()
        until = self._holds.setdefault(queue, now + longest)
        if now < until:
            return True
        self.release(queue)
        return False

    def _least_held(self, sites: list[SiteState], key: str) -> list[SiteState]:
        """Of equally warm ``sites``, those whose workers hold the fewest other keys.

        A cold task then loads where it evicts the least that other tasks count on.
        """

        def others(site: SiteState) -> float:
            state = self._sites[site.name]
            held = sum(count for held, count in state.counts.items() if held != key)
            return held / (state.workers() or 1)

        fewest = min(others(site) for site in sites)
        return [site for site in sites if others(site) == fewest]

    def release(self, queue: Hashable) -> None:
        """``queue`` waited as long as it may: its tasks go wherever is free from now on."""
        self._holds.pop(queue, None)
        self._released.add(queue)

    def drop(self, queue: Hashable) -> None:
        """``queue`` emptied, or found a warm slot: its next head may wait for one again."""
        self._holds.pop(queue, None)
        self._released.discard(queue)

    def next_release(self) -> float | None:
        """When the first task waiting for a warm site stops waiting, if one waits."""
        return min(self._holds.values(), default=None)

    def release_due(self, now: float) -> bool:
        """Release the tasks that waited long enough; whether there were any."""
        due = [queue for queue, until in self._holds.items() if until <= now]
        for queue in due:
            self.release(queue)
        return bool(due)


def _average(old: float | None, sample: float) -> float:
    return sample if old is None else old + LEARNING_RATE * (sample - old)


def forget_after(config: SitesConfig) -> dict[str, float | None]:
    """Per site, seconds idle after which its warm state is not counted on.

    A site's ``warm.forget_after`` if given; else a `local` site's engine ``max_idletime``
    (its endpoint YAML), a `globus` site's Globus Compute default, and never for a `sim` site
    (its workers stay).
    """
    from colmena_fed.backends.engine import engine_config_text  # loads Globus Compute's endpoint

    found: dict[str, float | None] = {}
    for name, site in config.sites.items():
        after: float | None = site.warm.forget_after
        if after is None and site.sim is None:
            after = DEFAULT_FORGET_AFTER_S
            if site.local is not None:
                after = _max_idletime(engine_config_text(site.local, site.user_endpoint_config))
        found[name] = after
    return found


def _max_idletime(config_text: str) -> float:
    """An endpoint YAML's engine ``max_idletime`` (under ``job_status_kwargs``), or the default."""
    data = yaml.safe_load(config_text)
    engine = data.get("engine") if isinstance(data, dict) else None
    kwargs = engine.get("job_status_kwargs") if isinstance(engine, dict) else None
    value = kwargs.get("max_idletime") if isinstance(kwargs, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_FORGET_AFTER_S
