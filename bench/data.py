"""Cost of large inputs and results through colmena-fed's data plane, against the raw store.

For each store kind (a ``file`` store: ProxyStore's FileConnector on a directory of this
machine's disk; a ``redis`` store: RedisConnector on a redis-server this bench starts on
127.0.0.1, nothing saved to disk) and each size (1, 10 and 100 MB of float64), it measures:

* colmena-fed: the whole round trip of one task, from ``send_inputs`` to ``get_result``
  returning with the value resolved, through a `TaskServer` with one ``local`` site made from
  endpoints/local-cpu.yaml (2 workers) and a ``data:`` section holding that one store
  (threshold 100 KB). The task's input is a numpy array of the size, its result an array of the
  same size (``--method``: ``add`` returns ``x + 1``, ``copy`` ``x.copy()``, ``same`` ``x``
  itself). Nothing is subtracted. The breakdown printed with it comes from ``Result.data``
  (thinker put of the input, worker resolve of it, worker put of the result, thinker resolve of
  it), the method's own run time, and what remains (Globus Compute transport of the ~1 KB
  proxies, scheduling, evictions, queues);
* raw store: with the same connector class on the same kind of directory, or the same Redis
  server, and a ProxyStore `Store` in this process, what moving the same data the same way
  costs with nothing else: the input goes thinker -> worker (``store.put`` + ``store.get`` of
  the input array) and the result worker -> thinker (``put`` + ``get`` of an array of the same
  size), so raw = put + get of the input + put + get of the result, i.e. 2 x (put + get). The
  ``evict`` of both objects is timed apart and not counted in raw (colmena-fed evicts both
  within its round trip).

Both task servers run side by side for the whole bench. Each round measures every store, in
an order that rotates, and for each store colmena-fed and raw back to back, which goes first
alternating, then the same task on a 64-byte array (``inline``: it travels inside the Globus
Compute message, no store: the engine's own round trip, to read ``other`` against). Each size
gets one discarded warm-up round, after a warm-up of both workers of each site. Times are
medians over ``--repeats`` (5) rounds at 1 and 10 MB and ``--repeats-100`` (5) at 100 MB (on a
small VM a 100 MB put or get now and then takes twice its usual time, so 3 rounds are too few
for a stable median); the ratio is median colmena-fed / median raw, and the median of each
round's own ratio is printed beside it.

Prints a table per store and size, the breakdown of the colmena-fed time (with ``vs data``:
the round trip over its own four store operations, a ratio free of the raw measurement's
noise), every sample at 100 MB, each worker's resident memory and what its ProxyStore cache
holds after the run, and as its last line ``ratio_100mb <x>``: the worse (max) over the two
stores of the 100 MB ratio.

Run: ``.venv/bin/python bench/data.py`` (about a minute; needs ``redis-server`` on PATH or at
``--redis-server``).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from proxystore.connectors.file import FileConnector
from proxystore.connectors.redis import RedisConnector
from proxystore.store import Store

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer

ENDPOINT_YAML = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"
MB = 1_000_000
SIZES_MB = (1, 10, 100)
THRESHOLD_BYTES = 100_000
STORE_KINDS = ("file", "redis")
#: redis-server options: nothing saved to disk.
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")

Array = npt.NDArray[np.float64]

# The methods run on workers: colmena-fed pickles a function of this script (__main__) by
# value, without the module's globals, so what they use they import themselves.


def add(x: Array) -> Array:
    return x + 1


def copy(x: Array) -> Array:
    return x.copy()


def same(x: Array) -> Array:
    return x


METHODS: dict[str, Callable[[Array], Array]] = {"add": add, "copy": copy, "same": same}


def settle(x: Array, seconds: float) -> int:
    """Warm-up: hold a worker a moment (so the next task goes to the other one)."""
    import time

    time.sleep(seconds)
    return int(x.size)


def worker_memory(seconds: float, store_name: str) -> tuple[int, float, int, float]:
    """This worker's pid, resident MB, and objects and MB held in its ProxyStore cache."""
    import os
    import time

    from proxystore.store import get_store

    time.sleep(seconds)  # so that the other probe goes to the other worker
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    store = get_store(store_name)
    cached = list(store.cache._data.values()) if store is not None else []
    held = sum(getattr(value, "nbytes", 0) for value in cached)
    return os.getpid(), pages * os.sysconf("SC_PAGE_SIZE") / 1e6, len(cached), held / 1e6


