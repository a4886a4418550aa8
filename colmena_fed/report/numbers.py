"""The numbers of a run report, as one JSON-able dict (schema in docs/report.md).

A window (``since`` / ``until``, seconds from the run's start) narrows the report: counts,
waits and run times are over the tasks that *ended* in it (tasks still pending or in flight at
its end are counted as such); slot utilization and the series over time are clipped to it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from colmena_fed.report.load import DONE, FAILED, PENDING, RUNNING, Run, SiteHistory, TaskRow

#: Names and versions the JSON of a report (``--json``) follows.
SCHEMA = "colmena-fed-report/1"
#: How many of the slowest tasks a report lists.
SLOWEST = 10


@dataclass(frozen=True)
class Window:
    """The part of a run a report covers: absolute times (seconds since the epoch)."""

    start: float
    end: float

    @classmethod
    def of(cls, run: Run, since: float | None = None, until: float | None = None) -> Window:
        """From ``since`` to ``until`` seconds after the run's start (None: its start / end)."""
        start = run.start + (since or 0.0)
        end = run.end if until is None else min(run.end, run.start + until)
        if end < start:
            raise ValueError(
                f"the window starts after it ends (since {since} s, until {until} s; the run "
                f"lasted {run.end - run.start:.1f} s)"
            )
        return cls(start, end)

    def clip(self, begin: float, end: float) -> float:
        """Seconds of [begin, end) inside the window."""
        return max(0.0, min(end, self.end) - max(begin, self.start))


