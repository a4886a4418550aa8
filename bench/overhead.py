"""Overhead of colmena-fed's full path over the raw Globus Compute engine, in one run.

(a) no-op tasks submitted straight to the engine built from endpoints/local-cpu.yaml, packed
in Globus Compute's message format; (b) the same tasks through colmena-fed's full path
(send_inputs -> task server -> site -> result on its topic, run journal included) on a site
made from the same YAML that may hold every task of a burst in flight, as the raw engine does
(``--slots``, default: ``--tasks``, given as prefetch over the 2 workers); (c) the same again
on a site holding at most ``--late-slots`` (256) in flight, the rest waiting on the thinker side
(late binding).
The engines run side by side for the whole benchmark and the bursts rotate between them (and
which goes first), so drift of the machine affects all alike.

Prints the throughputs (median over repeats), the median added latency of one task (sequential
round trips, interleaved), the CPU time this process spends per task in each, the late-binding
ratio, and as its last line ``ratio <colmena-fed / raw throughput>`` for (b): the median over
repeats of the ratio of each back-to-back pair of bursts, which cancels the slow drift of a
shared 2-core machine better than a ratio of medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result as GCResult
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines.base import GCFuture, GlobusComputeEngineBase
from globus_compute_sdk.serialize import ComputeSerializer

from colmena_fed import Method, SitesConfig, TaskQueues, TaskServer
from colmena_fed.backends.engine import load_engine, prepare_worker_environment

ENDPOINT_YAML = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"


def noop(x: int) -> int:
    return x


class RawEngine:
    """The baseline: a user driving the endpoint engine directly, function serialized once."""

    def __init__(self, run_dir: Path) -> None:
        prepare_worker_environment()
        self.engine: GlobusComputeEngineBase = load_engine(ENDPOINT_YAML)
        self.engine.start(endpoint_id=uuid.uuid4(), run_dir=str(run_dir))
        self.serializer = ComputeSerializer()
        self.function = self.serializer.serialize(noop)
        self.no_kwargs = self.serializer.serialize({})
        self.cpu_per_task: list[float] = []

    def submit(self, i: int) -> GCFuture:
        """Send ``noop(i)`` to the engine."""
        task_id = uuid.uuid4()
        buffer = self.serializer.pack_buffers(
            [self.function, self.serializer.serialize((i,)), self.no_kwargs]
        )
        future = GCFuture(task_id)
        self.engine.submit(future, messagepack.pack(Task(task_id=task_id, task_buffer=buffer)), {})
        return future

    def result(self, future: GCFuture) -> int:
        """Wait for and unpack one task's value."""
        message = messagepack.unpack(future.result())
        assert isinstance(message, GCResult)
        value: int = self.serializer.deserialize(message.data)
        return value

    def round_trip(self, i: int) -> None:
        """One task, start to finish."""
        self.result(self.submit(i))

    def burst(self, n_tasks: int) -> float:
        """Tasks per second for ``n_tasks`` submitted at once."""
        start = time.perf_counter()
        cpu = time.process_time()
        futures = [self.submit(i) for i in range(n_tasks)]
        for future in futures:
            self.result(future)
        self.cpu_per_task.append((time.process_time() - cpu) / n_tasks)
        return n_tasks / (time.perf_counter() - start)


class FullPath:
    """colmena-fed: send_inputs -> task server -> site -> result on its topic."""

    def __init__(
        self, run_dir: Path, slots: int, status_period: float, journal: bool = True
    ) -> None:
        sites = SitesConfig.from_dict(
            {
                "sites": {
                    "bench": {
                        "local": str(ENDPOINT_YAML),
                        "resources": {"cpu": slots},
                        "prefetch": slots,
                    }
                },
                "scheduler": {"status_period": status_period},
            }
        )
        self.queues = TaskQueues(topics=["bench"])
        self.server = TaskServer(
            self.queues, sites, [Method(noop)], run_dir=run_dir, journal=journal
        )
        self.server.start()
        self.cpu_per_task: list[float] = []

    def round_trip(self, i: int) -> None:
        """One task, start to finish."""
        self.queues.send_inputs(i, method="noop", topic="bench")
        result = self.queues.get_result("bench")
        assert result is not None
        assert result.success, result

    def burst(self, n_tasks: int) -> float:
        """Tasks per second for ``n_tasks`` sent at once, until the last result is taken."""
        start = time.perf_counter()
        cpu = time.process_time()
        for i in range(n_tasks):
            self.queues.send_inputs(i, method="noop", topic="bench")
        for _ in range(n_tasks):
            result = self.queues.get_result("bench")
            assert result is not None
            assert result.success, result
        self.cpu_per_task.append((time.process_time() - cpu) / n_tasks)
        return n_tasks / (time.perf_counter() - start)