def expected_value(method: str, x: Array) -> Array:
    """What the method returns for ``x``."""
    return x + 1 if method == "add" else x


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of our own on 127.0.0.1 and a free port, nothing saved to disk."""

    def __init__(self, binary: str) -> None:
        """Start it and wait until it answers."""
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), *NO_PERSISTENCE],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"redis-server did not answer on port {self.port}")
        client.close()

    def stop(self) -> None:
        """Stop the server (this process's own child, by its handle)."""
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class FedSample:
    """One colmena-fed round trip and its breakdown, in seconds."""

    total: float
    proxy_inputs: float
    resolve_inputs: float
    proxy_result: float
    resolve_result: float
    run_time: float

    @property
    def data(self) -> float:
        """The four store operations: put and resolve of the input, then of the result."""
        return self.proxy_inputs + self.resolve_inputs + self.proxy_result + self.resolve_result

    @property
    def other(self) -> float:
        """What the data fields and the method do not account for."""
        return self.total - self.data - self.run_time


@dataclass
class RawSample:
    """One raw move of an input and a result through the store, in seconds."""

    put_in: float
    get_in: float
    put_out: float
    get_out: float
    evict: float

    @property
    def total(self) -> float:
        """Input put + get, plus result put + get (evictions not counted)."""
        return self.put_in + self.get_in + self.put_out + self.get_out


@dataclass
class Samples:
    """The samples of one store at one size."""

    fed: list[FedSample] = field(default_factory=list)
    raw: list[RawSample] = field(default_factory=list)
    inline: list[float] = field(default_factory=list)


def _seconds(value: float | None, what: str, result: Result) -> float:
    if value is None:
        raise RuntimeError(f"task {result.task_id}: no {what} (did the data go through a store?)")
    return value


class Contender:
    """One store kind: a task server with one local site using it, and a raw Store on it."""

    def __init__(self, kind: str, spec: dict[str, Any], raw_connector: Any, run_dir: Path) -> None:
        """Start the task server (its site's workers start in the background)."""
        self.kind = kind
        self.store_name = f"bench-{kind}"
        sites = SitesConfig.from_dict(
            {
                "sites": {"local": {"local": str(ENDPOINT_YAML), "resources": {"cpu": 2}}},
                "data": {"threshold_bytes": THRESHOLD_BYTES, "stores": {self.store_name: spec}},
                "scheduler": {"status_period": 0.5},
            }
        )
        self.queues = TaskQueues()
        methods = [*(Method(f) for f in METHODS.values()), Method(settle), Method(worker_memory)]
        self.server = TaskServer(self.queues, sites, methods, run_dir=run_dir)
        self.server.start()
        self.raw = Store(f"raw-{kind}", raw_connector, cache_size=0, register=False)

    def take(self) -> Result:
        """The next result, which must be a success."""
        result = self.queues.get_result(timeout=600)
        if not result.success:
            raise RuntimeError(f"{self.kind}: task failed: {result.failure}")
        return result

    def warm_up(self, x: Array) -> None:
        """Start both workers: each resolves an input proxy and puts a result once."""
        for _ in range(2):
            for _ in range(2):
                self.queues.send_inputs(x, 0.5, method="settle")
            for _ in range(2):
                self.take()

    def fed(self, method: str, x: Array, expected: Array) -> FedSample:
        """One round trip through colmena-fed, value resolved."""
        start = time.perf_counter()
        self.queues.send_inputs(x, method=method)
        result = self.take()
        total = time.perf_counter() - start
        value = result.value
        if not isinstance(value, np.ndarray) or not np.array_equal(value, expected):
            raise RuntimeError(f"{self.kind}: wrong result {type(value).__name__}")
        data = result.data
        return FedSample(
            total=total,
            proxy_inputs=_seconds(data.proxy_inputs_s, "proxy_inputs_s", result),
            resolve_inputs=_seconds(data.resolve_inputs_s, "resolve_inputs_s", result),
            proxy_result=_seconds(data.proxy_result_s, "proxy_result_s", result),
            resolve_result=_seconds(data.resolve_result_s, "resolve_result_s", result),
            run_time=_seconds(result.run_time, "run_time", result),
        )

    def inline(self, method: str, x: Array) -> float:
        """Round trip of the same task on a tiny array, which travels inline (no store)."""
        start = time.perf_counter()
        self.queues.send_inputs(x, method=method)
        result = self.take()
        elapsed = time.perf_counter() - start
        if result.data.input_bytes is not None or result.data.result_bytes is not None:
            raise RuntimeError(f"{self.kind}: the tiny task went through the store")
        return elapsed

    def raw_move(self, x: Array, y: Array) -> RawSample:
        """Put + get of the input, then put + get of the result; then evict both (apart).

        What a get returned is checked and dropped at once (the raw store keeps no cache), so
        this process holds no more arrays than the colmena-fed path's thinker does.
        """
        store = self.raw
        times: list[float] = []
        keys = []
        for obj in (x, y):
            start = time.perf_counter()
            key = store.put(obj)
            put = time.perf_counter()
            got = store.get(key)
            times += [put - start, time.perf_counter() - put]
            keys.append(key)
            if not isinstance(got, np.ndarray) or got.shape != x.shape:
                raise RuntimeError(f"{self.kind}: the raw store returned something else")
            del got
        start = time.perf_counter()
        for key in keys:
            store.evict(key)
        evict = time.perf_counter() - start
        put_in, get_in, put_out, get_out = times
        return RawSample(put_in, get_in, put_out, get_out, evict)

    def worker_memory(self) -> list[tuple[int, float, int, float]]:
        """Per worker: pid, resident MB, objects and MB in its ProxyStore cache."""
        for _ in range(2):  # two probes at once: one per worker
            self.queues.send_inputs(0.5, self.store_name, method="worker_memory")
        found = {}
        for _ in range(2):
            probe = self.take().value
            found[probe[0]] = tuple(probe)
        return sorted(found.values())

    def stop(self) -> None:
        """Stop the task server (its site's engine) and close the raw store."""
        self.server.stop()
        self.raw.close()


def measure(
    contenders: list[Contender], method: str, size_mb: int, repeats: int, warmup: int
) -> dict[str, Samples]:
    """Interleaved samples of every store at one size (the first ``warmup`` rounds dropped)."""
    n = size_mb * MB // 8
    x = np.arange(n, dtype=np.float64)
    y = x + 1  # the raw "result": same size and dtype as what the method returns
    expected = expected_value(method, x)
    tiny = np.arange(8, dtype=np.float64)
    samples = {c.kind: Samples() for c in contenders}
    for round_ in range(warmup + repeats):
        shift = round_ % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            if round_ % 2 == 0:  # which goes first alternates
                fed = contender.fed(method, x, expected)
                raw = contender.raw_move(x, y)
            else:
                raw = contender.raw_move(x, y)
                fed = contender.fed(method, x, expected)
            inline = contender.inline(method, tiny)
            if round_ >= warmup:
                samples[contender.kind].fed.append(fed)
                samples[contender.kind].raw.append(raw)
                samples[contender.kind].inline.append(inline)
    return samples


def med(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f}"


def report(results: dict[int, dict[str, Samples]], repeats: dict[int, int]) -> dict[str, float]:
    """Print the tables; return the 100 MB ratio of each store (if 100 MB was measured)."""
    print()
    print(
        "times in ms, medians; raw = put+get(input) + put+get(result) = 2 x (put + get); "
        "ratio = median colmena-fed / median raw (paired: median of each round's ratio)"
    )
    print(
        f"{'store':6} {'size':>6} {'n':>2} {'colmena-fed':>11} {'raw':>9} {'ratio':>6} "
        f"{'paired':>6} | {'raw put in':>10} {'get in':>9} {'put out':>9} {'get out':>9} "
        f"{'evict x2':>9}"
    )
    ratios: dict[str, float] = {}
    for size, by_store in results.items():
        for kind, samples in by_store.items():
            fed = med([s.total for s in samples.fed])
            raw = med([s.total for s in samples.raw])
            paired = med([f.total / r.total for f, r in zip(samples.fed, samples.raw, strict=True)])
            if size == 100:
                ratios[kind] = fed / raw
            parts = [
                med([getattr(s, name) for s in samples.raw])
                for name in ("put_in", "get_in", "put_out", "get_out", "evict")
            ]
            print(
                f"{kind:6} {size:>4}MB {repeats[size]:>2} {ms(fed):>11} {ms(raw)} "
                f"{fed / raw:6.2f} {paired:6.2f} | {ms(parts[0]):>10} "
                + " ".join(ms(p) for p in parts[1:])
            )
    print()
    print(
        "colmena-fed breakdown in ms, medians: the Result.data fields; run = the method's "
        "run_time;\nother = total - data fields - run; inline = round trip of the same task on a "
        "64-byte array (no store);\nvs data = total / the four data fields (colmena-fed over its "
        "own store operations, which the raw ratio's noise does not touch)"
    )
    print(
        f"{'store':6} {'size':>6} {'total':>9} {'proxy_in':>9} {'resolve_in':>10} "
        f"{'proxy_res':>9} {'resolve_res':>11} {'run':>9} {'other':>9} {'inline':>9} "
        f"{'vs data':>7}"
    )
    for size, by_store in results.items():
        for kind, samples in by_store.items():
            values = [
                med([getattr(s, name) for s in samples.fed])
                for name in (
                    "total",
                    "proxy_inputs",
                    "resolve_inputs",
                    "proxy_result",
                    "resolve_result",
                    "run_time",
                    "other",
                )
            ]
            values.append(med(samples.inline))
            vs_data = med([s.total / s.data for s in samples.fed])
            widths = (9, 9, 10, 9, 11, 9, 9, 9)
            print(
                f"{kind:6} {size:>4}MB "
                + " ".join(f"{ms(v):>{w}}" for v, w in zip(values, widths, strict=True))
                + f" {vs_data:7.2f}"
            )
    for size, by_store in results.items():
        if size < 100:
            continue
        print()
        print(f"samples at {size} MB, in measuring order (ms):")
        for kind, samples in by_store.items():
            print(f"  {kind:6} colmena-fed " + " ".join(ms(s.total) for s in samples.fed))
            print(f"  {kind:6} raw         " + " ".join(ms(s.total) for s in samples.raw))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="add", choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=5, help="repeats at 1 and 10 MB")
    parser.add_argument("--repeats-100", type=int, default=5, help="repeats at 100 MB")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_MB), help="sizes in MB")
    parser.add_argument("--stores", nargs="+", default=list(STORE_KINDS), choices=STORE_KINDS)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "")
    parser.add_argument(
        "--dir", default=None, help="parent of the store directories (default: the temp dir)"
    )
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    print(
        f"endpoint: {ENDPOINT_YAML.name}; method {args.method!r}; stores: {', '.join(args.stores)}"
        f"; threshold {THRESHOLD_BYTES} bytes; float64 arrays of {args.sizes} MB"
    )
    if "redis" in args.stores and not args.redis_server:
        parser.error("redis-server not found: give --redis-server or drop 'redis' from --stores")
    repeats = {size: args.repeats_100 if size >= 100 else args.repeats for size in args.sizes}
    redis_server: RedisServer | None = None
    contenders: list[Contender] = []
    results: dict[int, dict[str, Samples]] = {}
    memory: dict[str, list[tuple[int, float, int, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="colmena-fed-data-", dir=args.dir) as tmp:
        root = Path(tmp)
        try:
            for kind in args.stores:
                if kind == "file":
                    spec: dict[str, Any] = {"kind": "file", "path": str(root / "fed-store")}
                    raw_connector: Any = FileConnector(str(root / "raw-store"), clear=True)
                else:
                    redis_server = RedisServer(args.redis_server)
                    print(f"redis-server on 127.0.0.1:{redis_server.port}")
                    spec = {"kind": "redis", "port": redis_server.port}
                    raw_connector = RedisConnector("127.0.0.1", redis_server.port)
                contenders.append(Contender(kind, spec, raw_connector, root / f"run-{kind}"))
            started = time.perf_counter()
            small = np.arange(MB // 8, dtype=np.float64)
            for contender in contenders:
                contender.warm_up(small)
            print(f"warm-up (workers start, first tasks): {time.perf_counter() - started:.1f} s")
            for size in args.sizes:
                started = time.perf_counter()
                results[size] = measure(contenders, args.method, size, repeats[size], args.warmup)
                print(f"{size} MB measured in {time.perf_counter() - started:.1f} s")
            for contender in contenders:
                memory[contender.kind] = contender.worker_memory()
        finally:
            for contender in contenders:
                contender.stop()
            if redis_server is not None:
                redis_server.stop()
    ratios = report(results, repeats)
    print()
    for kind, workers in memory.items():
        print(
            f"{kind} site workers after the run: "
            + "; ".join(
                f"pid {pid} resident {rss:.0f} MB, {count} objects ({held:.0f} MB) held in its "
                "ProxyStore cache"
                for pid, rss, count, held in workers
            )
        )
    if ratios:
        print("ratio at 100 MB: " + ", ".join(f"{k} {r:.3f}" for k, r in ratios.items()))
        print(f"ratio_100mb {max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