def summary(run: Run, window: Window) -> dict[str, Any]:
    """Every number of the report of ``run`` over ``window``."""
    ended = [t for t in run.tasks if t.ended is not None and window.start <= t.ended <= window.end]
    waiting = [t for t in run.tasks if t.created <= window.end and _open_at(t, window.end)]
    last = max((t.ended for t in ended if t.ended is not None), default=window.start)
    makespan = (window.end if waiting else last) - window.start
    return {
        "schema": SCHEMA,
        "run_dir": str(run.run_dir),
        "finished": run.finished,
        "resumes": run.resumes,
        "window": {
            "start": window.start,
            "end": window.end,
            "since_s": window.start - run.start,
            "until_s": window.end - run.start,
        },
        "campaign": {
            "tasks": len(run.tasks),
            "ended": len(ended),
            "done": sum(t.state == DONE for t in ended),
            "failed": sum(t.state == FAILED for t in ended),
            "pending": sum(_state_at(t, window.end) == PENDING for t in waiting),
            "in_flight": sum(_state_at(t, window.end) == RUNNING for t in waiting),
            "makespan_s": makespan,
            "tasks_per_hour": len(ended) / makespan * 3600 if makespan > 0 else None,
            "slowest": [_slowest(t) for t in _slowest_tasks(ended)],
        },
        "sites": [
            _site_slot(history, slot, run.by_site_slot.get((history.name, slot), []), window)
            for history in run.sites.values()
            for slot in history.capacity or {"": 0}
        ],
        "methods": _methods(ended),
        "stores": _stores(ended, run.sites),
    }


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Count, median and 95th percentile (numpy's linear interpolation) of the known values."""
    known = np.fromiter((v for v in values if v is not None), dtype=float)
    if not known.size:
        return {"count": 0, "median": None, "p95": None}
    median, p95 = np.percentile(known, [50, 95])
    return {"count": int(known.size), "median": float(median), "p95": float(p95)}


def offered_slot_seconds(history: SiteHistory, slot: str, window: Window) -> float:
    """Slot-seconds ``history``'s site offered of kind ``slot`` while online, in the window.

    A site offers its slots of a kind, but never more than its live workers when it reports
    them: a site of 64 slots and 2 workers runs at most 2 tasks at once.
    """
    slots = history.capacity.get(slot, 0)
    return sum(
        (slots if workers is None else min(slots, workers)) * seconds
        for workers, seconds in _online_spans(history, window)
    )


def _online_spans(history: SiteHistory, window: Window) -> Iterator[tuple[int | None, float]]:
    """Each stretch the site was online: its workers then, and its seconds in the window."""
    changes = history.changes
    for i, (at, online, workers) in enumerate(changes):
        if online:
            until = changes[i + 1][0] if i + 1 < len(changes) else window.end
            yield workers, window.clip(at, until)


def busy_slot_seconds(tasks: Iterable[TaskRow], window: Window) -> float:
    """Seconds ``tasks`` ran (their methods), inside the window."""
    return sum(
        window.clip(t.compute_started, t.compute_ended)
        for t in tasks
        if t.compute_started is not None and t.compute_ended is not None
    )


def _site_slot(
    history: SiteHistory, slot: str, ran: Sequence[TaskRow], window: Window
) -> dict[str, Any]:
    """The numbers of one site and slot kind, from the tasks it ran (or last held)."""
    name = history.name
    here = [t for t in ran if t.ended is not None and window.start <= t.ended <= window.end]
    busy = busy_slot_seconds(ran, window)
    offered = offered_slot_seconds(history, slot, window)
    failed = Counter(t.failure or "unknown" for t in here if t.state == FAILED)
    by_method: dict[str, list[float | None]] = defaultdict(list)
    for task in here:
        by_method[task.method].append(task.run_time)
    online = sum(seconds for _, seconds in _online_spans(history, window))
    return {
        "site": name,
        "kind": history.kind,
        "slot": slot,
        "slots": history.capacity.get(slot, 0),
        "done": sum(t.state == DONE for t in here),
        "failed": dict(sorted(failed.items())),
        "retries": sum(t.retries for t in here),
        "failovers": sum(t.failovers for t in here),
        "online_s": online,
        "busy_slot_s": busy,
        "offered_slot_s": offered,
        "utilization": busy / offered if offered > 0 else None,
        "thinker_wait_s": spread(t.thinker_wait for t in here),
        "remote_wait_s": spread(t.remote_wait for t in here),
        "overhead_s": spread(t.overhead for t in here),
        "run_time_s": {method: spread(times) for method, times in sorted(by_method.items())},
        "input_bytes": sum(t.input_bytes for t in here),
        "result_bytes": sum(t.result_bytes for t in here),
    }


def _methods(ended: Sequence[TaskRow]) -> list[dict[str, Any]]:
    rows: dict[str, list[TaskRow]] = defaultdict(list)
    for task in ended:
        rows[task.method].append(task)
    return [
        {
            "method": method,
            "done": sum(t.state == DONE for t in tasks),
            "failed": sum(t.state == FAILED for t in tasks),
            "run_time_s": spread(t.run_time for t in tasks),
            "thinker_wait_s": spread(t.thinker_wait for t in tasks),
            "remote_wait_s": spread(t.remote_wait for t in tasks),
        }
        for method, tasks in sorted(rows.items())
    ]


def _stores(ended: Sequence[TaskRow], sites: dict[str, SiteHistory]) -> list[dict[str, Any]]:
    inputs: Counter[str] = Counter()
    results: Counter[str] = Counter()
    for task in ended:
        if task.input_bytes and task.stores:
            inputs[task.stores[0]] += task.input_bytes
        store = sites[task.site].result_store if task.site in sites else None
        if task.result_bytes and store is not None:
            results[store] += task.result_bytes
    return [
        {"store": store, "input_bytes": inputs[store], "result_bytes": results[store]}
        for store in sorted({*inputs, *results})
    ]


def _slowest_tasks(ended: Sequence[TaskRow]) -> list[TaskRow]:
    timed = [t for t in ended if t.run_time is not None]
    return sorted(timed, key=lambda t: t.run_time or 0.0, reverse=True)[:SLOWEST]


def _slowest(task: TaskRow) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "method": task.method,
        "site": task.site,
        "run_time_s": task.run_time,
        "thinker_wait_s": task.thinker_wait,
        "remote_wait_s": task.remote_wait,
    }


def _open_at(task: TaskRow, when: float) -> bool:
    return task.ended is None or task.ended > when


def _state_at(task: TaskRow, when: float) -> str:
    """Pending or in flight at ``when``, for a task that had not ended by then.

    A task that ended later counts as in flight once first dispatched (a retry's wait for a
    slot is not told apart); one still open is as the journal leaves it.
    """
    dispatched = task.first_dispatched is not None and task.first_dispatched <= when
    if dispatched and (task.ended is not None or task.state == RUNNING):
        return RUNNING
    return PENDING
