"""Placement quality of each policy on one simulated federation, against a lower bound.

The federation (``sim`` sites, virtual time, the real task server and scheduler):

* ``cpu-fast`` and ``cpu-slow``: CPU sites of speed 1.0 and 0.4;
* ``gpu-fast``: a GPU site of speed 1.0;
* ``gpu-slow``: a GPU site of speed 0.3 that is offline for the middle third of the run
  (tasks running there when it goes down are lost and placed again).

Every site offers as many slots as it has workers. The campaign sends all its tasks at once: a
seeded mix of a CPU method (``simulate``) and a GPU method (``train``) whose run times are
log-normal. Each task's work is drawn once, before any run, and fixed with
``SimWorld.set_work``: every policy runs exactly the same tasks. Each policy (availability,
fastest, round_robin, static; static maps ``simulate`` to ``cpu-fast`` and ``train`` to
``gpu-fast``, as a Colmena user would) runs the campaign once, and the bench prints:

* makespan: virtual seconds until the last result reached the task server;
* utilization: busy worker-seconds / available worker-seconds over the makespan, outage time
  excluded from what is available (busy includes attempts later lost in the outage);
* lower bound, and makespan / lower bound. The lower bound of a slot kind is the earliest time
  at which the speed-weighted worker-seconds of the sites offering that kind (outages counted)
  cover that kind's total work; the run's bound is the largest over kinds (work: run time x
  site speed of the attempt that succeeded; attempts lost in the outage are not work).

It also prints each site's utilization and task count per policy, and the task that finished
last in each run (where the tail came from).

The run's length is not known before it runs, so the outage is planned from the lower bound of
the expected work (tasks x mean run time per method): it is the middle third of that bound, found
as a fixed point since the outage itself lengthens the bound.

Last line: ``ratio <best makespan / its lower bound> vs_round_robin <round_robin makespan / best
makespan>``, where the best policy has the lowest makespan / lower bound.

Run: ``.venv/bin/python bench/placement.py`` (under 10 s; ``--help`` for the scenario knobs).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from dataclasses import dataclass

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.policies import POLICY_NAMES

CPU_METHOD = "simulate"
GPU_METHOD = "train"
KIND_OF = {CPU_METHOD: "cpu", GPU_METHOD: "gpu"}
#: Policy 'static': what a Colmena user would write, each method on its kind's fast site.
STATIC_MAP = {CPU_METHOD: "cpu-fast", GPU_METHOD: "gpu-fast"}

Window = tuple[float, float]


def simulate(x: int) -> int:
    return x


def train(x: int) -> int:
    return x


@dataclass(frozen=True)
class Site:
    """One simulated site: its slot kind, workers (= slots), speed and outages."""

    name: str
    kind: str
    workers: int
    speed: float
    outages: tuple[Window, ...] = ()

    def down_within(self, end: float) -> float:
        """Seconds of [0, end) the site is offline."""
        return sum(max(0.0, min(b, end) - a) for a, b in self.outages if a < end)


def federation(cpu_workers: int, gpu_workers: int, outage: Window | None) -> list[Site]:
    return [
        Site("cpu-fast", "cpu", cpu_workers, 1.0),
        Site("cpu-slow", "cpu", cpu_workers, 0.4),
        Site("gpu-fast", "gpu", gpu_workers, 1.0),
        Site("gpu-slow", "gpu", gpu_workers, 0.3, (outage,) if outage else ()),
    ]


def cover_time(work: float, sites: list[Site]) -> float:
    """Earliest time at which the speed-weighted worker-seconds of ``sites`` reach ``work``."""
    edges = sorted({0.0, *(t for site in sites for window in site.outages for t in window)})
    done = 0.0
    for i, start in enumerate(edges):
        end = edges[i + 1] if i + 1 < len(edges) else math.inf
        rate = sum(
            s.workers * s.speed for s in sites if not any(a <= start < b for a, b in s.outages)
        )
        if rate > 0 and done + rate * (end - start) >= work:
            return start + (work - done) / rate
        done += rate * (end - start)
    raise ValueError("the sites never cover the work")


def lower_bound(work: dict[str, float], sites: list[Site]) -> tuple[float, dict[str, float]]:
    """The run's lower bound (largest over kinds) and each kind's own."""
    by_kind = {
        kind: cover_time(amount, [s for s in sites if s.kind == kind])
        for kind, amount in work.items()
    }
    return max(by_kind.values()), by_kind


def plan_outage(expected: dict[str, float], cpu_workers: int, gpu_workers: int) -> Window:
    """The middle third of the lower bound of the expected work, with that outage in it."""
    length = lower_bound(expected, federation(cpu_workers, gpu_workers, None))[0]
    for _ in range(200):
        outage = (length / 3, 2 * length / 3)
        new = lower_bound(expected, federation(cpu_workers, gpu_workers, outage))[0]
        if abs(new - length) <= 1e-9 * length:
            break
        length = new
    return (length / 3, 2 * length / 3)


@dataclass
class RunStats:
    """What one policy's run gave."""

    policy: str
    makespan: float
    bound: float
    bound_by_kind: dict[str, float]
    work: dict[str, float]
    utilization: float
    site_utilization: dict[str, float]
    site_tasks: dict[str, int]
    lost_attempts: int
    lost_seconds: float
    failed: int
    wall: float
    last: Result
    longest_work: float
    epoch: float

    @property
    def ratio(self) -> float:
        """Makespan / lower bound."""
        return self.makespan / self.bound


