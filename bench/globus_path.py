"""The production (`globus`) path through the local testbed against the `local` backend, in one run.

The same endpoint YAML (endpoints/local-cpu.yaml) serves both: in-process as a `local` site, and
as a real endpoint daemon behind the testbed's stand-in Globus Compute service and RabbitMQ
broker, reached through the Globus Compute SDK's Executor as a `globus` site. Each is measured
without prefetch (at most one task per worker in flight: strict late binding) and with
prefetch (``--prefetch`` tasks beyond the workers, hiding the round trip).

The baseline of the `globus` backend itself is the Globus Compute SDK's ``Executor`` driven
directly against the same endpoint, as a script would (``sdk``): the same no-op function,
registered once, each burst submitted at once and every future waited for; it gets the batch
size and client-side rate limit colmena-fed's backend uses (the SDK's default of 4 API calls
per 16 s would only measure that throttle).

Prints, per contender, the median round-trip latency of one no-op task (sequential) and the
median throughput of bursts of ``--tasks`` no-op tasks (``--tasks-late`` without prefetch,
where every task waits for a round trip; the contenders take turns, so drift of the machine
affects all alike); then the testbed's throughput with prefetch over the `local` backend's in
its default configuration (``ratio_vs_local_default``); the `globus` backend holding the whole
burst in flight, as the bare SDK does, over the bare SDK (``ratio_vs_sdk``); and as its last
line the like-for-like
``ratio <testbed throughput with prefetch / local throughput with prefetch>``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from globus_compute_sdk import Executor

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.backends.globus import ServiceClients
from colmena_fed.sites import GlobusConfig
from colmena_fed.testbed.bed import Testbed

ENDPOINT_YAML = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"


def noop(x: int) -> int:
    return x


def check(result: Result) -> None:
    """Stop the benchmark at the first task that did not come back with its value."""
    if not result.success:
        raise RuntimeError(f"a task failed or timed out: {result}")


class Federated:
    """colmena-fed: one site (`local` or `globus`) behind a task server."""

    def __init__(self, config: dict[str, Any], run_dir: Path) -> None:
        self.queues = TaskQueues()
        sites = SitesConfig.from_dict(config)
        self.server = TaskServer(self.queues, sites, [Method(noop)], run_dir=run_dir)
        self.server.start()

    def burst(self, n_tasks: int) -> float:
        """Tasks per second for ``n_tasks`` no-op tasks sent at once."""
        started = time.perf_counter()
        for i in range(n_tasks):
            self.queues.send_inputs(i, method="noop")
        for _ in range(n_tasks):
            check(self.queues.get_result(timeout=600))
        return n_tasks / (time.perf_counter() - started)

    def stop(self) -> None:
        """Stop the task server (its sites and its SDK result watcher)."""
        self.server.stop()


class BareSdk:
    """The baseline: the SDK's Executor on the same endpoint, driven directly."""

    def __init__(self, endpoint: str) -> None:
        self.clients = ServiceClients(GlobusConfig(service="testbed"), uuid.uuid4())
        self.executor = Executor(
            endpoint_id=endpoint,
            client=self.clients.tasks,
            task_group_id=self.clients.task_group,
            batch_size=128,
            api_burst_limit=8,
            api_burst_window_s=1,
        )
        self.function_id = self.executor.register_function(noop)

    def burst(self, n_tasks: int) -> float:
        """Tasks per second for ``n_tasks`` no-op tasks submitted at once."""
        started = time.perf_counter()
        futures = [
            self.executor.submit_to_registered_function(self.function_id, (i,))
            for i in range(n_tasks)
        ]
        for i, future in enumerate(futures):
            if future.result(timeout=600) != i:
                raise RuntimeError(f"task {i} came back with {future.result()!r}")
        return n_tasks / (time.perf_counter() - started)

    def stop(self) -> None:
        """Stop the Executor and its result watcher."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.clients.stop()


def latency(burst: Callable[[int], float], rounds: int) -> float:
    """Median seconds of one task's round trip, sent alone."""
    return statistics.median(1 / burst(1) for _ in range(rounds))


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
        kinds = {
            "local": [("", 0), (" + prefetch", args.prefetch)],
            "testbed": [("", 0), (" + prefetch", args.prefetch), (" whole burst", args.tasks)],
        }
        for backend, labels in kinds.items():
            for label, extra in labels:
                # In flight: at most the slots, and at most the live workers (2) plus prefetch.
                site: dict[str, Any] = {"resources": {"cpu": 2 + extra}, "prefetch": extra}
                if backend == "local":
                    site["local"] = str(ENDPOINT_YAML)
                else:
                    site["endpoint"] = endpoint
                contenders[backend + label] = {
                    "config": {"sites": {backend: site}, "globus": {"service": "testbed"}},
                    "tasks": args.tasks if extra else args.tasks_late,
                }
        drivers: list[Federated | BareSdk] = []
        try:
            for name, contender in contenders.items():
                slug = name.replace(" + ", "-").replace(" ", "-")
                federated = Federated(contender["config"], directory / slug)
                drivers.append(federated)
                contender.update(driver=federated, rates=[])
            sdk = BareSdk(endpoint)
            drivers.append(sdk)
            contenders["sdk"] = {"driver": sdk, "tasks": args.tasks, "rates": []}
            for contender in contenders.values():
                contender["driver"].burst(4)  # warm: workers up, functions registered
            for contender in contenders.values():
                contender["latency"] = latency(contender["driver"].burst, args.rounds)
            for _ in range(args.repeats):
                for contender in contenders.values():
                    contender["rates"].append(contender["driver"].burst(contender["tasks"]))
        finally:
            for driver in drivers:
                driver.stop()
    print(f"# {platform.node()} {time.strftime('%Y-%m-%d')} prefetch={args.prefetch}")
    print(f"{'contender':<20} {'latency ms':>11} {'tasks/s':>9} {'burst':>6}")
    for name, contender in contenders.items():
        contender["rate"] = statistics.median(contender["rates"])
        latency_ms = contender["latency"] * 1e3
        print(f"{name:<20} {latency_ms:>11.1f} {contender['rate']:>9.1f} {contender['tasks']:>6}")
    testbed = contenders["testbed + prefetch"]["rate"]
    print(f"ratio_vs_local_default {testbed / contenders['local']['rate']:.3f}")
    whole = contenders["testbed whole burst"]["rate"]
    print(f"ratio_vs_sdk {whole / contenders['sdk']['rate']:.3f}")
    print(f"ratio {testbed / contenders['local + prefetch']['rate']:.3f}")


if __name__ == "__main__":
    main()
