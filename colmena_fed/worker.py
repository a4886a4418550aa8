"""What runs on a site's worker: the thin wrapper around a method.

The wrapper is what colmena-fed registers with Globus Compute. It catches every exception the
method raises, so an error reported by Globus Compute itself always means the site failed
(worker lost, engine stopped), never the user's code: that is how the task server tells a
failure to retry from one to report.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

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
