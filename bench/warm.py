"""Warm placement against placement that ignores where models are loaded, in one run.

Sim part (virtual time, the real task server and scheduler over ``sim`` sites): a campaign of
``--tasks`` inference tasks over ``--sites`` GPU sites of ``--workers`` workers each. Each task
uses one of ``--versions`` model versions, in turn (v1, v2, v3, v1, ...), sent at once with
``send_inputs(..., warm=version)``; a worker holds one model (``warm: {max_items: 1}``), a load
takes ``--load`` virtual seconds and the inference ``--work``. The campaign runs twice, with
warm placement (``scheduler: {warm: true}``, the default) and without it, and the bench prints
each makespan and how many loads it paid.

Local part (real engines, wall-clock time): two ``local`` sites of one worker each, and
``--local-tasks`` tasks over two keys in a seeded random order, each loading its model in
``--local-load`` seconds (a sleep, in `colmena_fed.warm`) and then working ``--local-work``
seconds, all sent at once: placement decides which loads are paid. Warm placement on
against off, both in this run.

Last lines: ``ratio_local <warm makespan / cold makespan on the local sites>``, then ``ratio R``
(warm makespan / makespan without warm placement, in the sim; bar 0.7, goal 0.5).

Run: ``.venv/bin/python bench/warm.py`` (about a minute; ``--no-local`` for the sim alone).
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer, warm

#: One worker per site (the GPU site's YAML: one worker, pinned to accelerator "0").
ENDPOINT = Path(__file__).resolve().parent.parent / "endpoints" / "local-gpu.yaml"


def load(version: str, seconds: float) -> str:
    """A model that takes ``seconds`` to load."""
    time.sleep(seconds)
    return f"model-{version}"


def infer(version: str, load_s: float = 0.0, work_s: float = 0.0) -> str:
    """Load ``version`` unless this worker holds it, then work: an inference step."""
    model = warm(version, functools.partial(load, version, load_s))
    time.sleep(work_s)
    return model


def sim_run(args: argparse.Namespace, warm_placement: bool) -> tuple[float, int, list[Result]]:
    """The sim campaign once; its makespan (virtual s), loads paid and results."""
    sites = {
        f"gpu{i}": {
            "sim": {"workers": {"gpu": args.workers}, "latency": 0.05},
            "resources": {"gpu": args.workers},
            "warm": {"max_items": 1},
        }
        for i in range(args.sites)
    }
    config = SitesConfig.from_dict(
        {
            "sites": sites,
            "scheduler": {"warm": warm_placement},
            "sim": {
                "seed": args.seed,
                "methods": {"infer": {"mean": args.work}},
                "loads": {"infer": {"mean": args.load}},
            },
        }
    )
    queues = TaskQueues()
    server = TaskServer(queues, config, [Method(infer, slot="gpu")])
    assert server.world is not None
    with server:
        epoch = server.world.now()
        for i in range(args.tasks):
            queues.send_inputs(
                f"v{i % args.versions + 1}", method="infer", warm=f"v{i % args.versions + 1}"
            )
        server.world.run()
        results = [queues.get_result(timeout=0) for _ in range(queues.active_count)]
    assert len(results) == args.tasks
    assert all(r.success for r in results)
    makespan = max(r.timestamps.received or 0.0 for r in results) - epoch
    loads = sum(1 for r in results if r.warm is not None and not r.warm.hit)
    return makespan, loads, results


def local_run(args: argparse.Namespace, warm_placement: bool, run_dir: Path) -> tuple[float, int]:
    """The local campaign once; its makespan (wall s) and loads paid."""
    site: dict[str, Any] = {
        "local": str(ENDPOINT),
        "resources": {"gpu": 1},
        "warm": {"max_items": 1},
    }
    config = SitesConfig.from_dict(
        {
            "sites": {"a": site, "b": dict(site)},
            "scheduler": {"warm": warm_placement, "status_period": 0.5},
        }
    )
    rng = random.Random(args.seed)
    keys = [rng.choice(("m1", "m2")) for _ in range(args.local_tasks)]
    queues = TaskQueues()
    with TaskServer(queues, config, [Method(infer, slot="gpu")], run_dir=run_dir):
        warmup = [queues.send_inputs("w", method="infer") for _ in range(4)]
        for _ in warmup:
            queues.get_result(timeout=120)
        start = time.perf_counter()
        for key in keys:
            queues.send_inputs(key, args.local_load, args.local_work, method="infer", warm=key)
        results = [queues.get_result(timeout=300) for _ in keys]
        makespan = time.perf_counter() - start
    assert all(r.success for r in results), [r.failure for r in results if not r.success]
    loads = sum(1 for r in results if r.warm is not None and not r.warm.hit)
    return makespan, loads


def main() -> None:
    """Run both parts and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--load", type=float, default=30.0)
    parser.add_argument("--work", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--local-tasks", type=int, default=16)
    parser.add_argument("--local-load", type=float, default=2.0)
    parser.add_argument("--local-work", type=float, default=0.2)
    parser.add_argument("--no-local", action="store_true", help="the sim part alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    warm_s, warm_loads, _ = sim_run(args, True)
    cold_s, cold_loads, _ = sim_run(args, False)
    print(
        f"sim: {args.tasks} tasks, {args.sites} sites x {args.workers} workers, "
        f"{args.versions} versions, load {args.load:g} s, work {args.work:g} s"
    )
    print(f"  warm placement: makespan {warm_s:9.1f} s, {warm_loads} loads")
    print(f"  without it:     makespan {cold_s:9.1f} s, {cold_loads} loads")
    if not args.no_local:
        with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
            local_warm, local_warm_loads = local_run(args, True, Path(tmp) / "warm")
            local_cold, local_cold_loads = local_run(args, False, Path(tmp) / "cold")
        print(
            f"local: {args.local_tasks} tasks, 2 sites x 1 worker, 2 keys, "
            f"load {args.local_load:g} s, work {args.local_work:g} s"
        )
        print(f"  warm placement: makespan {local_warm:7.2f} s, {local_warm_loads} loads")
        print(f"  without it:     makespan {local_cold:7.2f} s, {local_cold_loads} loads")
        print(f"ratio_local {local_warm / local_cold:.3f}")
    print(f"ratio {warm_s / cold_s:.3f}")


if __name__ == "__main__":
    main()
