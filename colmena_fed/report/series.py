"""What a run did over time: timeline bars per worker lane, and counts binned over time.

Lanes: a site's tasks are packed onto as few lanes as their run times allow (each task on the
first lane free when it started), so a lane is one worker slot's history whatever the backend
tells of its workers. Series are averages per time bin of a count that steps up and down
(tasks running, waiting, in flight), computed from the steps themselves, so a bin's value is
exact however many tasks fall in it.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from colmena_fed.report.load import Run, TaskRow
from colmena_fed.report.numbers import Window


@dataclass(frozen=True, slots=True)
class Bar:
    """One task on the timeline: its site, lane, when its method ran, and the method."""

    site: str
    lane: int
    start: float
    end: float
    method: str


def timeline_bars(run: Run, window: Window) -> list[Bar]:
    """Every task that ran in the window, on its site's lanes (in start order per site)."""
    by_site: dict[str, list[TaskRow]] = {}
    for task in run.tasks:
        if task.site is None or task.compute_started is None or task.compute_ended is None:
            continue
        if task.compute_ended < window.start or task.compute_started > window.end:
            continue
        by_site.setdefault(task.site, []).append(task)
    bars: list[Bar] = []
    for site in sorted(by_site):
        busy: list[tuple[float, int]] = []  # (runs until, lane)
        free: list[int] = []  # lanes free now, lowest first
        lanes = 0
        for task in sorted(by_site[site], key=lambda t: (t.compute_started, t.task_id)):
            start, end = task.compute_started or 0.0, task.compute_ended or 0.0
            while busy and busy[0][0] <= start:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                lane = heapq.heappop(free)
            else:
                lane, lanes = lanes, lanes + 1
            heapq.heappush(busy, (end, lane))
            bars.append(Bar(site, lane, start, end, task.method))
    return bars


def bin_edges(window: Window, bins: int) -> np.ndarray:
    """``bins`` equal time bins over the window (at least a second wide in all)."""
    end = max(window.end, window.start + 1e-9)
    return np.linspace(window.start, end, bins + 1)


def average_count(intervals: Sequence[tuple[float, float]], edges: np.ndarray) -> np.ndarray:
    """The mean over each bin of how many ``intervals`` [begin, end) cover each moment."""
    spans = np.array([(b, e) for b, e in intervals if e > b], dtype=float).reshape(-1, 2)
    if not len(spans):
        return np.zeros(len(edges) - 1)
    times = np.concatenate((spans[:, 0], spans[:, 1]))
    deltas = np.concatenate((np.ones(len(spans)), -np.ones(len(spans))))
    order = np.argsort(times, kind="stable")
    times, deltas = times[order], deltas[order]
    counts = np.cumsum(deltas)  # the count from each step to the next
    area = np.concatenate(([0.0], np.cumsum(counts[:-1] * np.diff(times))))
    at = np.searchsorted(times, edges, side="right") - 1
    inside = at >= 0
    integral = np.zeros(len(edges))
    integral[inside] = area[at[inside]] + counts[at[inside]] * (edges[inside] - times[at[inside]])
    result: np.ndarray = np.diff(integral) / np.diff(edges)
    return result
