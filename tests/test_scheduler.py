"""Placement on plain data: policies, priorities, staleness and live capacity (nothing started)."""

from __future__ import annotations

import pytest

from colmena_fed.models import Attempt, ResourceRequest, Result
from colmena_fed.policies import (
    Fastest,
    Observations,
    RoundRobin,
    SiteState,
    Static,
    make_policy,
)
from colmena_fed.scheduler import PlacementError, Scheduler


def task(
    slot: str = "cpu",
    site: str | None = None,
    method: str = "m",
    **fields: object,
) -> Result:
    return Result.model_validate(
        {"method": method, "slot": slot, "resources": ResourceRequest(site=site), **fields}
    )


def placed_sites(scheduler: Scheduler, tasks: list[Result]) -> list[str | None]:
    sites = []
    for t in tasks:
        placed, _ = scheduler.submit(t)
        sites.append(placed[0].site if placed else None)
    return sites


def finished(site: str, method: str, run: float, dispatched: float = 0.0) -> Result:
    """A task that ran ``run`` seconds on ``site`` (round trip 0.1 s)."""
    done = task(method=method, site=site, success=True)
    done.site = site
    stamps = done.timestamps
    stamps.dispatched, stamps.compute_started = dispatched, dispatched + 0.05
    stamps.compute_ended, stamps.received = dispatched + 0.05 + run, dispatched + 0.1 + run
    return done


def run_times(**seconds: float) -> Observations:
    """Observations of method 'm' having run the given seconds on each named site."""
    learned = Observations()
    for site, run in seconds.items():
        learned.learn(finished(site, "m", run))
    return learned


def test_availability_picks_most_free_slots_and_ties_go_to_the_first_site() -> None:
    scheduler = Scheduler({"a": {"cpu": 2}, "b": {"cpu": 3}})
    assert placed_sites(scheduler, [task(), task()]) == ["b", "a"]
    second = scheduler.sites["a"]
    assert second.in_flight == {"cpu": 1}


def test_availability_breaks_ties_by_observed_speed() -> None:
    scheduler = Scheduler({"slow": {"cpu": 1}, "quick": {"cpu": 1}})
    scheduler.observe(finished("slow", "m", 3.0))
    scheduler.observe(finished("quick", "m", 1.0))
    assert placed_sites(scheduler, [task(), task()]) == ["quick", "slow"]


def test_tasks_wait_on_the_thinker_side_until_a_slot_frees() -> None:
    scheduler = Scheduler({"a": {"gpu": 1}})
    first, *waiting = [task("gpu") for _ in range(3)]
    assert placed_sites(scheduler, [first, *waiting]) == ["a", None, None]
    assert scheduler.pending_count == 2
    assert scheduler.pending_by_slot() == {"gpu": 2}
    (placed,) = scheduler.release("a", "gpu")
    assert placed.task is waiting[0]
    assert scheduler.pending_count == 1


def test_topic_priority_goes_first_then_fifo() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    placed_sites(scheduler, [task()])
    low, high, high_later = task(priority=0), task(priority=5), task(priority=5)
    placed_sites(scheduler, [low, high, high_later])
    order = [scheduler.release("a", "cpu")[0].task for _ in range(3)]
    assert order == [high, high_later, low]


def test_a_pinned_task_waits_for_its_site_while_others_pass_it() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"cpu": 1}})
    placed_sites(scheduler, [task(), task()])
    pinned, free = task(site="a"), task()
    assert placed_sites(scheduler, [pinned, free]) == [None, None]
    (placed,) = scheduler.release("b", "cpu")
    assert placed.task is free
    (placed,) = scheduler.release("a", "cpu")
    assert placed.task is pinned


def test_live_workers_cap_the_slots_and_prefetch_adds_to_them() -> None:
    scheduler = Scheduler({"a": {"cpu": 8}}, prefetch={"a": 1})
    assert scheduler.set_status("a", True, workers=0) == []
    first, second, third = task(), task(), task()
    assert placed_sites(scheduler, [first, second, third]) == ["a", None, None]
    assert scheduler.live_capacity("cpu") == 1
    placed = scheduler.set_status("a", True, workers=2)  # the batch job started
    assert [p.task for p in placed] == [second, third]
    assert scheduler.live_capacity("cpu") == 3
    assert scheduler.set_status("a", False) == []
    assert scheduler.live_capacity("cpu") == 0


