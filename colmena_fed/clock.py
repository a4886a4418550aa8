"""The clock every timestamp is read from: wall-clock time, or a simulation's virtual time.

Task records, placement decisions and staleness deadlines all read `now()`. A simulated
federation (`colmena_fed.backends.sim`) installs its virtual clock for the length of a run, so
the real task server and scheduler code run unchanged in virtual time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_now: Callable[[], float] = time.time


def now() -> float:
    """Seconds since the epoch, real or virtual."""
    return _now()


def install(source: Callable[[], float] | None) -> None:
    """Read time from ``source`` from now on; None restores the wall clock."""
    global _now
    _now = time.time if source is None else source
