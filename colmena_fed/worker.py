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
from typing import Any, NamedTuple

import dill

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
    return (failure[0] is None, value, *failure, started, ended, *worker_identity())


#: Methods this worker process has unpickled, by the key `pack_method` gave them.
_unpacked: dict[str, Callable[..., Any]] = {}


def run_packed(key: str, packed: bytes, /, *args: Any, **kwargs: Any) -> bytes | tuple[Any, ...]:
    """Run the method pickled in ``packed`` (unpickled once per worker process, by ``key``).

    Returns the `WorkerReport` pickled, or as a plain tuple if the value cannot be pickled by
    the standard pickler (Globus Compute's dill-based serializer then takes it).
    """
    method = _unpacked.get(key)
    if method is None:
        method = _unpacked[key] = dill.loads(packed)
    report = run_method(method, *args, **kwargs)
    try:
        return pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return report


def pack_method(function: Callable[..., Any], name: str) -> functools.partial[Any]:
    """What a site registers for ``function``: `run_packed` bound to it, under ``name``."""
    packed = dill.dumps(function)
    key = f"{name}-{hashlib.sha256(packed).hexdigest()[:16]}"
    wrapper = functools.partial(run_packed, key, packed)
    wrapper.__name__ = name  # type: ignore[attr-defined]
    return wrapper


def read_report(data: Any) -> WorkerReport:
    """The `WorkerReport` in what `run_packed` returned (once Globus Compute unpacked it)."""
    fields = pickle.loads(data) if isinstance(data, bytes) else data
    return WorkerReport._make(fields)
