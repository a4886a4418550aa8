"""Warm workers: state a method keeps between tasks, and placement that goes where it is warm."""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from colmena_fed import Method, SitesConfig, TaskQueues, TaskServer, clock, warm
from colmena_fed.errors import ConfigError
from colmena_fed.models import ResourceRequest, Result
from colmena_fed.scheduler import Scheduler
from colmena_fed.warmth import WarmMap
from colmena_fed.worker import WorkerReport
from colmena_fed.worker_cache import CacheBounds, WarmCache

ENDPOINTS = Path(__file__).resolve().parent.parent / "endpoints"

LOAD_S = 1.0


def crash() -> None:
    """Kill this worker process, as an out-of-memory kill would."""
    os._exit(9)


def load(key: str, seconds: float) -> str:
    """A model that takes ``seconds`` to load."""
    time.sleep(seconds)
    return f"model {key}"


def infer(key: str, load_s: float = LOAD_S) -> str:
    """Load the model ``key`` unless this worker holds it, then use it."""
    return warm(key, functools.partial(load, key, load_s))


# --- plain data: the scheduler and what it learns (nothing started) --------------------------


class Clock:
    """A clock the test moves by hand (the scheduler reads `colmena_fed.clock`)."""

    def __init__(self) -> None:
        self.now = 1000.0
        clock.install(lambda: self.now)


@pytest.fixture
def moved() -> Iterator[Clock]:
    yield Clock()
    clock.install(None)


def warm_task(key: str, method: str = "infer", **fields: object) -> Result:
    return Result.model_validate(
        {"method": method, "slot": "gpu", "warm_key": key, "resources": ResourceRequest(), **fields}
    )


def report(
    site: str, worker: int, held: tuple[str, ...], load_s: float, run_s: float, key: str
) -> WorkerReport:
    """What a worker of ``site`` reports after a task that used ``key``."""
    return WorkerReport(
        True,
        None,
        None,
        None,
        None,
        0.0,
        run_s,
        site,
        worker,
        None,
        warm=(((key, load_s == 0.0, load_s),), held),
    )


def two_sites(workers: int = 1, **warmth: float | None) -> Scheduler:
    names = ("a", "b")
    return Scheduler(
        {name: {"gpu": workers} for name in names},
        warmth=WarmMap({name: warmth.get(name) for name in names}),
    )


def finish(
    scheduler: Scheduler,
    placed: Result,
    worker: int,
    held: tuple[str, ...],
    load_s: float,
    run_s: float = 5.0,
) -> list[str]:
    """The task placed ends on its worker: the scheduler learns, frees the slot, places more."""
    assert placed.site is not None
    assert placed.warm_key is not None
    scheduler.learn_warm(
        placed.site,
        placed.method,
        report(placed.site, worker, held, load_s, run_s, placed.warm_key),
        clock.now(),
    )
    return [p.task.task_id for p in scheduler.release(placed.site, "gpu")]


def test_a_task_goes_to_the_free_site_whose_idle_worker_holds_its_key(moved: Clock) -> None:
    scheduler = two_sites()
    first = warm_task("m1", resources=ResourceRequest(site="b"))
    assert scheduler.submit(first).placed[0].site == "b"
    finish(scheduler, first, 0, ("m1",), load_s=30.0)
    # Both sites are free; availability alone would pick the first, 'a'.
    assert [p.site for p in scheduler.submit(warm_task("m1")).placed] == ["b"]
    assert scheduler.submit(warm_task("m2")).placed[0].site == "a"


def test_a_task_waits_for_a_busy_warm_site_but_no_longer_than_its_load(moved: Clock) -> None:
    scheduler = two_sites()
    first = warm_task("m1", resources=ResourceRequest(site="b"))
    scheduler.submit(first)
    finish(scheduler, first, 0, ("m1",), load_s=30.0)
    busy = warm_task("m1")
    assert scheduler.submit(busy).placed[0].site == "b"
    waiting = warm_task("m1")
    assert scheduler.submit(waiting).placed == []  # 'a' is free, but 5 s at 'b' beats 30 s
    assert scheduler.next_deadline() == pytest.approx(moved.now + 30.0)
    moved.now += 31.0
    assert [p.site for p in scheduler.wake(moved.now)] == ["a"]


