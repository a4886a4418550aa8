"""What runs on a site's worker: the thin wrapper around a method.

The wrapper is what colmena-fed registers with Globus Compute. It catches every exception the
method raises, so an error reported by Globus Compute itself always means the site failed
(worker lost, engine stopped), never the user's code: that is how the task server tells a
failure to retry from one to report.

Two things keep the per-task cost on a worker close to that of the bare function. The method
travels pickled inside the registered function (`pack_method`), and each worker process
unpickles it once and keeps it (`run_packed`): unpickling a wrapped function with dill on every
task costs more than many methods run. The report goes back pickled by the standard (C)
pickler when it can be, so Globus Compute's serializer only wraps bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import socket
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import dill
from proxystore.proxy import Proxy, extract, get_factory
from proxystore.store import get_or_create_store, get_store
from proxystore.store.utils import get_key

if TYPE_CHECKING:
    from colmena_fed.data import ResultPolicy

#: Environment variables that name the accelerator a worker is pinned to, in order of preference.
ACCELERATOR_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
    "SYCL_DEVICE_FILTER",
)


class WorkerReport(NamedTuple):
    """What the wrapper sends back for one task.

    It travels as a plain tuple (``WorkerReport._make`` reads it back): Globus Compute's
    serializer pickles a tuple several times faster than a dict or a class instance, and every
    worker pays that cost once per task.
    """

    success: bool
    value: Any
    exception_type: str | None
    message: str | None
    traceback: str | None
    compute_started: float
    compute_ended: float
    hostname: str
    pid: int
    accelerator: str | None
    resolve_inputs_s: float | None = None
    proxy_result_s: float | None = None
    result_bytes: int | None = None
    task_id: str | None = None


_identity: tuple[str, int, str | None] | None = None


def accelerator_id() -> str | None:
    """The accelerator this worker is pinned to, read from the usual environment variables."""
    for name in ACCELERATOR_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


def worker_identity() -> tuple[str, int, str | None]:
    """Host name, process id and accelerator of this worker (computed once per process)."""
    global _identity
    if _identity is None or _identity[1] != os.getpid():
        _identity = (socket.gethostname(), os.getpid(), accelerator_id())
    return _identity


def run_method(method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Run ``method(*args, **kwargs)`` on a worker; returns a `WorkerReport` as a plain tuple."""
    started = time.time()
    value: Any = None
    failure: tuple[str | None, str | None, str | None] = (None, None, None)
    try:
        value = method(*args, **kwargs)
    except Exception as exc:
        failure = (type(exc).__name__, str(exc), traceback.format_exc())
    ended = time.time()
    return (failure[0] is None, value, *failure, started, ended, *worker_identity(), *_NO_DATA)


#: The data fields of a report when nothing went through a store.
_NO_DATA = (None, None, None)

#: Where the data fields sit in a report's tuple.
_RESOLVE_S, _PROXY_S, _RESULT_BYTES = (
    WorkerReport._fields.index(name)
    for name in ("resolve_inputs_s", "proxy_result_s", "result_bytes")
)


#: Methods this worker process has unpickled, by the key `pack_method` gave them.
_unpacked: dict[str, Callable[..., Any]] = {}


def run_packed(
    key: str,
    packed: bytes,
    results: ResultPolicy | None,
    task_id: str,
    /,
    *args: Any,
    **kwargs: Any,
) -> bytes | tuple[Any, ...]:
    """Run the method pickled in ``packed`` (unpickled once per worker process, by ``key``).

    ``task_id`` is colmena-fed's id of the task, sent back on the report: a resumed run
    matches the results it finds at a site by it. Input proxies are resolved first, so the
    method sees ordinary objects; with ``results``, a result larger than its threshold goes
    back as a proxy. Returns the `WorkerReport` pickled, or as a plain tuple if the value
    cannot be pickled by the standard pickler (Globus Compute's dill-based serializer then
    takes it).
    """
    method = _unpacked.get(key)
    if method is None:
        method = _unpacked[key] = dill.loads(packed)
    resolve_s = None
    proxies = [v for v in (*args, *kwargs.values()) if type(v) is Proxy]
    if proxies:
        started = time.perf_counter()
        args = tuple(_resolved(value) for value in args)
        kwargs = {name: _resolved(value) for name, value in kwargs.items()}
        resolve_s = time.perf_counter() - started
    report = run_method(method, *args, **kwargs)
    for proxy in proxies:  # the store caches what it resolved: a worker must not hoard inputs
        _forget(proxy)
    if resolve_s is not None or (results is not None and report[0]):
        report = _with_data(report, resolve_s, results)
    report = (*report, task_id)
    try:
        return pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    try:
        dill.dumps(report[1])  # what Globus Compute's serializer will try
    except Exception as exc:  # the method's fault, not the site's: one user failure
        return _unserializable(report, key.rsplit("-", 1)[0], exc)
    return report


