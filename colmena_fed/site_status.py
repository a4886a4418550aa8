"""``colmena-fed sites status``: every site of a federation, as its endpoint reports it.

The sites are reached exactly as a campaign reaches them: a task server with no methods starts
each site (a ``local`` site's engine in this process; a ``globus`` site through the Globus
Compute service) and polls its status, so what this shows is what the scheduler would see.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from colmena_fed.backends import SiteStatus
from colmena_fed.data import DataConfig
from colmena_fed.display import slots_cell, state_cell, workers_cell
from colmena_fed.queues import TaskQueues
from colmena_fed.report.load import DONE, FAILED, RUNNING, load_run
from colmena_fed.server import TaskServer
from colmena_fed.sites import SitesConfig


def status_server(sites: SitesConfig, run_dir: Path) -> TaskServer:
    """A task server that only watches ``sites``: no methods, no data stores, no static map.

    Engine logs of local sites go under ``run_dir``.
    """
    watched = sites.model_copy(
        update={
            "scheduler": sites.scheduler.model_copy(update={"static": {}}),
            "data": DataConfig(),
        }
    )
    return TaskServer(TaskQueues(), watched, methods=[], run_dir=run_dir, journal=False)


def wait_for_workers(server: TaskServer, timeout: float) -> None:
    """Wait up to ``timeout`` s until every online site that keeps a block has its workers.

    An endpoint reports itself online before the workers of its first block connect (seconds
    on this machine, a queue wait on a cluster); without this wait a site whose provider keeps
    ``min_blocks`` running would first show 0 workers. Sites scaled to zero are not waited for.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sites, _ = server.snapshot()
        if not any(_block_due(counts.status) for counts in sites.values()):
            return
        time.sleep(0.2)


def _block_due(status: SiteStatus) -> bool:
    return status.online and not status.workers and bool(status.raw.get("min_blocks"))


def site_rows(server: TaskServer, campaign: Path | None = None) -> list[dict[str, Any]]:
    """One plain record per site (what ``--json`` prints).

    With ``campaign``, a run directory, each record also has that campaign's counts at the
    site, read from its journal (it may be running).
    """
    sites, _ = server.snapshot()
    rows = [_row(server, name, counts.status) for name, counts in sites.items()]
    if campaign is not None:
        counts = campaign_counts(campaign)
        for row in rows:
            row["campaign"] = counts.get(row["site"], dict.fromkeys(_CAMPAIGN_COLUMNS, 0))
    return rows


#: A campaign's counts per site, as ``sites status --run`` shows them.
_CAMPAIGN_COLUMNS = ("sent", "done", "failed", "in_flight", "pending")


def campaign_counts(run_dir: Path) -> dict[str, dict[str, int]]:
    """Per site of the run in ``run_dir``: attempts sent there, done, failed, in flight now.

    ``pending`` counts the tasks waiting on the thinker side that last ran there (a retry);
    those never sent anywhere are under the site name ``""``.
    """
    run = load_run(run_dir)
    counts: dict[str, dict[str, int]] = {}
    for task in run.tasks:
        for site, _, _ in task.tries:
            counts.setdefault(site, dict.fromkeys(_CAMPAIGN_COLUMNS, 0))["sent"] += 1
        here = counts.setdefault(task.site or "", dict.fromkeys(_CAMPAIGN_COLUMNS, 0))
        column = {DONE: "done", FAILED: "failed", RUNNING: "in_flight"}.get(task.state, "pending")
        here[column] += 1
    return counts


def _row(server: TaskServer, name: str, status: SiteStatus) -> dict[str, Any]:
    site = server.config.sites[name]
    where = str(site.local) if site.local is not None else str(site.endpoint or "")
    return {
        "site": name,
        "backend": site.backend,
        "endpoint": where,
        "online": status.online,
        "detail": status.detail,
        "workers": status.workers,
        "idle_workers": status.idle_workers,
        "pending_tasks": status.pending_tasks,
        "in_flight_tasks": status.outstanding_tasks,
        "slots": dict(site.resources),
        "status_time": _iso(status.updated),
    }


def status_table(rows: list[dict[str, Any]]) -> Table:
    """The rows as a rich table."""
    table = Table(title="colmena-fed sites")
    for column in ("site", "backend", "status"):
        table.add_column(column)
    for column in ("workers idle/total", "pending", "in flight"):
        table.add_column(column, justify="right")
    table.add_column("slots")
    table.add_column("status time")
    campaign = all("campaign" in row for row in rows) and bool(rows)
    if campaign:
        for column in ("campaign sent", "done", "failed", "in flight"):
            table.add_column(column, justify="right")
    for row in rows:
        extra = [str(row["campaign"][c]) for c in _CAMPAIGN_COLUMNS[:4]] if campaign else []
        table.add_row(
            row["site"],
            row["backend"],
            state_cell(row["online"], row["detail"]),
            workers_cell(row["idle_workers"], row["workers"]),
            _count(row["pending_tasks"]),
            _count(row["in_flight_tasks"]),
            slots_cell(row["slots"]),
            row["status_time"].replace("T", " "),
            *extra,
        )
    return table


def refreshes(
    server: TaskServer, period: float, campaign: Path | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The site rows now, then again every ``period`` seconds, for ever."""
    while True:
        yield site_rows(server, campaign)
        time.sleep(period)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return moment.isoformat(timespec="seconds")