def test_tasks_queued_for_a_busy_warm_site_each_wait_at_most_one_load(moved: Clock) -> None:
    scheduler = Scheduler(
        {"a": {"gpu": 2}, "b": {"gpu": 1}}, warmth=WarmMap({"a": None, "b": None})
    )
    first = warm_task("m1", resources=ResourceRequest(site="b"))
    scheduler.submit(first)
    finish(scheduler, first, 0, ("m1",), load_s=30.0)
    scheduler.submit(warm_task("m1"))  # 'b' is busy with it
    waiting = [warm_task("m1") for _ in range(2)]
    assert [p for t in waiting for p in scheduler.submit(t).placed] == []
    moved.now += 31.0
    # Both were sent 31 s ago: the second waited no longer for being behind the first.
    assert [p.site for p in scheduler.wake(moved.now)] == ["a", "a"]


def test_a_long_backlog_behind_a_busy_warm_site_loads_on_a_free_cold_one(moved: Clock) -> None:
    scheduler = two_sites()
    first = warm_task("m1", resources=ResourceRequest(site="b"))
    scheduler.submit(first)
    finish(scheduler, first, 0, ("m1",), load_s=2.0)
    tasks = [warm_task("m1") for _ in range(5)]
    placed = [p.site for t in tasks for p in scheduler.submit(t).placed]
    # 5 tasks of 5 s each on 'b' alone would take longer than one 2 s load at 'a'.
    assert placed == ["b", "a"]


def test_a_task_lets_one_of_another_key_take_a_slot_warm_for_it_first(moved: Clock) -> None:
    scheduler = two_sites()
    seeds = [
        warm_task("m1", resources=ResourceRequest(site="a")),
        warm_task("m2", resources=ResourceRequest(site="b")),
    ]
    for seed in seeds:
        scheduler.submit(seed)
    first, second = warm_task("m1"), warm_task("m2")
    assert scheduler.submit(first).placed == []
    assert scheduler.submit(second).placed == []
    # 'b' frees first, warm for m2: m2 takes it, though m1 came first.
    assert finish(scheduler, seeds[1], 0, ("m2",), load_s=10.0) == [second.task_id]
    assert finish(scheduler, seeds[0], 0, ("m1",), load_s=10.0) == [first.task_id]


def test_warm_state_is_forgotten_when_a_block_ends_or_the_site_idles(moved: Clock) -> None:
    scheduler = two_sites(a=60.0)
    warmth = scheduler.warmth
    assert warmth is not None
    for site in ("a", "b"):
        scheduler.set_status(site, True, workers=1, managers=1)
        seed = warm_task("m1", resources=ResourceRequest(site=site))
        scheduler.submit(seed)
        finish(scheduler, seed, 0, ("m1",), load_s=3.0)
    assert warmth.fraction("a", "m1") == warmth.fraction("b", "m1") == 1.0
    scheduler.set_status("b", True, workers=1, managers=0)  # its block ended
    assert warmth.fraction("b", "m1") == 0.0
    moved.now += 61.0
    scheduler.wake(moved.now)  # idle past its forget_after (the engine's max_idletime)
    assert warmth.fraction("a", "m1") == 0.0


def test_a_worker_replaced_at_a_site_no_longer_counts_as_warm(moved: Clock) -> None:
    scheduler = two_sites(workers=2)
    warmth = scheduler.warmth
    assert warmth is not None
    for worker, key in ((1, "m1"), (2, "m2")):
        seed = warm_task(key, resources=ResourceRequest(site="a"))
        scheduler.submit(seed)
        finish(scheduler, seed, worker, (key,), load_s=3.0)
        moved.now += 1.0
    scheduler.set_status("a", True, workers=1, managers=1)  # one worker lost: the oldest goes
    assert warmth.held("a") == {"m2": 1}


def test_with_warm_placement_off_a_warm_key_changes_nothing(moved: Clock) -> None:
    scheduler = Scheduler({"a": {"gpu": 1}, "b": {"gpu": 1}})
    assert scheduler.submit(warm_task("m1")).placed[0].site == "a"


