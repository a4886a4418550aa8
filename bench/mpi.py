"""MPI tasks through colmena-fed against the raw GlobusMPIEngine, from the same YAML, in one run.

(a) ``--tasks`` (50) two-rank runs of examples/mpi/integrate.c submitted straight to the
``GlobusMPIEngine`` that endpoints/local-mpi.yaml describes, as Globus Compute's own
``MPIFunction`` in its message format, each with the resource specification
``{num_nodes: 1, ranks_per_node: 2}``; (b) the same runs as an `MPIMethod` through colmena-fed
(send_inputs -> task server -> node slots -> site -> result, journal included) on a site made
from the same YAML. Both engines run side by side for the whole benchmark, and the bursts
alternate (and which goes first), so drift of the machine affects both alike.

Prints each makespan, and as its last line ``ratio R``: the median over repeats of
colmena-fed's makespan over the raw engine's in each back-to-back pair.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result as GCResult
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines.base import GCFuture, GlobusComputeEngineBase
from globus_compute_sdk.sdk.mpi_function import MPIFunction
from globus_compute_sdk.serialize import ComputeSerializer

from colmena_fed import MPIMethod, SitesConfig, TaskQueues, TaskServer
from colmena_fed.backends.engine import give_node_list, load_engine, prepare_worker_environment
from colmena_fed.mpi import local_node_file

REPO = Path(__file__).resolve().parent.parent
ENDPOINT_YAML = REPO / "endpoints" / "local-mpi.yaml"
SOURCE = REPO / "examples" / "mpi" / "integrate.c"
TWO_RANKS = {"num_nodes": 1, "ranks_per_node": 2}


class RawEngine:
    """The baseline: a user driving the MPI engine directly with Globus Compute's MPIFunction."""

    def __init__(self, run_dir: Path, command: str) -> None:
        prepare_worker_environment()
        self.engine: GlobusComputeEngineBase = load_engine(ENDPOINT_YAML)
        give_node_list(self.engine, local_node_file(run_dir))  # as a scheduler-less machine needs
        self.engine.start(endpoint_id=uuid.uuid4(), run_dir=str(run_dir))
        self.serializer = ComputeSerializer()
        self.function = self.serializer.serialize(MPIFunction(command))
        self.no_args = self.serializer.serialize(())
        self.no_kwargs = self.serializer.serialize({})

    def makespan(self, n_tasks: int) -> float:
        """Seconds from submitting ``n_tasks`` runs at once to the last one's result."""
        start = time.perf_counter()
        futures = []
        for _ in range(n_tasks):
            task_id = uuid.uuid4()
            buffer = self.serializer.pack_buffers([self.function, self.no_args, self.no_kwargs])
            future = GCFuture(task_id)
            packed = messagepack.pack(Task(task_id=task_id, task_buffer=buffer))
            self.engine.submit(future, packed, resource_specification=dict(TWO_RANKS))
            futures.append(future)
        for future in futures:
            message = messagepack.unpack(future.result())
            assert isinstance(message, GCResult)
            shell = self.serializer.deserialize(message.data)
            assert shell.returncode == 0, shell
        return time.perf_counter() - start


class FullPath:
    """colmena-fed: the same runs as an MPIMethod on a site made from the same YAML."""

    def __init__(self, run_dir: Path, command: str) -> None:
        sites = SitesConfig.from_dict(
            {
                "sites": {"mpi": {"local": str(ENDPOINT_YAML), "resources": {"nodes": 1}}},
                "scheduler": {"status_period": 0.5},
            }
        )
        method = MPIMethod(command, "integrate", specification=TWO_RANKS)
        self.queues = TaskQueues()
        self.server = TaskServer(self.queues, sites, [method], run_dir=run_dir)
        self.server.start()

    def makespan(self, n_tasks: int) -> float:
        """Seconds from sending ``n_tasks`` runs at once to taking the last one's result."""
        start = time.perf_counter()
        for _ in range(n_tasks):
            self.queues.send_inputs(method="integrate")
        for _ in range(n_tasks):
            result = self.queues.get_result()
            assert result is not None
            assert result.success, result.failure
        return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="two-rank runs per burst")
    parser.add_argument("--repeats", type=int, default=3, help="bursts of each")
    parser.add_argument("--intervals", type=int, default=100000, help="the program's input")
    args = parser.parse_args()
    compiler = shutil.which("mpicc")
    if compiler is None:
        raise SystemExit("mpicc not found: install MPICH (apt-get install mpich libmpich-dev)")
    with tempfile.TemporaryDirectory(prefix="colmena-fed-bench-mpi-") as tmp:
        root = Path(tmp)
        binary = root / "integrate"
        subprocess.run([compiler, "-O2", "-o", str(binary), str(SOURCE)], check=True)
        command = f"{binary} {args.intervals}"
        (root / "raw").mkdir()
        raw = RawEngine(root / "raw", command)
        fed = FullPath(root / "fed", command)
        try:
            raw.makespan(2)  # warm both: the blocks start, the program is in the page cache
            fed.makespan(2)
            pairs: list[tuple[float, float]] = []
            for repeat in range(args.repeats):
                if repeat % 2 == 0:
                    raw_s = raw.makespan(args.tasks)
                    fed_s = fed.makespan(args.tasks)
                else:
                    fed_s = fed.makespan(args.tasks)
                    raw_s = raw.makespan(args.tasks)
                pairs.append((raw_s, fed_s))
                print(f"repeat {repeat}: raw {raw_s:.2f} s, colmena-fed {fed_s:.2f} s")
        finally:
            fed.server.stop()
            raw.engine.shutdown()
    raw_median = statistics.median(p[0] for p in pairs)
    fed_median = statistics.median(p[1] for p in pairs)
    print(f"machine {platform.node()} ({platform.processor() or platform.machine()})")
    n = args.tasks
    print(f"{n} two-rank tasks: raw engine {raw_median:.2f} s, colmena-fed {fed_median:.2f} s")
    print(f"per task: raw {raw_median / n * 1e3:.0f} ms, colmena-fed {fed_median / n * 1e3:.0f} ms")
    print(f"ratio {statistics.median(fed_s / raw_s for raw_s, fed_s in pairs):.3f}")


if __name__ == "__main__":
    main()
