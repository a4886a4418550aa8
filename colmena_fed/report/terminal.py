"""The report's summary as rich tables, for the terminal (and, as text, for the HTML page)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table


def seconds(value: float | None) -> str:
    """A duration for a table: ms under a second, s under ten minutes, else h."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 600:
        return f"{value:.2f} s"
    return f"{value / 3600:.2f} h"


def spread_cell(spread: Mapping[str, Any]) -> str:
    """'median / p95' of a spread, or '-'."""
    if not spread["count"]:
        return "-"
    return f"{seconds(spread['median'])} / {seconds(spread['p95'])}"


def size(value: int) -> str:
    """Bytes, in the largest unit that keeps a number >= 1."""
    if value < 1000:
        return f"{value} B"
    amount, unit = value / 1000, "KB"
    for larger in ("MB", "GB"):
        if amount < 1000:
            break
        amount, unit = amount / 1000, larger
    return f"{amount:.1f} {unit}"


def summary_tables(numbers: Mapping[str, Any]) -> Group:
    """The campaign line, then one table per part of the report."""
    campaign = numbers["campaign"]
    window = numbers["window"]
    state = "finished" if numbers["finished"] else "not finished (running, or its thinker died)"
    head = Table.grid(padding=(0, 2))
    head.add_row("run", numbers["run_dir"], state)
    rate = campaign["tasks_per_hour"]
    head.add_row(
        "window",
        f"{seconds(window['since_s'])} to {seconds(window['until_s'])} after the start",
        f"makespan {seconds(campaign['makespan_s'])}, "
        f"{'-' if rate is None else f'{rate:,.0f}'} tasks/hour",
    )
    head.add_row(
        "tasks",
        f"{campaign['tasks']} submitted, {campaign['ended']} ended in the window",
        f"{campaign['done']} done, {campaign['failed']} failed, {campaign['pending']} pending, "
        f"{campaign['in_flight']} in flight",
    )
    return Group(head, _sites(numbers), _methods(numbers), _stores(numbers), _slowest(numbers))


#: The columns of the sites table, and of the methods table.
SITE_COLUMNS = (
    "site",
    "slot",
    "done",
    "failed",
    "retries",
    "failovers",
    "utilization",
    "thinker wait",
    "remote wait",
    "overhead",
)
METHOD_COLUMNS = ("method", "done", "failed", "run time", "thinker wait", "remote wait")


def site_cells(row: Mapping[str, Any]) -> list[str]:
    """One row of the sites table, as text."""
    share = row["utilization"]
    return [
        row["site"],
        f"{row['slot']} ({row['slots']})",
        str(row["done"]),
        ", ".join(f"{n} {kind}" for kind, n in row["failed"].items()) or "0",
        str(row["retries"]),
        str(row["failovers"]),
        "-" if share is None else f"{100 * share:.1f} %",
        spread_cell(row["thinker_wait_s"]),
        spread_cell(row["remote_wait_s"]),
        spread_cell(row["overhead_s"]),
    ]


def method_cells(row: Mapping[str, Any]) -> list[str]:
    """One row of the methods table, as text."""
    return [
        row["method"],
        str(row["done"]),
        str(row["failed"]),
        spread_cell(row["run_time_s"]),
        spread_cell(row["thinker_wait_s"]),
        spread_cell(row["remote_wait_s"]),
    ]


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _sites(numbers: Mapping[str, Any]) -> Table:
    rows = [site_cells(row) for row in numbers["sites"]]
    return _table("Sites, per slot kind (waits and overhead: median / p95)", SITE_COLUMNS, rows)


def _methods(numbers: Mapping[str, Any]) -> Table:
    rows = [method_cells(row) for row in numbers["methods"]]
    return _table("Methods (median / p95)", METHOD_COLUMNS, rows)


def _stores(numbers: Mapping[str, Any]) -> Table:
    table = Table(title="Bytes through each data store")
    for column in ("store", "inputs", "results"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for row in numbers["stores"]:
        table.add_row(row["store"], size(row["input_bytes"]), size(row["result_bytes"]))
    if not numbers["stores"]:
        table.add_row("(none used)", "-", "-")
    return table


def _slowest(numbers: Mapping[str, Any]) -> Table:
    table = Table(title="Slowest tasks")
    for column in ("task", "method", "site", "run time", "thinker wait", "remote wait"):
        table.add_column(
            column, justify="left" if column in ("task", "method", "site") else "right"
        )
    for row in numbers["campaign"]["slowest"]:
        table.add_row(
            row["task_id"],
            row["method"],
            row["site"] or "-",
            seconds(row["run_time_s"]),
            seconds(row["thinker_wait_s"]),
            seconds(row["remote_wait_s"]),
        )
    return table