def test_a_workers_cache_is_bounded_by_count_and_bytes() -> None:
    cache = WarmCache(CacheBounds(max_items=2, max_bytes=100))
    for key, size in (("a", 10), ("b", 10), ("c", 10)):
        cache.get(key, str, size)
    assert cache.held() == ("b", "c")  # the least recently used went
    cache.get("b", lambda: "again", None)  # a hit: b is the most recent now
    cache.get("big", lambda: "big", 95)
    assert cache.held() == ("big",)
    value, (key, hit, _) = cache.get("big", lambda: "reloaded", None)
    assert (value, hit) == ("big", True)


class _Sized:
    """A loaded object whose size is read slowly: while it is, a second thread asks for it."""

    def __init__(self, reading: threading.Event, asked: threading.Event) -> None:
        self.reading, self.asked = reading, asked

    @property
    def nbytes(self) -> int:
        self.reading.set()
        self.asked.wait(0.5)  # the second thread's own load would end this wait at once
        return 10


def test_a_key_being_kept_is_not_loaded_again_by_another_thread() -> None:
    cache = WarmCache(CacheBounds(max_items=2))
    reading, asked = threading.Event(), threading.Event()
    loads: list[str] = []

    def load_again() -> None:
        loads.append("second")
        asked.set()

    def second() -> None:
        reading.wait(10)
        cache.get("m", load_again, None)

    thread = threading.Thread(target=second)
    thread.start()
    first, (_, hit, _) = cache.get("m", lambda: _Sized(reading, asked), None)
    thread.join(10)
    assert (loads, hit) == ([], False), "the second thread found the first one's load"
    assert cache.held() == ("m",)
    assert cache.get("m", str, None)[0] is first


def test_a_loader_that_raises_or_asks_for_its_own_key_leaves_nothing_behind() -> None:
    cache = WarmCache(CacheBounds())

    def broken() -> str:
        raise OSError("no such checkpoint")

    with pytest.raises(OSError, match="checkpoint"):
        cache.get("m", broken, None)
    with pytest.raises(RuntimeError, match="its loader asked for 'm' again"):
        cache.get("m", lambda: cache.get("m", str, None)[0], None)
    assert cache.held() == ()
    assert cache.get("m", lambda: "loaded", None)[0] == "loaded"


# --- the sim backend: loads in virtual time ------------------------------------------------


def sim_loads(warm_placement: bool) -> tuple[float, list[bool]]:
    config = SitesConfig.from_dict(
        {
            "sites": {
                "gpu": {
                    "sim": {"workers": {"gpu": 1}},
                    "resources": {"gpu": 1},
                    "warm": {"max_items": 1},
                }
            },
            "scheduler": {"warm": warm_placement},
            "sim": {"methods": {"infer": {"mean": 5.0}}, "loads": {"infer": {"mean": 30.0}}},
        }
    )
    queues = TaskQueues()
    server = TaskServer(queues, config, [Method(infer, slot="gpu")])
    assert server.world is not None
    with server:
        for key in ("m1", "m1", "m2", "m1"):
            queues.send_inputs(key, method="infer", warm=key)
        makespan = server.world.run()
        results = [queues.get_result(timeout=0) for _ in range(4)]
    return makespan, [r.warm.hit for r in results if r.warm is not None]


def test_the_sim_models_a_load_per_miss_and_warm_placement_saves_one() -> None:
    warm_makespan, warm_hits = sim_loads(True)
    cold_makespan, cold_hits = sim_loads(False)
    assert cold_hits == [False, True, False, False]  # m1, m1, m2 evicts m1, m1 again
    assert sorted(warm_hits) == [False, False, True, True]  # the last m1 ran before m2
    assert cold_makespan - warm_makespan == pytest.approx(30.0, abs=1.0)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warm_section", "expected"),
    [
        ({"max_items": 0}, "site 'gpu', field 'warm.max_items'"),
        ({"max_bytes": "lots"}, "site 'gpu', field 'warm.max_bytes'"),
        ({"forget_after": -1}, "site 'gpu', field 'warm.forget_after'"),
        ({"max_item": 2}, "site 'gpu', field 'warm.max_item': unknown field"),
    ],
)
def test_a_bad_warm_section_names_the_site_and_field(
    warm_section: dict[str, object], expected: str
) -> None:
    site = {"sim": {"workers": {"gpu": 1}}, "resources": {"gpu": 1}, "warm": warm_section}
    with pytest.raises(ConfigError, match=expected):
        SitesConfig.from_dict({"sites": {"gpu": site}}, source=Path("sites.yaml"))


