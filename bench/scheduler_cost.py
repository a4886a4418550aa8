"""Decision cost of the scheduler per task, and memory, with 100,000 tasks pending.

Drives `colmena_fed.scheduler.Scheduler` directly (no task server, no sites, no threads) over
16 sites with a mix of slot kinds: 10 CPU sites, 4 GPU sites and 2 sites offering both, of
different sizes. Steps:

1. fill every slot of every site with filler tasks (not counted), so that nothing more fits;
2. create the ``--tasks`` task records (`Result`, ``task.slot`` set; untimed): a mix of three
   methods (cpu ``simulate``, gpu ``train`` and ``infer``), 2% pinned to one site
   (``--pinned``), 10% with a higher priority, then `Scheduler.submit` each; all stay pending;
3. release slots one at a time, oldest placement first (as tasks finishing), with
   `Scheduler.release`, until every task was placed; each release places one pending task
   (or none when nothing pending may use the freed slot).

Only the scheduler calls are timed (submit in step 2, release in step 3). The policy starts
with learned run times for every (site, method), so ``fastest`` makes real estimates.

Prints the time per submit and per placement, then as its last line ``us_per_task <x> rss_mb
<y>``: (submit + release time) / tasks in microseconds, and the process's resident memory in MB
once all the tasks are pending (the interpreter, the imports and the task records included).
The peak over the whole run is printed too: it is higher because every placed record then
also carries its site, placement and attempt, and the bench keeps them all.

Run: ``.venv/bin/python bench/scheduler_cost.py`` (availability, about 15 s), ``--policy
fastest`` for one other policy, or ``--policy all`` to run every policy, each in a fresh
process so that its memory is its own; the last line is then the worst of them.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import resource
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from colmena_fed.models import ResourceRequest, Result, Timestamps
from colmena_fed.policies import POLICY_NAMES, Observations, make_policy
from colmena_fed.queues import TaskQueues
from colmena_fed.scheduler import Scheduler

#: Methods: slot kind and share of the tasks.
METHODS = {"simulate": ("cpu", 0.7), "train": ("gpu", 0.2), "infer": ("gpu", 0.1)}
#: Default share of tasks pinned to one site, and share with a higher priority.
PINNED = 0.02
URGENT = 0.1


def capacities() -> dict[str, dict[str, int]]:
    """16 sites: 10 CPU of 32 to 256 slots, 4 GPU of 4 to 32, 2 with both."""
    sites: dict[str, dict[str, int]] = {}
    for i in range(10):
        sites[f"cpu-{i}"] = {"cpu": (32, 64, 128, 256)[i % 4]}
    for i in range(4):
        sites[f"gpu-{i}"] = {"gpu": (4, 8, 16, 32)[i]}
    for i in range(2):
        sites[f"mixed-{i}"] = {"cpu": 64, "gpu": 8}
    return sites


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float:
    """Resident memory now, in MB (Linux; the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return pages * resource.getpagesize() / 2**20


def learned(sites: dict[str, dict[str, int]], rng: random.Random) -> Observations:
    """Observations as after a warm-up: a run time for every (site, method) it offers."""
    observations = Observations()
    for site, slots in sites.items():
        for method, (slot, _) in METHODS.items():
            if slot in slots:
                run = rng.uniform(10.0, 100.0)
                task = Result(method=method, site=site, success=True, slot=slot)
                task.timestamps = Timestamps(
                    created=0.0, dispatched=1.0, compute_started=1.5, compute_ended=1.5 + run
                )
                task.timestamps.received = 2.0 + run
                observations.learn(task)
    return observations


def make_tasks(
    count: int, sites: dict[str, dict[str, int]], rng: random.Random, pinned_share: float
) -> list[Result]:
    """``count`` records made by `TaskQueues.send_inputs`, ``slot`` set as the server sets it."""
    names = list(METHODS)
    weights = [share for _, share in METHODS.values()]
    offering = {
        kind: [s for s, slots in sites.items() if kind in slots]
        for kind in {slot for slot, _ in METHODS.values()}
    }
    tasks: list[Result] = []
    queues = TaskQueues()
    queues.connect(tasks.append)
    for i, method in enumerate(rng.choices(names, weights, k=count)):
        slot = METHODS[method][0]
        pinned = rng.choice(offering[slot]) if rng.random() < pinned_share else None
        priority = 1 if rng.random() < URGENT else 0
        queues.send_inputs(i, method=method, site=pinned, priority=priority)
        tasks[-1].slot = slot
    return tasks


def measure(policy_name: str, n_tasks: int, seed: int, pinned: float) -> tuple[float, float]:
    """Run the three steps under one policy, print the details; (us per task, pending MB)."""
    rng = random.Random(seed)
    sites = capacities()
    observations = learned(sites, rng)
    static = {"simulate": "cpu-3", "train": "gpu-3"}  # 'infer' unassigned: by availability
    scheduler = Scheduler(
        sites, make_policy(policy_name, observations, static), observations=observations
    )
    rss_start = current_rss_mb()

    in_flight: deque[tuple[str, str]] = deque()  # (site, slot) of each placement, oldest first
    for site, slots in sites.items():
        for slot, count in slots.items():
            for i in range(count):
                method = "simulate" if slot == "cpu" else "train"
                filler = Result(
                    task_id=f"fill-{site}-{slot}-{i}",
                    method=method,
                    resources=ResourceRequest(site=site),
                    slot=slot,
                )
                placed, _ = scheduler.submit(filler)
                in_flight.extend((p.site, slot) for p in placed)
    slots_total = sum(sum(s.values()) for s in sites.values())
    assert len(in_flight) == slots_total, "fillers should take every slot"

    tasks = make_tasks(n_tasks, sites, rng, pinned)
    rss_tasks = current_rss_mb()
    gc.collect()

    clock = time.perf_counter
    start = clock()
    for task in tasks:
        placed, _ = scheduler.submit(task)
        assert not placed
    submit_s = clock() - start
    assert scheduler.pending_count == n_tasks
    rss_pending = current_rss_mb()

    release_s = 0.0
    releases = placements = 0
    while scheduler.pending_count:
        site, slot = in_flight.popleft()
        start = clock()
        placed = scheduler.release(site, slot)
        release_s += clock() - start
        releases += 1
        placements += len(placed)
        in_flight.extend((p.site, p.task.slot or "") for p in placed)
    assert placements == n_tasks

    per_task = (submit_s + release_s) / n_tasks * 1e6
    peak = peak_rss_mb()
    print(
        f"policy {policy_name}: {n_tasks} tasks over {len(sites)} sites ({slots_total} slots); "
        f"{releases} releases placed {placements} tasks"
    )
    print(f"  submit (stays pending)  {submit_s / n_tasks * 1e6:8.2f} us per task")
    print(f"  release + placement     {release_s / placements * 1e6:8.2f} us per placement")
    print(f"  total                   {per_task:8.2f} us per task")
    print(
        f"  RSS: {rss_start:.0f} MB before the tasks, {rss_tasks:.0f} MB with the records, "
        f"{rss_pending:.0f} MB with all pending; peak {peak:.0f} MB"
    )
    return per_task, rss_pending


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--policy", default="availability", choices=[*POLICY_NAMES, "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pinned", type=float, default=PINNED, help="share of tasks pinned to one site"
    )
    args = parser.parse_args()
    if args.policy != "all":
        print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
        per_task, rss = measure(args.policy, args.tasks, args.seed, args.pinned)
        print(f"us_per_task {per_task:.2f} rss_mb {rss:.0f}")
        return
    worst_us = worst_mb = 0.0
    summary = []
    for name in POLICY_NAMES:  # each in its own process, so its memory is its own
        command = [sys.executable, __file__, "--policy", name, "--tasks", str(args.tasks)]
        command += ["--seed", str(args.seed), "--pinned", str(args.pinned)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(output.rstrip())
        words = output.strip().splitlines()[-1].split()
        us, mb = float(words[1]), float(words[3])
        summary.append(f"{name} {us:.2f} us {mb:.0f} MB")
        worst_us, worst_mb = max(worst_us, us), max(worst_mb, mb)
    print("summary: " + "; ".join(summary) + " (last line: the worst of each)")
    print(f"us_per_task {worst_us:.2f} rss_mb {worst_mb:.0f}")


if __name__ == "__main__":
    main()
