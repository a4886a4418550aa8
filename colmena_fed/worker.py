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
import signal
import socket
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import dill
from proxystore.proxy import Proxy, extract, get_factory
from proxystore.store import get_store
from proxystore.store.utils import get_key

from colmena_fed.large import proxied_if_large
from colmena_fed.shell import SHELL_FAILED, ShellOutcome, ShellOutput, failure_message
from colmena_fed.stream import (
    CHANNEL_UNREACHABLE,
    ChannelUnreachable,
    StreamTarget,
    TaskStream,
    drain,
    streaming_into,
)
from colmena_fed.worker_cache import CacheBounds, WarmReport, begin_task, end_task

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
    intermediates: int | None = None
    shell: ShellOutput | None = None
    warm: WarmReport | None = None


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


#: The exception type of a report whose method ran past its walltime.
WALLTIME_EXCEEDED = "WalltimeExceeded"

#: Seconds a method interrupted at its walltime has to return before its worker is killed
#: (the engine then starts another worker).
KILL_GRACE_S = 5.0


class WalltimeExceeded(BaseException):
    """Raised in a method that ran past its walltime.

    A BaseException: ``except Exception`` in the method does not swallow it.
    """


def walltime_message(method: str, walltime: float) -> str:
    """What a task that ran past its walltime reports."""
    return f"method {method!r} ran past its walltime of {walltime} s and was stopped"


def run_method(
    method: Callable[..., Any], walltime: float | None = None, /, *args: Any, **kwargs: Any
) -> tuple[Any, ...]:
    """Run ``method(*args, **kwargs)`` on a worker; returns a `WorkerReport` as a plain tuple.

    With a ``walltime``, a call still running after that many seconds is interrupted (a
    `WalltimeExceeded` raised in it), and if it does not return within `KILL_GRACE_S` more,
    the worker process exits: the engine replaces it and reports the task lost, which the
    task server reads as a timeout since the walltime has passed.
    """
    started = time.time()
    value: Any = None
    failure: tuple[str | None, str | None, str | None] = (None, None, None)
    main = threading.current_thread() is threading.main_thread()
    returned = threading.Event() if walltime is not None and main else None
    try:
        try:
            if returned is not None and walltime is not None:
                _arm(returned, walltime)
            returned_value = method(*args, **kwargs)
            if isinstance(returned_value, types.GeneratorType):  # a stream, then its value
                returned_value = drain(returned_value)
            value = returned_value
        finally:
            _ARMED[0] = None  # from here no interrupt raises
    except WalltimeExceeded:
        name = getattr(method, "__name__", repr(method))
        failure = (WALLTIME_EXCEEDED, walltime_message(name, walltime or 0.0), None)
    except Exception as exc:
        failure = (type(exc).__name__, str(exc), traceback.format_exc())
    finally:
        if returned is not None:  # its watchdog stands down
            returned.set()
    ended = time.time()
    return (failure[0] is None, value, *failure, started, ended, *worker_identity(), *_NO_DATA)


#: The "returned" event of the call an interrupt may stop now, and of the call whose
#: watchdog sent the last interrupt (an interrupt raises only when they are the same call).
_ARMED: list[threading.Event | None] = [None]
_FIRED: list[threading.Event | None] = [None]


def _arm(returned: threading.Event, walltime: float) -> None:
    """Let the call now starting in the main thread be interrupted after ``walltime``.

    Only a call in the main thread can be interrupted (where Python runs signal handlers, and
    where process workers run tasks). The SIGALRM handler stays installed; it raises once per
    call at most, and only in the call its watchdog fired for.
    """
    if signal.getsignal(signal.SIGALRM) is not _interrupt:
        signal.signal(signal.SIGALRM, _interrupt)
    _ARMED[0] = returned
    args = (threading.main_thread().ident, returned, walltime)
    threading.Thread(target=_watch, args=args, daemon=True).start()


def _watch(main: int, returned: threading.Event, walltime: float) -> None:
    """Interrupt thread ``main`` unless the call returns within ``walltime``.

    If even the interrupt does not make the call return, the worker process exits.
    """
    if returned.wait(walltime):
        return
    _FIRED[0] = returned
    signal.pthread_kill(main, signal.SIGALRM)  # a no-op if the call returned meanwhile
    if not returned.wait(KILL_GRACE_S):
        os._exit(124)  # the call ignores the interrupt: only a new worker frees the slot


