"""The production (`globus`) path through the local testbed against the `local` backend, in one run.

The same endpoint YAML (endpoints/local-cpu.yaml) serves both: in-process as a `local` site, and
as a real endpoint daemon behind the testbed's stand-in Globus Compute service and RabbitMQ
broker, reached through the Globus Compute SDK's Executor as a `globus` site. Each is measured
without prefetch (at most one task per worker in flight: strict late binding) and with
prefetch (``--prefetch`` tasks beyond the workers, hiding the round trip).

Prints, per contender, the median round-trip latency of one no-op task (sequential) and the
median throughput of bursts of ``--tasks`` no-op tasks (``--tasks-late`` without prefetch,
where every task waits for a round trip; the contenders take turns, so drift of the machine
affects all alike), the testbed's throughput with prefetch over the `local` backend's in its
default configuration (``ratio_vs_local_default``), and as its last line the like-for-like
``ratio <testbed throughput with prefetch / local throughput with prefetch>``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.testbed.bed import Testbed

ENDPOINT_YAML = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"


def noop(x: int) -> int:
    return x


def check(result: Result | None) -> None:
    """Stop the benchmark at the first task that did not come back with its value."""
    if result is None or not result.success:
        raise RuntimeError(f"a task failed or timed out: {result}")


def burst(queues: TaskQueues, n_tasks: int) -> float:
    """Tasks per second for ``n_tasks`` no-op tasks sent at once."""
    started = time.perf_counter()
    for i in range(n_tasks):
        queues.send_inputs(i, method="noop")
    for _ in range(n_tasks):
        result = queues.get_result(timeout=600)
        check(result)
    return n_tasks / (time.perf_counter() - started)


def latency(queues: TaskQueues, rounds: int) -> float:
    """Median seconds of one task's round trip, sent alone."""
    spans = []
    for i in range(rounds):
        started = time.perf_counter()
        queues.send_inputs(i, method="noop")
        result = queues.get_result(timeout=600)
        check(result)
        spans.append(time.perf_counter() - started)
    return statistics.median(spans)


def main() -> None:
    """Run the benchmark and print its table and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="Tasks per burst.")
    parser.add_argument(
        "--tasks-late",
        type=int,
        default=100,
        help="Tasks per burst without prefetch (a round trip per task and worker: slow).",
    )
    parser.add_argument("--repeats", type=int, default=5, help="Bursts per contender.")
    parser.add_argument("--rounds", type=int, default=20, help="Round trips for latency.")
    parser.add_argument("--prefetch", type=int, default=512, help="Prefetch when on.")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="colmena-fed-bench-"))
    with Testbed(directory / "testbed") as bed:
        bed.start([ENDPOINT_YAML])
        endpoint = bed.endpoints["local-cpu"]
        contenders: dict[str, dict[str, Any]] = {}
        for backend, prefetch in (("local", 0), ("local", 1), ("testbed", 0), ("testbed", 1)):
            # In flight: at most the slots, and at most the live workers (2) plus prefetch.
            extra = args.prefetch if prefetch else 0
            site: dict[str, Any] = {"resources": {"cpu": 2 + extra}, "prefetch": extra}
            if backend == "local":
                site["local"] = str(ENDPOINT_YAML)
            else:
                site["endpoint"] = endpoint
            config = {"sites": {backend: site}, "globus": {"service": "testbed"}}
            contenders[f"{backend}{' + prefetch' if prefetch else ''}"] = {
                "config": config,
                "tasks": args.tasks if prefetch else args.tasks_late,
            }
        servers = []
        for name, contender in contenders.items():
            queues = TaskQueues()
            sites = SitesConfig.from_dict(contender["config"])
            slug = name.replace(" + ", "-")
            server = TaskServer(queues, sites, [Method(noop)], run_dir=directory / slug)
            server.start()
            servers.append(server)
            contender.update(queues=queues, rates=[])
            burst(queues, 4)  # warm: workers up, functions registered
        try:
            for contender in contenders.values():
                contender["latency"] = latency(contender["queues"], args.rounds)
            for _ in range(args.repeats):
                for contender in contenders.values():
                    contender["rates"].append(burst(contender["queues"], contender["tasks"]))
        finally:
            for server in servers:
                server.stop()
    print(f"# {platform.node()} {time.strftime('%Y-%m-%d')} prefetch={args.prefetch}")
    print(f"{'contender':<20} {'latency ms':>11} {'tasks/s':>9} {'burst':>6}")
    for name, contender in contenders.items():
        contender["rate"] = statistics.median(contender["rates"])
        latency_ms = contender["latency"] * 1e3
        print(f"{name:<20} {latency_ms:>11.1f} {contender['rate']:>9.1f} {contender['tasks']:>6}")
    testbed = contenders["testbed + prefetch"]["rate"]
    print(f"ratio_vs_local_default {testbed / contenders['local']['rate']:.3f}")
    print(f"ratio {testbed / contenders['local + prefetch']['rate']:.3f}")


if __name__ == "__main__":
    main()