def test_a_prefetching_site_is_topped_up_in_batches_that_keep_its_workers_busy() -> None:
    scheduler = Scheduler({"a": {"cpu": 8}, "b": {"cpu": 1}}, prefetch={"a": 6})
    scheduler.set_status("a", True, workers=2)
    scheduler.set_status("b", True, workers=1)
    tasks = [task(site="a") for _ in range(12)]
    assert placed_sites(scheduler, tasks).count("a") == 8
    # 2 workers + 6 prefetched: refilled once 3 slots are free, 5 tasks still there.
    assert scheduler.release("a", "cpu") == []
    assert scheduler.release("a", "cpu") == []
    assert [p.task for p in scheduler.release("a", "cpu")] == tasks[8:11]
    # A site without prefetch is refilled as each task leaves it.
    placed_sites(scheduler, [task(site="b"), waiting := task(site="b")])
    assert [p.task for p in scheduler.release("b", "cpu")] == [waiting]


def test_offline_site_gets_nothing_until_it_returns() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    scheduler.set_status("a", False)
    queued = task()
    assert placed_sites(scheduler, [queued]) == [None]
    (placed,) = scheduler.set_status("a", True)
    assert placed.task is queued


def test_a_retry_avoids_the_site_that_failed_it_when_another_can_run_it() -> None:
    scheduler = Scheduler({"a": {"cpu": 2}, "b": {"cpu": 1}})
    retried = task()
    retried.attempts.append(Attempt(site="a", dispatched=0.0, reason="WorkerLost"))
    placed, ended = scheduler.requeue(retried, now=1.0)
    assert (placed[0].site, ended) == ("b", [])


def test_a_retry_goes_back_to_the_only_site_that_can_run_it() -> None:
    scheduler = Scheduler({"a": {"gpu": 1}, "b": {"cpu": 1}})
    retried = task("gpu")
    retried.attempts.append(Attempt(site="a", dispatched=0.0, reason="WorkerLost"))
    placed, _ = scheduler.requeue(retried, now=1.0)
    assert placed[0].site == "a"


def test_a_newer_task_supersedes_the_pending_one_with_the_same_key() -> None:
    scheduler = Scheduler({"a": {"gpu": 1}})
    running = task("gpu", supersede="retrain")
    older, newer = task("gpu", supersede="retrain"), task("gpu", supersede="retrain")
    scheduler.submit(running)
    scheduler.submit(older)
    placed, ended = scheduler.submit(newer)
    assert (placed, ended) == ([], [older])
    assert older.failure is not None
    assert older.failure.kind == "superseded"
    assert newer.task_id in older.failure.message
    assert running.failure is None  # dispatched work is never superseded
    assert scheduler.release("a", "gpu")[0].task is newer


def test_pending_tasks_expire_after_max_wait() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    busy = task()
    patient, hasty = task(), task(max_wait=5.0)
    placed_sites(scheduler, [busy, patient, hasty])
    created = hasty.timestamps.created
    assert scheduler.next_deadline() == created + 5.0
    assert scheduler.expire(created + 4.9) == []
    assert scheduler.expire(created + 5.0) == [hasty]
    assert hasty.failure is not None
    assert hasty.failure.kind == "expired"
    assert "max_wait of 5 s" in hasty.failure.message
    assert scheduler.next_deadline() is None
    assert scheduler.pending_count == 1


def test_a_retry_past_its_max_wait_expires_instead_of_running_stale() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    stale = task(max_wait=1.0)
    placed, ended = scheduler.requeue(stale, now=stale.timestamps.created + 2.0)
    assert (placed, ended) == ([], [stale])


def test_drain_returns_every_pending_task_in_order() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    scheduler.submit(task())
    rest = [task(), task(), task(priority=1)]
    for t in rest:
        scheduler.submit(t)
    assert scheduler.drain() == [rest[2], rest[0], rest[1]]
    assert scheduler.pending_count == 0


def sites(*states: SiteState) -> list[SiteState]:
    return list(states)


def test_fastest_waits_for_a_busy_fast_site_rather_than_run_slowly() -> None:
    learned = run_times(fast=1.0, slow=10.0)
    fast = SiteState("fast", {"cpu": 2}, in_flight={"cpu": 2}, total_in_flight=2)
    slow = SiteState("slow", {"cpu": 2})
    assert Fastest(learned).choose(task(), sites(fast, slow), 0) is None
    fast.in_flight["cpu"] = 1
    choice = Fastest(learned).choose(task(), sites(fast, slow), 0)
    assert choice is not None
    assert choice[0] is fast
    assert "expected to finish" in choice[1]


def test_fastest_uses_a_slow_site_when_the_fast_one_is_swamped() -> None:
    learned = run_times(fast=1.0, slow=2.0)
    fast = SiteState("fast", {"cpu": 1}, in_flight={"cpu": 5}, total_in_flight=5)
    slow = SiteState("slow", {"cpu": 1})
    choice = Fastest(learned).choose(task(), sites(fast, slow), 0)
    assert choice is not None
    assert choice[0] is slow