def stop_all(contenders: Iterable[RawEngine | FullPath]) -> None:
    """Stop every task server and raw engine of a benchmark."""
    for contender in contenders:
        if isinstance(contender, FullPath):
            contender.server.stop()
        else:
            contender.engine.shutdown()


def interleaved_latency(
    count: int, raw: Callable[[int], None], fed: Callable[[int], None]
) -> tuple[float, float]:
    """Median round trip of each, measured alternately."""
    raw_times: list[float] = []
    fed_times: list[float] = []
    for i in range(count):
        for once, times in ((raw, raw_times), (fed, fed_times)):
            start = time.perf_counter()
            once(i)
            times.append(time.perf_counter() - start)
    return statistics.median(raw_times), statistics.median(fed_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--slots", type=int, default=0, help="slots of (b); 0: --tasks")
    parser.add_argument("--late-slots", type=int, default=256, help="slots of (c); 0: skip")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument(
        "--status-period", type=float, default=2.0, help="seconds between site status polls"
    )
    args = parser.parse_args()
    slots = args.slots or args.tasks
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    print(
        f"endpoint: {ENDPOINT_YAML.name}; {args.tasks} no-op tasks; slots={slots}, "
        f"late-binding slots={args.late_slots}; status every {args.status_period} s"
    )
    with tempfile.TemporaryDirectory(prefix="colmena-fed-bench-") as tmp:
        raw = RawEngine(Path(tmp) / "raw")
        fed = FullPath(Path(tmp) / "fed", slots, args.status_period)
        contenders: dict[str, RawEngine | FullPath] = {"raw": raw, "colmena-fed": fed}
        if args.late_slots:
            late = FullPath(Path(tmp) / "late", args.late_slots, args.status_period)
            contenders["late binding"] = late
        runs: dict[str, tuple[Callable[[int], float], list[float]]] = {
            name: (contender.burst, []) for name, contender in contenders.items()
        }
        try:
            for i in range(16):
                raw.round_trip(i)
                fed.round_trip(i)
            for burst, _ in runs.values():
                burst(200)
            raw_lat, fed_lat = interleaved_latency(
                args.latency_tasks, raw.round_trip, fed.round_trip
            )
            names = list(runs)
            for repeat in range(args.repeats):
                shift = repeat % len(names)  # rotate which goes first, so order effects cancel
                for name in names[shift:] + names[:shift]:
                    burst, rates = runs[name]
                    rates.append(burst(args.tasks))
                print(
                    f"repeat {repeat}: "
                    + " | ".join(f"{name} {rates[-1]:7.1f}" for name, (_, rates) in runs.items())
                    + " tasks/s"
                )
        finally:
            stop_all(contenders.values())
    raw_rates = runs["raw"][1]
    for name, (_, rates) in runs.items():
        median = statistics.median(rates)
        print(f"{name + ' throughput':28} {median:8.1f} tasks/s (median of {args.repeats})")
    print(f"median round trip: raw {raw_lat * 1e3:.3f} ms, colmena-fed {fed_lat * 1e3:.3f} ms")
    print(f"added latency median         {(fed_lat - raw_lat) * 1e3:8.3f} ms per task")
    print(
        "thinker-process CPU per task (median of bursts): "
        + ", ".join(
            f"{name} {statistics.median(contender.cpu_per_task) * 1e6:.0f} us"
            for name, contender in contenders.items()
        )
    )

    def paired(rates: list[float]) -> float:
        return statistics.median(f / r for f, r in zip(rates, raw_rates, strict=True))

    if args.late_slots:
        print(f"late-binding ratio           {paired(runs['late binding'][1]):8.3f}")
    print(f"ratio {paired(runs['colmena-fed'][1]):.3f}")


if __name__ == "__main__":
    main()