def _interrupt(signum: int, frame: object) -> None:
    armed = _ARMED[0]
    if armed is not None and armed is _FIRED[0]:
        _ARMED[0] = None
        raise WalltimeExceeded


#: The data fields of a report when nothing went through a store.
_NO_DATA = (None, None, None)

#: Where the data fields sit in a report's tuple.
_RESOLVE_S, _PROXY_S, _RESULT_BYTES = (
    WorkerReport._fields.index(name)
    for name in ("resolve_inputs_s", "proxy_result_s", "result_bytes")
)


#: Methods this worker process has unpickled, by the key `pack_method` gave them.
_unpacked: dict[str, Callable[..., Any]] = {}


def run_packed(  # noqa: PLR0917 (positional: Globus Compute sends them so)
    key: str,
    packed: bytes,
    results: ResultPolicy | None,
    stream: StreamTarget | None,
    cache: CacheBounds | None,
    task_id: str,
    attempt: int,
    walltime: float | None,
    /,
    *args: Any,
    **kwargs: Any,
) -> bytes | tuple[Any, ...]:
    """Run the method pickled in ``packed`` (unpickled once per worker process, by ``key``).

    ``task_id`` is colmena-fed's id of the task, sent back on the report: a resumed run
    matches the results it finds at a site by it. ``attempt`` numbers this try of the task
    (its intermediate results carry it, to ``stream``, for a streaming method). ``walltime``
    limits the call (see `run_method`). Input proxies are resolved first, so the method sees
    ordinary objects; with ``results``, a result larger than its threshold goes back as a
    proxy. ``cache`` bounds what the worker keeps warm (`colmena_fed.warm`) for the site.
    Returns the `WorkerReport` pickled, or as a plain tuple if the value cannot be
    pickled by the standard pickler (Globus Compute's dill-based serializer then takes it).
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
    streamed = None if stream is None else TaskStream(stream, task_id, attempt)
    streaming_into(streamed)
    begin_task(cache)
    try:
        report = run_method(method, walltime, *args, **kwargs)
    finally:
        streaming_into(None)
        warmth = end_task()
    shell = None
    if type(report[1]) is ShellOutcome:  # a shell method: its output travels beside the value
        value, shell = report[1]
        if shell.returncode == 0:
            report = (True, value, *report[2:])
        else:
            message = failure_message(key.rsplit("-", 1)[0], shell)
            report = (False, None, SHELL_FAILED, message, None, *report[5:])
    if streamed is not None:
        try:
            streamed.finish()  # the result goes only once the channel has every value
        except ChannelUnreachable as exc:
            report = (False, None, CHANNEL_UNREACHABLE, str(exc), None, *report[5:])
    for proxy in proxies:  # the store caches what it resolved: a worker must not hoard inputs
        _forget(proxy)
    if resolve_s is not None or (results is not None and report[0]):
        report = _with_data(report, resolve_s, results)
    report = (*report, task_id, None if streamed is None else streamed.sent, shell, warmth)
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
    if results is not None and fields[0]:
        fields[1], fields[_PROXY_S], fields[_RESULT_BYTES] = proxied_if_large(fields[1], results)
    return tuple(fields)


def pack_method(
    function: Callable[..., Any],
    name: str,
    results: ResultPolicy | None = None,
    stream: StreamTarget | None = None,
    cache: CacheBounds | None = None,
) -> functools.partial[Any]:
    """What a site registers for ``function``: `run_packed` bound to it, under ``name``.

    ``results`` says how the site's workers send back results too large to travel inline;
    ``stream`` where a streaming method's intermediate results go; ``cache`` how much the
    site's workers keep warm. Call it with the task's
    id, attempt number and walltime (None: no limit) first, then the method's inputs.
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
    wrapper = functools.partial(run_packed, key, packed, results, stream, cache)
    wrapper.__name__ = name  # type: ignore[attr-defined]
    return wrapper


def read_report(data: Any) -> WorkerReport:
    """The `WorkerReport` in what `run_packed` or `run_method` returned (missing fields default)."""
    fields = pickle.loads(data) if isinstance(data, bytes) else data
    return WorkerReport(*fields)