def test_fastest_tries_sites_it_knows_nothing_about_by_availability() -> None:
    a, b = SiteState("a", {"cpu": 1}), SiteState("b", {"cpu": 3})
    choice = Fastest(Observations()).choose(task(), sites(a, b), 0)
    assert choice is not None
    assert choice[0] is b


def test_round_robin_binds_each_task_to_the_next_site_in_turn() -> None:
    policy = RoundRobin()
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"cpu": 5}}, policy=policy)
    assert placed_sites(scheduler, [task() for _ in range(4)]) == ["a", "b", None, "b"]
    assert scheduler.release("a", "cpu")[0].site == "a"


def test_static_sends_each_method_to_its_site_and_the_rest_by_availability() -> None:
    learned = Observations()
    policy = Static({"sim": "a"}, learned)
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"cpu": 4}}, policy=policy)
    mapped = [task(method="sim"), task(method="sim")]
    assert placed_sites(scheduler, [*mapped, task(method="other")]) == ["a", None, "b"]


def test_unknown_policy_names_the_policies() -> None:
    with pytest.raises(ValueError, match="availability, fastest, round_robin, static"):
        make_policy("cheapest", Observations())


@pytest.mark.parametrize(
    ("slot", "site", "expected"),
    [
        ("tpu", None, "needs a 'tpu' slot, which no site offers; slot kinds offered: cpu, gpu"),
        ("cpu", "c", "asks for site 'c', which does not exist; sites: a, b"),
        ("cpu", "b", "needs a 'cpu' slot but site 'b' offers only gpu"),
    ],
)
def test_unplaceable_tasks_are_named(slot: str, site: str | None, expected: str) -> None:
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"gpu": 1}})
    with pytest.raises(PlacementError, match=expected):
        scheduler.check(task(slot, site))


def test_fastest_spreads_a_long_queue_over_slow_sites_too() -> None:
    learned = run_times(fast=1.0, slow=3.0)
    fast = SiteState("fast", {"cpu": 2}, in_flight={"cpu": 2}, total_in_flight=2)
    slow = SiteState("slow", {"cpu": 2})
    assert Fastest(learned).choose(task(), sites(fast, slow), waiting=0) is None
    choice = Fastest(learned).choose(task(), sites(fast, slow), waiting=20)
    assert choice is not None
    assert choice[0] is slow


def test_round_robin_binds_a_retry_to_a_site_that_has_not_failed_it() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"cpu": 1}}, policy=RoundRobin())
    retried = [task() for _ in range(3)]
    for t in retried:
        t.attempts.append(Attempt(site="a", dispatched=0.0, reason="WorkerLost"))
        scheduler.requeue(t, now=1.0)
    assert scheduler.sites["b"].in_flight == {"cpu": 1}
    assert scheduler.sites["a"].in_flight == {}  # free, but every retry avoids it
    assert scheduler.pending_count == 2


def test_a_retry_keeps_its_max_wait() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    scheduler.submit(task())
    retried = task(max_wait=5.0)
    retried.attempts.append(Attempt(site="a", dispatched=0.0, reason="WorkerLost"))
    created = retried.timestamps.created
    assert scheduler.requeue(retried, now=created + 1) == ([], [])
    assert scheduler.expire(created + 5.0) == [retried]


def test_a_retry_goes_back_to_its_site_when_every_other_one_is_offline() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"cpu": 1}})
    scheduler.set_status("b", False)
    retried = task()
    retried.attempts.append(Attempt(site="a", dispatched=0.0, reason="WorkerLost"))
    placed, _ = scheduler.requeue(retried, now=1.0)
    assert [p.site for p in placed] == ["a"]


def test_a_task_with_stored_inputs_runs_only_where_the_store_is_reachable() -> None:
    reach = {"a": ["nfs"], "b": ["cache"], "c": ["cache", "nfs"]}
    scheduler = Scheduler({"a": {"cpu": 2}, "b": {"cpu": 9}, "c": {"cpu": 1}}, reach=reach)
    stored = [task(stores=["nfs"]) for _ in range(4)]
    assert placed_sites(scheduler, stored) == ["a", "a", "c", None]  # b has room, not the data
    with pytest.raises(PlacementError, match="store\\(s\\) nfs, which no site offering"):
        scheduler.check(task(site="b", stores=["nfs"]))


def test_locality_sends_a_task_to_the_site_whose_own_store_holds_its_inputs() -> None:
    reach = {"far": ["cache", "nfs"], "near": ["nfs"]}
    for locality, expected in ((False, "far"), (True, "near")):
        scheduler = Scheduler(
            {"far": {"cpu": 2}, "near": {"cpu": 2}}, reach=reach, locality=locality
        )
        assert placed_sites(scheduler, [task(stores=["nfs"])]) == [expected]
