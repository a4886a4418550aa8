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
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

#: Environment variables that name the accelerator a worker is pinned to, in order of preference.
ACCELERATOR_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
    "SYCL_DEVICE_FILTER",
)


class WorkerReport(TypedDict):
    """What the wrapper sends back for one task."""

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


def accelerator_id() -> str | None:
    """The accelerator this worker is pinned to, read from the usual environment variables."""
    for name in ACCELERATOR_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


def run_method(
    method: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> WorkerReport:
    """Run ``method(*args, **kwargs)`` on a worker and report the outcome and its timing."""
    started = time.time()
    value: Any = None
    failure: tuple[str, str, str] | None = None
    try:
        value = method(*args, **kwargs)
    except Exception as exc:
        failure = (type(exc).__name__, str(exc), traceback.format_exc())
    ended = time.time()
    return WorkerReport(
        success=failure is None,
        value=value,
        exception_type=failure and failure[0],
        message=failure and failure[1],
        traceback=failure and failure[2],
        compute_started=started,
        compute_ended=ended,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        accelerator=accelerator_id(),
    )
