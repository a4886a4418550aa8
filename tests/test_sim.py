"""The real task server and scheduler over simulated sites, in virtual time."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest import drain

from colmena_fed import (
    ConfigError,
    Method,
    ResourceCounter,
    SitesConfig,
    TaskQueues,
    TaskServer,
)
from colmena_fed.backends.sim import SimWorld
from colmena_fed.methods import MethodLike
from colmena_fed.policies import POLICY_NAMES
from colmena_fed.sites import SimConfig


def simulate(x: int) -> int:
    return x


def train(x: int) -> int:
    return x


UUID = "5c9d8e1a-0000-4000-8000-000000000000"
METHODS: list[MethodLike] = [simulate, Method(train, slot="gpu")]


def federation(policy: str = "availability", **extra: Any) -> SitesConfig:
    """Two CPU sites (one slow) and two GPU sites, the slow GPU site down for [20, 40)."""
    sites = {
        "cpu-fast": {"sim": {"workers": {"cpu": 4}}, "resources": {"cpu": 4}},
        "cpu-slow": {"sim": {"workers": {"cpu": 4}, "speed": 0.5}, "resources": {"cpu": 4}},
        "gpu-fast": {"sim": {"workers": {"gpu": 2}, "latency": 0.2}, "resources": {"gpu": 2}},
        "gpu-slow": {
            "sim": {"workers": {"gpu": 2}, "speed": 0.3, "outages": [[20, 40]]},
            "resources": {"gpu": 2},
        },
    }
    scheduler: dict[str, Any] = {"policy": policy}
    if policy == "static":
        scheduler["static"] = {"simulate": "cpu-fast", "train": "gpu-fast"}
    loads = {
        "simulate": {"distribution": "lognormal", "mean": 1.0, "sigma": 0.8},
        "train": {"distribution": "uniform", "mean": 3.0, "sigma": 0.5},
    }
    return SitesConfig.from_dict(
        {"sites": sites, "scheduler": scheduler, "sim": {"seed": 7, "methods": loads}, **extra}
    )


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_ends_every_task_once_through_an_outage(policy: str) -> None:
    queues = TaskQueues()
    server = TaskServer(queues, federation(policy), METHODS)
    with server:
        assert server.world is not None
        sent = [
            queues.send_inputs(i, method="train" if i % 5 == 0 else "simulate") for i in range(400)
        ]
        makespan = server.world.run()
        results = drain(queues)
    assert Counter(r.task_id for r in results) == Counter(sent)
    assert all(r.success for r in results), [r.failure for r in results if not r.success]
    assert makespan > 40
    for result in results:
        assert result.site in server.config.sites
        assert result.slot == ("gpu" if result.method == "train" else "cpu")
        assert result.site.startswith(result.slot)
        assert result.attempts[-1].site == result.site
    lost = [r for r in results if r.retries]
    if policy in ("availability", "round_robin"):  # the others learn to avoid gpu-slow
        assert lost, "the outage should have caught some task on gpu-slow"
    for result in lost:
        assert result.attempts[0].site == "gpu-slow"
        assert "SiteOffline" in (result.attempts[0].reason or "")


def test_fastest_beats_round_robin_on_a_federation_with_a_slow_site() -> None:
    makespans = {}
    for policy in ("fastest", "round_robin"):
        queues = TaskQueues()
        with TaskServer(queues, federation(policy), METHODS) as server:
            for i in range(400):
                queues.send_inputs(i, method="train" if i % 5 == 0 else "simulate")
            assert server.world is not None
            makespans[policy] = server.world.run()
    assert makespans["fastest"] < makespans["round_robin"]


def test_a_site_starting_late_gets_nothing_before_its_workers_exist() -> None:
    sites = {
        "late": {"sim": {"workers": {"cpu": 2}, "startup": 30}, "resources": {"cpu": 2}},
    }
    queues = TaskQueues()
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), METHODS) as server:
        queues.send_inputs(1, method="simulate")
        assert server.world is not None
        server.world.run(until=29)
        assert server.pending_count == 1
        server.world.run()
        (result,) = drain(queues)
    assert result.queue_wait == pytest.approx(30)
    assert result.run_time == pytest.approx(1.0)


def test_retries_run_out_when_every_site_keeps_failing() -> None:
    sites = {
        "flaky": {
            "sim": {"workers": {"cpu": 1}, "outages": [[0.5, 1], [1.5, 2], [2.5, 3]]},
            "resources": {"cpu": 1},
        },
    }
    queues = TaskQueues()
    config = SitesConfig.from_dict({"sites": sites, "sim": {"methods": {"simulate": {"mean": 10}}}})
    with TaskServer(queues, config, METHODS) as server:
        queues.send_inputs(1, method="simulate", max_retries=2)
        assert server.world is not None
        server.world.run()
        (result,) = drain(queues)
    assert result.success is False
    assert result.failure is not None
    assert result.failure.kind == "system"
    assert "after 3 attempts" in result.failure.message
    assert [a.site for a in result.attempts] == ["flaky"] * 3


def test_max_wait_and_supersede_reach_the_thinker_in_virtual_time() -> None:
    sites = {"gpu": {"sim": {"workers": {"gpu": 1}}, "resources": {"gpu": 1}}}
    config = SitesConfig.from_dict({"sites": sites, "sim": {"methods": {"train": {"mean": 10}}}})
    queues = TaskQueues()
    with TaskServer(queues, config, METHODS) as server:
        running = queues.send_inputs(0, method="train", supersede="model")
        older = queues.send_inputs(1, method="train", supersede="model")
        newer = queues.send_inputs(2, method="train", supersede="model")
        hasty = queues.send_inputs(3, method="train", max_wait=5)
        assert server.world is not None
        server.world.run()
        results = {r.task_id: r for r in drain(queues)}
    assert results[running].success
    assert results[newer].success
    for task_id, kind in ((older, "superseded"), (hasty, "expired")):
        failure = results[task_id].failure
        assert failure is not None
        assert failure.kind == kind
    assert results[hasty].timestamps.received is None
    assert results[newer].timestamps.dispatched == pytest.approx(
        results[running].timestamps.created + 10
    )


def test_virtual_time_stops_at_the_task_servers_own_deadlines_between_events() -> None:
    world = SimWorld(SimConfig())
    deadlines = [7.0, 12.0]
    woken: list[float] = []

    def tick() -> None:
        woken.append(world.elapsed)
        while deadlines and deadlines[0] <= world.elapsed:
            deadlines.pop(0)

    def deadline() -> float | None:  # on the clock: the virtual epoch plus elapsed seconds
        return world.now() - world.elapsed + deadlines[0] if deadlines else None

    world.begin(tick, deadline=deadline)
    try:
        world.at(10.0, lambda: None)
        assert world.run() == 12.0
    finally:
        world.end()
    assert woken == [7.0, 10.0, 12.0], "a held task moves on at its deadline, not the next event"


def test_a_resource_counter_follows_the_federations_gpu_capacity() -> None:
    sites = {
        "gpu-a": {"sim": {"workers": {"gpu": 2}}, "resources": {"gpu": 2}},
        "gpu-b": {
            "sim": {"workers": {"gpu": 4}, "startup": 10, "outages": [[20, 30]]},
            "resources": {"gpu": 4},
        },
    }
    queues = TaskQueues()
    counter = ResourceCounter(0, ["train"])
    seen: list[int] = []
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), METHODS) as server:
        counter.follow(server, slot="gpu", pool="train", on_change=seen.append)
        assert counter.allocated_slots("train") == 2
        assert counter.acquire("train", 2, timeout=1)
        world = server.world
        assert world is not None
        world.run(until=15)
        assert counter.allocated_slots("train") == 6
        assert counter.available_slots("train") == 4
        world.run(until=25)
        assert counter.allocated_slots("train") == 2
        assert counter.available_slots("train") == 0
        counter.release("train", 2)
        world.run()
    assert seen == [6, 2, 6]
    assert counter.allocated_slots("train") == 6
    assert counter.available_slots("train") == 6


def test_sim_and_real_sites_cannot_be_mixed() -> None:
    with pytest.raises(Exception, match="cannot be mixed with real ones"):
        SitesConfig.from_dict(
            {
                "sites": {
                    "model": {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}},
                    "real": {"endpoint": UUID, "resources": {"cpu": 1}},
                }
            }
        )


def test_topic_priority_orders_dispatch_and_a_task_can_override_it() -> None:
    sites = {"one": {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}}}
    queues = TaskQueues(topics=["bulk"], priorities={"bulk": 0})
    queues.add_topic("urgent", priority=10)
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), METHODS) as server:
        first = queues.send_inputs(0, method="simulate", topic="bulk")
        bulk = queues.send_inputs(1, method="simulate", topic="bulk")
        urgent = queues.send_inputs(2, method="simulate", topic="urgent")
        rush = queues.send_inputs(3, method="simulate", topic="bulk", priority=20)
        assert server.world is not None
        server.world.run()
        results = drain(queues, "bulk") + drain(queues, "urgent")
    order = [r.task_id for r in sorted(results, key=lambda r: r.timestamps.dispatched or 0)]
    assert order == [first, rush, urgent, bulk]


def test_a_static_map_to_a_site_without_the_slot_is_refused() -> None:
    config = federation("static")
    config.scheduler.static["train"] = "cpu-fast"
    with pytest.raises(ConfigError, match=r"sends method 'train' \(needs a 'gpu' slot\) to site"):
        TaskServer(TaskQueues(), config, METHODS)
    config.scheduler.static = {"predict": "cpu-fast"}
    with pytest.raises(ConfigError, match="names method 'predict', which the task server"):
        TaskServer(TaskQueues(), config, METHODS)


def test_fastest_loses_nothing_when_the_site_it_waits_for_goes_down() -> None:
    sites = {
        "fast": {"sim": {"workers": {"cpu": 1}, "outages": [[10.5, 12]]}, "resources": {"cpu": 1}},
        "slow": {"sim": {"workers": {"cpu": 1}, "speed": 0.1}, "resources": {"cpu": 1}},
    }
    config = SitesConfig.from_dict(
        {
            "sites": sites,
            "scheduler": {"policy": "fastest"},
            "sim": {"methods": {"simulate": {"mean": 1}}},
        }
    )
    queues = TaskQueues()
    with TaskServer(queues, config, METHODS) as server:
        world = server.world
        assert world is not None
        queues.send_inputs(0, method="simulate")
        queues.send_inputs(1, method="simulate")
        world.run(until=10)  # learned: fast takes 1 s, slow 10 s
        sent = [queues.send_inputs(i, method="simulate") for i in (2, 3, 4)]
        assert server.pending_count == 2  # waiting for the fast site
        world.run()
        results = drain(queues)
        assert queues.active_count == 0
        assert all(s.total_in_flight == 0 for s in server.scheduler.sites.values())
    assert sorted(r.task_id for r in results if r.task_id in sent) == sorted(sent)
    assert all(r.success for r in results)


def test_fastest_does_not_wait_for_a_site_whose_workers_do_not_exist_yet() -> None:
    sites = {
        "queued": {
            "sim": {"workers": {"cpu": 4}, "startup": 3600},
            "resources": {"cpu": 4},
            "prefetch": 1,
        },
        "ready": {"sim": {"workers": {"cpu": 1}, "speed": 0.5}, "resources": {"cpu": 1}},
    }
    config = SitesConfig.from_dict({"sites": sites, "scheduler": {"policy": "fastest"}})
    queues = TaskQueues()
    with TaskServer(queues, config, METHODS) as server:
        for i in range(3):
            queues.send_inputs(i, method="simulate")
        assert server.world is not None
        server.world.run()
        results = drain(queues)
    on_ready = [r for r in results if r.site == "ready"]
    assert len(on_ready) >= 2  # at most the one prefetched task waits for the batch job
    for result in on_ready:
        assert result.queue_wait is not None
        assert result.queue_wait < 100  # virtual seconds; the batch job starts at 3600


def test_a_followed_pool_waits_for_capacity_instead_of_refusing() -> None:
    sites = {"late": {"sim": {"workers": {"gpu": 2}, "startup": 10}, "resources": {"gpu": 2}}}
    counter = ResourceCounter(0, ["train", "infer"])
    with TaskServer(TaskQueues(), SitesConfig.from_dict({"sites": sites}), METHODS) as server:
        counter.follow(server, slot="gpu", pool="train")
        assert counter.allocated_slots("train") == 0
        assert counter.acquire("train", 1, timeout=0.05) is False
        with pytest.raises(ValueError, match="follows the federation's capacity"):
            counter.reallocate("train", "infer", 1)
        assert server.world is not None
        server.world.run()
        assert counter.acquire("train", 2, timeout=1)


def test_a_failing_capacity_watcher_does_not_stop_status_handling() -> None:
    sites = {"gpu": {"sim": {"workers": {"gpu": 1}, "startup": 5}, "resources": {"gpu": 1}}}
    seen: list[int] = []

    def broken(slots: int) -> None:
        seen.append(slots)
        raise RuntimeError("thinker bug")

    queues = TaskQueues()
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), METHODS) as server:
        server.watch_capacity("gpu", broken)
        queues.send_inputs(1, method="train")
        assert server.world is not None
        server.world.run()
        (result,) = drain(queues)
    assert seen == [0, 1]
    assert result.success
