"""How fast intermediate results reach the thinker, against a raw Redis stream, in one run.

A redis-server of the benchmark's own on 127.0.0.1 is the channel; one local site from
endpoints/local-cpu.yaml. (a) colmena-fed: one generator method yields ``--values`` small
values as fast as it can (a burst); the thinker takes each with ``get_result`` (what a result
processor does): the rate, from the first ``yield`` to the last arrival. The same with
``--paced`` values `PACE_S` apart: the median time from a ``yield`` (the worker's clock, on
this machine) to its arrival, when the channel keeps up (in a burst that time is mostly the
wait behind the values yielded before it; it is printed too). (b) the baseline, on the same
site and Redis: a method appends the values to a Redis stream itself (``XADD``, one per value)
and this process reads them with ``XREAD``: the channel alone, without colmena-fed's journal,
ordering and queues. The four runs rotate ``--repeats`` times.

Prints each side's rate and latency, the ratio of the burst rates, and as its last line
``latency_ms L per_s T`` for colmena-fed: L the paced latency (bar 5 ms, goal 1 ms), T the
burst's intermediates per second (bar 2,000, goal 10,000); medians over the repeats.
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
from collections.abc import Generator
from pathlib import Path
from typing import Any

import redis

from colmena_fed import SitesConfig, TaskQueues, TaskServer
from colmena_fed.methods import MethodLike

ENDPOINT_YAML = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"
#: Seconds between two values of the paced runs (the latency measurement).
PACE_S = 0.001


def stream_values(n: int, pause: float) -> Generator[int, None, int]:
    """Yield ``n`` small values, ``pause`` seconds apart (colmena-fed's side)."""
    for i in range(n):
        if pause:
            time.sleep(pause)
        yield i
    return n


def raw_stream(n: int, pause: float, port: int, key: str) -> int:
    """Append ``n`` small values to a Redis stream, each with its send time (the baseline)."""
    connection = redis.Redis(port=port)
    for i in range(n):
        if pause:
            time.sleep(pause)
        connection.xadd(key, {"v": i, "w": repr(time.time())})
    return n


def colmena_fed_side(queues: TaskQueues, n: int, pause: float = 0.0) -> tuple[float, float]:
    """Median latency (s) and rate (values/s) of one task streaming ``n`` values."""
    queues.send_inputs(n, pause, method="stream_values")
    latencies: list[float] = []
    first_sent: float | None = None
    last = 0.0
    while True:
        result = queues.get_result(timeout=120)
        now = time.time()
        if result.sequence is None:
            break
        sent = result.timestamps.compute_ended or now
        first_sent = sent if first_sent is None else first_sent
        latencies.append(now - sent)
        last = now
    assert len(latencies) == n, f"{len(latencies)} of {n} intermediate results arrived"
    return statistics.median(latencies), n / (last - (first_sent or last))


def raw_side(queues: TaskQueues, port: int, n: int, pause: float = 0.0) -> tuple[float, float]:
    """The same through a bare Redis stream: median latency (s) and rate (values/s)."""
    key = f"bench:{uuid.uuid4()}"
    reader = redis.Redis(port=port)
    queues.send_inputs(n, pause, port, key, method="raw_stream")
    latencies: list[float] = []
    first_sent: float | None = None
    last, position = 0.0, "0-0"
    while len(latencies) < n:
        reply: Any = reader.xread({key: position}, count=1000, block=1000)
        now = time.time()
        for entry_id, fields in reply[0][1] if reply else []:
            sent = float(fields[b"w"])
            first_sent = sent if first_sent is None else first_sent
            latencies.append(now - sent)
            position = entry_id
        last = now
    queues.get_result(timeout=120)
    reader.delete(key)
    return statistics.median(latencies), n / (last - (first_sent or last))


def main() -> None:
    """Run both sides, rotating, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--paced", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (scripts/test.sh installs it)"
    with tempfile.TemporaryDirectory() as tmp:
        port = 20000 + uuid.uuid4().int % 20000
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        server = subprocess.Popen([*command, "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            config = SitesConfig.from_dict(
                {
                    "sites": {"cpu": {"local": str(ENDPOINT_YAML), "resources": {"cpu": 2}}},
                    "data": {"channels": {"stream": {"kind": "redis", "port": port}}},
                }
            )
            queues = TaskQueues()
            methods: list[MethodLike] = [stream_values, raw_stream]
            runs: dict[str, list[tuple[float, float]]] = {
                "ours": [],
                "raw": [],
                "ours paced": [],
                "raw paced": [],
            }
            with TaskServer(queues, config, methods, run_dir=Path(tmp) / "run"):
                colmena_fed_side(queues, 100)  # warm the workers up
                for repeat in range(args.repeats):
                    names = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
                    for name in names:
                        n, pause = (args.paced, PACE_S) if "paced" in name else (args.values, 0.0)
                        if name.startswith("ours"):
                            runs[name].append(colmena_fed_side(queues, n, pause))
                        else:
                            runs[name].append(raw_side(queues, port, n, pause))
                    print(
                        f"repeat {repeat}: "
                        + " | ".join(
                            f"{name} {v[-1][0] * 1e3:.2f} ms {v[-1][1]:.0f}/s"
                            for name, v in runs.items()
                        )
                    )
        finally:
            server.terminate()
            server.wait()

    def median(name: str, field: int) -> float:
        return statistics.median(run[field] for run in runs[name])

    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    for side, label in (("raw", "raw redis stream"), ("ours", "colmena-fed")):
        print(
            f"{label}: burst of {args.values}: {median(side, 1):.0f} values/s (median wait "
            f"{median(side, 0) * 1e3:.2f} ms, queueing included); {args.paced} values "
            f"{PACE_S * 1e3:g} ms apart: latency {median(side + ' paced', 0) * 1e3:.2f} ms"
        )
    print(f"rate ratio (colmena-fed / raw stream): {median('ours', 1) / median('raw', 1):.3f}")
    latency, rate = median("ours paced", 0) * 1e3, median("ours", 1)
    print(f"latency_ms {latency:.2f} per_s {rate:.0f}")


if __name__ == "__main__":
    main()