def task_mix(
    n_tasks: int, gpu_fraction: float, means: dict[str, float], sigmas: dict[str, float], seed: int
) -> list[tuple[str, float]]:
    """Each task's method and work (seconds at speed 1.0), log-normal with the given mean."""
    rng = random.Random(seed)
    tasks = []
    for _ in range(n_tasks):
        method = GPU_METHOD if rng.random() < gpu_fraction else CPU_METHOD
        mu = math.log(means[method]) - sigmas[method] ** 2 / 2
        tasks.append((method, rng.lognormvariate(mu, sigmas[method])))
    return tasks


def run_policy(
    policy: str,
    sites: list[Site],
    mix: list[tuple[str, float]],
    *,
    latency: float,
    seed: int,
) -> RunStats:
    """Run the campaign once under ``policy``; every task sent at t=0."""
    scheduler: dict[str, object] = {"policy": policy}
    if policy == "static":
        scheduler["static"] = STATIC_MAP
    config = SitesConfig.from_dict(
        {
            "sites": {
                s.name: {
                    "sim": {
                        "workers": {s.kind: s.workers},
                        "speed": s.speed,
                        "latency": latency,
                        "outages": [list(w) for w in s.outages],
                    },
                    "resources": {s.kind: s.workers},
                }
                for s in sites
            },
            "scheduler": scheduler,
            "sim": {"seed": seed},
        }
    )
    queues = TaskQueues()
    server = TaskServer(queues, config, [Method(simulate), Method(train, slot="gpu")])
    assert server.world is not None
    results: list[Result] = []
    start = time.perf_counter()
    with server:
        epoch = server.world.now()
        for i, (method, seconds) in enumerate(mix):
            server.world.set_work(queues.send_inputs(i, method=method), seconds)
        server.world.run()
        results += [queues.get_result(timeout=0) for _ in range(queues.active_count)]
    wall = time.perf_counter() - start
    assert len(results) == len(mix), f"{len(results)} results for {len(mix)} tasks"

    by_name = {s.name: s for s in sites}
    work = dict.fromkeys(KIND_OF.values(), 0.0)
    busy = dict.fromkeys(by_name, 0.0)
    tasks = dict.fromkeys(by_name, 0)
    lost_attempts, lost_seconds, failed, makespan, longest = 0, 0.0, 0, 0.0, 0.0
    last = results[0]
    for result in results:
        for attempt in result.attempts[:-1]:  # attempts lost in the outage
            lost_attempts += 1
            if attempt.ended is not None:
                held = max(0.0, attempt.ended - attempt.dispatched - latency / 2)
                busy[attempt.site] += held
                lost_seconds += held
        if not result.success or result.site is None or result.run_time is None:
            failed += 1
            continue
        busy[result.site] += result.run_time
        tasks[result.site] += 1
        amount = result.run_time * by_name[result.site].speed
        work[KIND_OF[result.method]] += amount
        longest = max(longest, amount)
        assert result.timestamps.received is not None
        if result.timestamps.received - epoch > makespan:
            makespan, last = result.timestamps.received - epoch, result
    available = {s.name: s.workers * (makespan - s.down_within(makespan)) for s in sites}
    bound, bound_by_kind = lower_bound(work, sites)
    return RunStats(
        policy=policy,
        makespan=makespan,
        bound=bound,
        bound_by_kind=bound_by_kind,
        work=work,
        utilization=sum(busy.values()) / sum(available.values()),
        site_utilization={name: busy[name] / available[name] for name in by_name},
        site_tasks=tasks,
        lost_attempts=lost_attempts,
        lost_seconds=lost_seconds,
        failed=failed,
        wall=wall,
        last=last,
        longest_work=longest,
        epoch=epoch,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--gpu-fraction", type=float, default=0.2, help="share of train tasks")
    parser.add_argument("--cpu-workers", type=int, default=16, help="workers per CPU site")
    parser.add_argument("--gpu-workers", type=int, default=8, help="workers per GPU site")
    parser.add_argument("--cpu-mean", type=float, default=60.0, help="simulate: mean s at 1.0")
    parser.add_argument("--cpu-sigma", type=float, default=1.0, help="simulate: log sigma")
    parser.add_argument("--gpu-mean", type=float, default=120.0, help="train: mean s at 1.0")
    parser.add_argument("--gpu-sigma", type=float, default=1.0, help="train: log sigma")
    parser.add_argument("--latency", type=float, default=0.2, help="round trip to a site, s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", nargs="+", default=list(POLICY_NAMES), choices=POLICY_NAMES)
    args = parser.parse_args()
    logging.getLogger("colmena_fed").setLevel(logging.ERROR)  # fail-over warnings

    means = {CPU_METHOD: args.cpu_mean, GPU_METHOD: args.gpu_mean}
    sigmas = {CPU_METHOD: args.cpu_sigma, GPU_METHOD: args.gpu_sigma}
    mix = task_mix(args.tasks, args.gpu_fraction, means, sigmas, args.seed)
    counts = {method: sum(m == method for m, _ in mix) for method in KIND_OF}
    expected = {KIND_OF[m]: counts[m] * means[m] for m in KIND_OF}
    outage = plan_outage(expected, args.cpu_workers, args.gpu_workers)
    sites = federation(args.cpu_workers, args.gpu_workers, outage)
    planned = lower_bound(expected, sites)

    print("federation (slots = workers; all tasks sent at t=0):")
    for s in sites:
        down = ", ".join(f"offline [{a:.0f}, {b:.0f}) s" for a, b in s.outages) or "always up"
        print(f"  {s.name:9} {s.workers:3} {s.kind} workers, speed {s.speed:.1f}, {down}")
    print(
        f"tasks: {args.tasks} = {counts[CPU_METHOD]} {CPU_METHOD} (cpu, lognormal mean "
        f"{args.cpu_mean:g} s sigma {args.cpu_sigma:g}) + {counts[GPU_METHOD]} {GPU_METHOD} "
        f"(gpu, lognormal mean {args.gpu_mean:g} s sigma {args.gpu_sigma:g}); "
        f"round trip {args.latency:g} s; seed {args.seed}"
    )
    print(
        f"outage: middle third of the lower bound of the expected work, {planned[0]:.0f} s "
        f"(cpu {planned[1]['cpu']:.0f} s, gpu {planned[1]['gpu']:.0f} s)"
    )
    print(f"static map: {', '.join(f'{m} -> {s}' for m, s in STATIC_MAP.items())}")
    print()

    runs = [run_policy(p, sites, mix, latency=args.latency, seed=args.seed) for p in args.policies]
    header = (
        f"{'policy':12} {'makespan s':>10} {'bound s':>9} {'ratio':>6} {'util':>6} "
        f"{'cpu work':>9} {'gpu work':>9} {'lost':>5} {'failed':>6} {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r.policy:12} {r.makespan:10.0f} {r.bound:9.0f} {r.ratio:6.3f} "
            f"{r.utilization:6.1%} {r.work['cpu']:9.0f} {r.work['gpu']:9.0f} "
            f"{r.lost_attempts:5d} {r.failed:6d} {r.wall:6.1f}"
        )
    print()
    names = [s.name for s in sites]
    print(f"{'per site':12} " + " ".join(f"{n:>17}" for n in names))
    print(f"{'(util, tasks)':12}")
    for r in runs:
        cells = " ".join(f"{r.site_utilization[n]:7.1%} {r.site_tasks[n]:9d}" for n in names)
        print(f"{r.policy:12} {cells}")
    print(
        "bound by kind: "
        + "; ".join(
            f"{r.policy} cpu {r.bound_by_kind['cpu']:.0f} gpu {r.bound_by_kind['gpu']:.0f}"
            for r in runs
        )
    )
    for r in runs:
        last = r.last
        assert last.timestamps.compute_started is not None
        assert last.run_time is not None
        print(
            f"tail {r.policy}: last result {last.method} on {last.site}, started at "
            f"{last.timestamps.compute_started - r.epoch:.0f} s, ran {last.run_time:.0f} s; "
            f"longest task's work {r.longest_work:.0f} s at speed 1.0"
        )
    print()
    spread = {
        kind: max(r.work[kind] for r in runs) / min(r.work[kind] for r in runs) - 1
        for kind in ("cpu", "gpu")
    }
    assert max(spread.values()) < 1e-9, f"the policies ran different work: {spread}"
    best = min(runs, key=lambda r: r.ratio)
    by_policy = {r.policy: r for r in runs}
    print(f"best policy: {best.policy}", end="")
    if "round_robin" in by_policy:
        normalized = by_policy["round_robin"].ratio / best.ratio
        print(f"; round_robin vs best with each makespan over its own bound: {normalized:.3f}")
    else:
        print()
    if "round_robin" in by_policy:
        versus = f"{by_policy['round_robin'].makespan / best.makespan:.3f}"
    else:
        versus = "nan"
    print(f"ratio {best.ratio:.3f} vs_round_robin {versus}")


if __name__ == "__main__":
    main()
