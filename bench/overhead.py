"""Overhead of colmena-fed's full path over the raw Globus Compute engine, in one run.

(a) no-op tasks submitted straight to the engine built from endpoints/local-cpu.yaml, in Globus
Compute's message format; (b) the same tasks through send_inputs -> task server -> site ->
result on its topic, on the same YAML. Prints both throughputs, the median added latency of one
task (sequential round trips), and as its last line ``ratio <colmena-fed / raw throughput>``.
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

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result as GCResult
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines.base import GCFuture
from globus_compute_sdk.serialize import ComputeSerializer

from colmena_fed.backends.local import load_engine, prepare_worker_environment
from colmena_fed.methods import Method
from colmena_fed.queues import TaskQueues
from colmena_fed.server import TaskServer
from colmena_fed.sites import SitesConfig

ENDPOINT_YAML = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"


def noop(x: int) -> int:
    return x


def measure_raw(n_tasks: int, n_latency: int, run_dir: Path) -> tuple[float, float]:
    """Throughput (tasks/s) and median round trip (s) of the bare engine."""
    prepare_worker_environment()
    engine = load_engine(ENDPOINT_YAML)
    engine.start(endpoint_id=uuid.uuid4(), run_dir=str(run_dir))
    serializer = ComputeSerializer()
    function = serializer.serialize(noop)
    empty = serializer.serialize({})

    def submit(i: int) -> GCFuture:
        task_id = uuid.uuid4()
        buffer = serializer.pack_buffers([function, serializer.serialize((i,)), empty])
        future = GCFuture(task_id)
        engine.submit(future, messagepack.pack(Task(task_id=task_id, task_buffer=buffer)), {})
        return future

    def result(future: GCFuture) -> int:
        message = messagepack.unpack(future.result())
        assert isinstance(message, GCResult)
        value: int = serializer.deserialize(message.data)
        return value

    try:
        for future in [submit(i) for i in range(8)]:
            result(future)
        latency = _round_trips(n_latency, lambda i: result(submit(i)))
        start = time.perf_counter()
        futures = [submit(i) for i in range(n_tasks)]
        for future in futures:
            result(future)
        elapsed = time.perf_counter() - start
    finally:
        engine.shutdown()
    return n_tasks / elapsed, latency


def measure_colmena_fed(
    n_tasks: int, n_latency: int, slots: int, run_dir: Path
) -> tuple[float, float]:
    """Throughput (tasks/s) and median round trip (s) through colmena-fed's full path."""
    sites = SitesConfig.from_dict(
        {"sites": {"bench": {"local": str(ENDPOINT_YAML), "resources": {"cpu": slots}}}}
    )
    queues = TaskQueues(topics=["bench"])

    def round_trip(i: int) -> None:
        queues.send_inputs(i, method="noop", topic="bench")
        result = queues.get_result("bench")
        assert result is not None
        assert result.success, result

    with TaskServer(queues, sites, [Method(noop)], run_dir=run_dir):
        for i in range(8):
            queues.send_inputs(i, method="noop", topic="bench")
        for _ in range(8):
            queues.get_result("bench")
        latency = _round_trips(n_latency, round_trip)
        start = time.perf_counter()
        for i in range(n_tasks):
            queues.send_inputs(i, method="noop", topic="bench")
        for _ in range(n_tasks):
            result = queues.get_result("bench")
            assert result is not None
            assert result.success, result
        elapsed = time.perf_counter() - start
    return n_tasks / elapsed, latency


def _round_trips(count: int, once: Callable[[int], object]) -> float:
    times = []
    for i in range(count):
        start = time.perf_counter()
        once(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-tasks", type=int, default=200)
    parser.add_argument("--slots", type=int, default=256, help="cpu slots of the bench site")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    print(f"endpoint: {ENDPOINT_YAML.name}; {args.tasks} no-op tasks; slots={args.slots}")
    raw_rates, raw_lat, fed_rates, fed_lat = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="colmena-fed-bench-") as tmp:
        for repeat in range(args.repeats):
            rate, lat = measure_raw(args.tasks, args.latency_tasks, Path(tmp) / f"raw{repeat}")
            raw_rates.append(rate)
            raw_lat.append(lat)
            rate, lat = measure_colmena_fed(
                args.tasks, args.latency_tasks, args.slots, Path(tmp) / f"fed{repeat}"
            )
            fed_rates.append(rate)
            fed_lat.append(lat)
            print(
                f"repeat {repeat}: raw {raw_rates[-1]:7.1f} tasks/s {raw_lat[-1] * 1e3:6.2f} ms | "
                f"colmena-fed {fed_rates[-1]:7.1f} tasks/s {fed_lat[-1] * 1e3:6.2f} ms"
            )
    raw_rate, fed_rate = statistics.median(raw_rates), statistics.median(fed_rates)
    added = statistics.median(fed_lat) - statistics.median(raw_lat)
    print(f"raw engine throughput   {raw_rate:8.1f} tasks/s (median of {args.repeats})")
    print(f"colmena-fed throughput  {fed_rate:8.1f} tasks/s (median of {args.repeats})")
    print(
        f"median round trip: raw {statistics.median(raw_lat) * 1e3:.2f} ms, "
        f"colmena-fed {statistics.median(fed_lat) * 1e3:.2f} ms"
    )
    print(f"added latency median    {added * 1e3:8.3f} ms per task")
    print(f"ratio {fed_rate / raw_rate:.3f}")


if __name__ == "__main__":
    main()
