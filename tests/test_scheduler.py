"""The availability policy and late binding, on plain data (nothing started)."""

from __future__ import annotations

import pytest

from colmena_fed.models import ResourceRequest, Result
from colmena_fed.scheduler import PlacementError, Scheduler


def task(slot: str = "cpu", site: str | None = None) -> Result:
    return Result(method="m", slot=slot, resources=ResourceRequest(site=site))


def test_most_free_slots_wins_and_ties_go_to_the_first_site() -> None:
    scheduler = Scheduler({"a": {"cpu": 2}, "b": {"cpu": 3}})
    first = scheduler.submit(task())
    assert first is not None
    assert first.site == "b"
    second = scheduler.submit(task())
    assert second is not None
    assert second.site == "a"
    assert "2 of 2 cpu slots free" in (second.task.placement or "")


def test_tasks_wait_on_the_thinker_side_until_a_slot_frees() -> None:
    scheduler = Scheduler({"a": {"gpu": 1}})
    assert scheduler.submit(task("gpu")) is not None
    waiting = [task("gpu"), task("gpu")]
    assert all(scheduler.submit(t) is None for t in waiting)
    assert scheduler.pending_count == 2
    assert scheduler.pending_by_slot() == {"gpu": 2}
    (placed,) = scheduler.release("a", "gpu")
    assert placed.task is waiting[0]
    assert scheduler.pending_count == 1


def test_a_pinned_task_waits_for_its_site_while_others_pass_it() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}, "b": {"cpu": 1}})
    assert scheduler.submit(task()) is not None
    assert scheduler.submit(task()) is not None
    pinned, free = task(site="a"), task()
    assert scheduler.submit(pinned) is None
    assert scheduler.submit(free) is None
    (placed,) = scheduler.release("b", "cpu")
    assert placed.task is free
    (placed,) = scheduler.release("a", "cpu")
    assert placed.task is pinned


def test_offline_site_gets_nothing_until_it_returns() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    scheduler.set_online("a", False)
    queued = task()
    assert scheduler.submit(queued) is None
    (placed,) = scheduler.set_online("a", True)
    assert placed.task is queued


def test_drain_returns_every_pending_task() -> None:
    scheduler = Scheduler({"a": {"cpu": 1}})
    scheduler.submit(task())
    rest = [task(), task()]
    for t in rest:
        scheduler.submit(t)
    assert scheduler.drain() == rest
    assert scheduler.pending_count == 0


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