def test_a_bad_warm_key_is_refused_naming_the_argument_and_nothing_is_sent() -> None:
    queues = TaskQueues()
    with pytest.raises(TypeError, match="warm=3: a warm key is a non-empty string"):
        queues.send_inputs("m1", method="infer", warm=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="warm='': a warm key"):
        queues.send_inputs("m1", method="infer", warm="")
    assert queues.active_count == 0
    with pytest.raises(TypeError, match="the key must be a non-empty string, got None"):
        warm(None, lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loader must be callable"):
        warm("k", 1)  # type: ignore[arg-type]


# --- two real local sites -------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_local_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskQueues]:
    """Two local sites of one worker each, whose workers keep one object warm."""
    site = {
        "local": str(ENDPOINTS / "local-gpu.yaml"),
        "resources": {"gpu": 1},
        "warm": {"max_items": 1},
    }
    config = SitesConfig.from_dict(
        {"sites": {"a": site, "b": dict(site)}, "scheduler": {"status_period": 0.5}}
    )
    queues = TaskQueues()
    with TaskServer(
        queues,
        config,
        [Method(infer, slot="gpu"), Method(crash, slot="gpu")],
        run_dir=tmp_path_factory.mktemp("warm"),
    ):
        yield queues


def one(queues: TaskQueues, key: str, site: str | None = None) -> Result:
    queues.send_inputs(key, method="infer", warm=key, site=site)
    result = queues.get_result(timeout=120)
    assert result.success, result.failure
    assert result.warm is not None
    return result


def test_on_real_sites_a_model_loads_once_per_worker_and_tasks_follow_it(
    two_local_sites: TaskQueues,
) -> None:
    queues = two_local_sites
    first = one(queues, "m1", site="b")
    assert first.warm is not None
    assert (first.warm.hit, first.warm.held) == (False, ["m1"])
    assert first.warm.load_s >= LOAD_S
    # With both sites free, each task with key m1 goes to 'b', where m1 is loaded.
    later = [one(queues, "m1") for _ in range(3)]
    assert [(r.site, r.warm.hit if r.warm else None) for r in later] == [("b", True)] * 3
    assert {r.worker.pid for r in [first, *later] if r.worker} == {
        first.worker.pid if first.worker else 0
    }
    # Another key on 'b' evicts m1 there (one object per worker): m1 then loads again.
    other = one(queues, "m2", site="b")
    assert other.warm is not None
    assert (other.warm.hit, other.warm.held) == (False, ["m2"])
    again = one(queues, "m1", site="b")
    assert again.warm is not None
    assert (again.warm.hit, again.warm.held) == (False, ["m1"])


def test_a_globus_sites_worker_keeps_what_it_loaded_as_a_local_sites_does(
    queues: TaskQueues,
) -> None:
    key = f"model-{uuid.uuid4().hex[:8]}"  # the federation outlives each test: a fresh key
    results = []
    for _ in range(2):
        queues.send_inputs(key, 0.5, method="warm_model", warm=key)
        results.append(queues.get_result(timeout=120))
    first, second = (r.warm for r in results)
    assert first is not None
    assert second is not None
    assert (first.hit, second.hit) == (False, True)
    assert first.load_s >= 0.5
    assert second.load_s == 0.0
    assert results[0].value == results[1].value  # the very object the first task loaded


def test_on_a_real_site_a_new_worker_starts_cold(two_local_sites: TaskQueues) -> None:
    queues = two_local_sites
    before = one(queues, "m3", site="a")
    queues.send_inputs(method="crash", site="a", max_retries=0)
    lost = queues.get_result(timeout=120)
    assert lost.failure is not None
    assert lost.failure.kind == "system"
    after = one(queues, "m3", site="a")  # the engine started another worker
    assert before.worker is not None
    assert after.worker is not None
    assert after.worker.pid != before.worker.pid
    assert after.warm is not None
    assert not after.warm.hit
