"""The report's plots, as PNG files (matplotlib, no display needed).

Each stays readable at 100,000 tasks: the timeline draws one bar per task only up to
`BARS_DRAWN` bars, and beyond that paints each lane's time bins with the method that ran most
of the bin; the other plots are binned series and box plots, whatever the number of tasks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from colmena_fed.report.load import Run
from colmena_fed.report.numbers import Window, offered_slot_seconds
from colmena_fed.report.series import Bar, average_count, bin_edges, timeline_bars

#: Up to this many tasks the timeline draws each one; beyond, it paints time bins.
BARS_DRAWN = 5_000
#: Time bins of the binned plots.
BINS = 400
#: The plots, by file name, with their titles.
PLOTS = {
    "timeline.png": "Tasks per site and worker slot",
    "utilization.png": "Slot utilization per site and slot kind",
    "queues.png": "Tasks pending on the thinker side, and in flight per site",
    "distributions.png": "Waits and run times per method",
}


def draw_all(run: Run, window: Window, directory: Path) -> list[Path]:
    """Write every plot into ``directory``; their paths, in `PLOTS` order."""
    methods = sorted({task.method for task in run.tasks})
    colours = {method: plt.get_cmap("tab10")(i % 10) for i, method in enumerate(methods)}
    figures: dict[str, Callable[[], Any]] = {
        "timeline.png": lambda: _timeline(timeline_bars(run, window), window, colours),
        "utilization.png": lambda: _utilization(run, window),
        "queues.png": lambda: _queues(run, window),
        "distributions.png": lambda: _distributions(run, window, methods),
    }
    paths = []
    for name, title in PLOTS.items():
        figure = figures[name]()
        figure.suptitle(title)
        path = directory / name
        figure.savefig(path, dpi=96)
        plt.close(figure)
        paths.append(path)
    return paths


def _axes() -> tuple[Any, Any]:
    return plt.subplots(figsize=(11, 5.5), layout="constrained")


def _unit(window: Window) -> tuple[float, str]:
    """Seconds per unit of the time axis, and its label: s, min or h, by the window's length."""
    length = window.end - window.start
    if length < 600:
        return 1.0, "seconds since the start"
    if length < 36_000:
        return 60.0, "minutes since the start"
    return 3600.0, "hours since the start"


def _hours(window: Window, times: Any) -> Any:
    """Times on the time axis (in `_unit`s since the window's start)."""
    return (np.asarray(times) - window.start) / _unit(window)[0]


def _timeline(bars: Sequence[Bar], window: Window, colours: dict[str, Any]) -> Any:
    figure, ax = _axes()
    sites = sorted({bar.site for bar in bars})
    lanes = {site: 1 + max(b.lane for b in bars if b.site == site) for site in sites}
    base, offset = {}, 0
    for site in sites:
        base[site], offset = offset, offset + lanes[site]
    if len(bars) <= BARS_DRAWN:
        for method, colour in colours.items():
            mine = [b for b in bars if b.method == method]
            if not mine:
                continue
            ax.barh(
                [base[b.site] + b.lane for b in mine],
                [(b.end - b.start) / _unit(window)[0] for b in mine],
                left=_hours(window, [b.start for b in mine]),
                height=0.8,
                color=colour,
                edgecolor="white",
                linewidth=0.5,
            )
    else:
        _painted(ax, bars, window, base, list(colours))
    ax.set_yticks([base[s] + lanes[s] / 2 - 0.5 for s in sites], sites)
    for site in sites[1:]:
        ax.axhline(base[site] - 0.5, color="grey", linewidth=0.5)
    ax.set_ylim(-0.5, max(offset, 1) - 0.5)
    ax.set_xlim(0, max(_hours(window, window.end), 1e-6))
    ax.set_xlabel(_unit(window)[1])
    ax.legend(
        handles=[Patch(color=c, label=m) for m, c in colours.items()],
        loc="upper right",
        fontsize="small",
    )
    return figure