def _unserializable(report: tuple[Any, ...], method: str, exc: Exception) -> bytes:
    """The report of a method whose return value cannot be sent back, as a failure."""
    fields = list(report)
    value = fields[1]
    fields[:5] = [
        False,
        None,
        "UnserializableResult",
        f"method {method!r} returned a {type(value).__module__}.{type(value).__qualname__}, "
        f"which cannot be serialized to send it back ({type(exc).__name__}: {exc}); return "
        "plain data (numbers, strings, lists, dicts, arrays) instead",
        None,
    ]
    return pickle.dumps(tuple(fields), protocol=pickle.HIGHEST_PROTOCOL)


def _resolved(value: Any) -> Any:
    return extract(value) if type(value) is Proxy else value


def store_name(proxy: Proxy[Any]) -> str:
    """The name of the store a proxy's object lives in."""
    factory = get_factory(proxy)
    return str(getattr(factory, "store_config").name)  # noqa: B009 (a StoreFactory's)


def _forget(proxy: Proxy[Any]) -> None:
    """Drop a resolved input from this worker's store cache."""
    store = get_store(store_name(proxy))
    if store is not None:
        store.cache.evict(get_key(proxy))


def _with_data(
    report: tuple[Any, ...], resolve_s: float | None, results: ResultPolicy | None
) -> tuple[Any, ...]:
    """The report with its data fields, its value proxied if it is too large to send back."""
    fields = list(report)
    fields[_RESOLVE_S] = resolve_s
    value = fields[1]
    if results is not None and fields[0] and not small(value, results.threshold):
        started = time.perf_counter()
        store = get_or_create_store(results.store)
        data = store.serializer(value)
        if len(data) > results.threshold:
            fields[1] = store.proxy_from_key(store.connector.put(data))
            fields[_PROXY_S], fields[_RESULT_BYTES] = time.perf_counter() - started, len(data)
    return tuple(fields)


#: Values never worth measuring for a store: they are small.
SMALL_TYPES = (int, float, bool, complex, type(None))


def small(value: Any, threshold: int) -> bool:
    """Whether ``value`` is surely under ``threshold`` bytes, judged without serializing it."""
    if isinstance(value, SMALL_TYPES):
        return True
    if isinstance(value, str):  # at most 4 bytes a character once encoded
        return 4 * len(value) < threshold
    if isinstance(value, (bytes, bytearray)):
        return len(value) < threshold
    size = getattr(value, "nbytes", None)
    return isinstance(size, int) and size < threshold


def pack_method(
    function: Callable[..., Any], name: str, results: ResultPolicy | None = None
) -> functools.partial[Any]:
    """What a site registers for ``function``: `run_packed` bound to it, under ``name``.

    ``results`` says how the site's workers send back results too large to travel inline.
    Call it with the task's id first, then the method's inputs.
    """
    try:
        packed = dill.dumps(function, recurse=True)  # a script's function takes its globals
    except Exception as exc:
        raise TypeError(
            f"method {name!r} cannot be sent to the sites: pickling it with the globals it "
            f"uses failed ({type(exc).__name__}: {exc}); open such objects (sockets, files, "
            "clients) inside the method instead of at module level"
        ) from exc
    key = f"{name}-{hashlib.sha256(packed).hexdigest()[:16]}"
    wrapper = functools.partial(run_packed, key, packed, results)
    wrapper.__name__ = name  # type: ignore[attr-defined]
    return wrapper


def read_report(data: Any) -> WorkerReport:
    """The `WorkerReport` in what `run_packed` returned (once Globus Compute unpacked it)."""
    fields = pickle.loads(data) if isinstance(data, bytes) else data
    return WorkerReport._make(fields)