def _painted(
    ax: Any, bars: Sequence[Bar], window: Window, base: dict[str, int], methods: list[str]
) -> None:
    """Each lane's time bins coloured by the method that ran most of them (0: idle)."""
    edges = bin_edges(window, 1000)
    bins, width = len(edges) - 1, edges[1] - edges[0]
    lanes = max(base[b.site] + b.lane for b in bars) + 1
    index = {method: i for i, method in enumerate(methods)}
    rows = np.array([index[b.method] * lanes + base[b.site] + b.lane for b in bars])
    starts = np.clip([b.start for b in bars], edges[0], edges[-1])
    ends = np.clip([b.end for b in bars], edges[0], edges[-1])
    first = np.minimum(((starts - edges[0]) // width).astype(int), bins - 1)
    last = np.minimum(((ends - edges[0]) // width).astype(int), bins - 1)
    # Seconds of each bar in each bin: its first and last bins in part, those between whole
    # (added as steps of a difference array, summed along the bins).
    occupancy = np.zeros((len(methods) * lanes, bins))
    same = first == last
    np.add.at(occupancy, (rows[same], first[same]), (ends - starts)[same])
    split = ~same
    np.add.at(occupancy, (rows[split], first[split]), (edges[first + 1] - starts)[split])
    np.add.at(occupancy, (rows[split], last[split]), (ends - edges[last])[split])
    steps = np.zeros((len(methods) * lanes, bins + 1))
    long = split & (last > first + 1)
    np.add.at(steps, (rows[long], first[long] + 1), width)
    np.add.at(steps, (rows[long], last[long]), -width)
    occupancy += np.cumsum(steps, axis=1)[:, :bins]
    by_method = occupancy.reshape(len(methods), lanes, bins)
    busiest = np.argmax(by_method, axis=0) + 1
    busiest[by_method.sum(axis=0) == 0] = 0
    tab10 = plt.get_cmap("tab10")
    palette: list[Any] = ["white", *(tab10(i % 10) for i in range(len(methods)))]
    ax.imshow(
        busiest,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=ListedColormap(palette),
        vmin=0,
        vmax=len(methods),
        extent=(0, _hours(window, window.end), -0.5, lanes - 0.5),
    )


def _utilization(run: Run, window: Window) -> Any:
    figure, ax = _axes()
    edges = bin_edges(window, BINS)
    middles = _hours(window, (edges[:-1] + edges[1:]) / 2)
    for history in run.sites.values():
        for slot in history.capacity:
            spans = [
                (t.compute_started, t.compute_ended)
                for t in run.by_site_slot.get((history.name, slot), [])
                if t.compute_started is not None and t.compute_ended is not None
            ]
            busy = average_count(spans, edges)
            offered = np.array(
                [
                    offered_slot_seconds(history, slot, Window(begin, end)) / (end - begin)
                    for begin, end in itertools.pairwise(edges)
                ]
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(offered > 0, busy / offered, np.nan)
            ax.plot(middles, 100 * share, label=f"{history.name} ({slot})")
    ax.set_ylim(0, 105)
    ax.set_ylabel("busy slots / offered slots (%)")
    ax.set_xlabel(_unit(window)[1])
    ax.legend(loc="lower right", fontsize="small")
    return figure


def _queues(run: Run, window: Window) -> Any:
    """Pending on the thinker side above, in flight per site below (their scales differ)."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, layout="constrained")
    edges = bin_edges(window, BINS)
    middles = _hours(window, (edges[:-1] + edges[1:]) / 2)
    end = window.end
    pending = [
        (t.created, t.first_dispatched if t.first_dispatched is not None else (t.ended or end))
        for t in run.tasks
    ]
    top.plot(middles, average_count(pending, edges), color="k")
    top.set_ylabel("pending (thinker side)")
    flights: dict[str, list[tuple[float, float]]] = {site: [] for site in run.sites}
    for task in run.tasks:
        for site, sent, ended in task.tries:
            flights.setdefault(site, []).append((sent, end if ended is None else ended))
    for site, spans in flights.items():
        bottom.plot(middles, average_count(spans, edges), label=site)
    bottom.set_ylabel("in flight")
    bottom.set_xlabel(_unit(window)[1])
    bottom.legend(loc="upper right", fontsize="small")
    return figure


def _distributions(run: Run, window: Window, methods: list[str]) -> Any:
    figure, axes = plt.subplots(1, 3, figsize=(13, 5), layout="constrained")
    ended = [t for t in run.tasks if t.ended is not None and window.start <= t.ended <= window.end]
    for ax, (label, of) in zip(
        axes,
        [
            ("thinker-side wait (s)", lambda t: t.thinker_wait),
            ("remote wait (s)", lambda t: t.remote_wait),
            ("run time (s)", lambda t: t.run_time),
        ],
        strict=True,
    ):
        data = [[v for t in ended if t.method == m and (v := of(t)) is not None] for m in methods]
        shown = [(m, d) for m, d in zip(methods, data, strict=True) if d]
        if shown:
            ax.boxplot([d for _, d in shown], showfliers=False)
            ax.set_xticks(range(1, len(shown) + 1), [m for m, _ in shown], rotation=30)
        ax.set_title(label)
    return figure
