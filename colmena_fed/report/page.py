"""The report as one self-contained HTML page: the summary's tables and the plots, embedded.

Nothing on the page comes from the network (no scripts, no fonts, no style sheets to fetch):
it opens from a laptop's disk, mailed or copied off a login node.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colmena_fed.report.plots import PLOTS
from colmena_fed.report.terminal import (
    METHOD_COLUMNS,
    SITE_COLUMNS,
    method_cells,
    seconds,
    site_cells,
    size,
)

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0 2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { font-weight: bold; text-align: left; padding-bottom: 0.3em; }
img { max-width: 100%; display: block; margin: 1em 0 2em; }
"""


def page(numbers: Mapping[str, Any], plots: Sequence[Path]) -> str:
    """The HTML of a report: ``numbers`` as `colmena_fed.report.numbers.summary` made them."""
    campaign, window = numbers["campaign"], numbers["window"]
    rate = campaign["tasks_per_hour"]
    facts = [
        ("run directory", numbers["run_dir"]),
        ("state", "finished" if numbers["finished"] else "not finished"),
        ("window", f"{seconds(window['since_s'])} to {seconds(window['until_s'])}"),
        ("makespan", seconds(campaign["makespan_s"])),
        ("tasks per hour", "-" if rate is None else f"{rate:,.0f}"),
        ("tasks submitted", str(campaign["tasks"])),
        ("done", str(campaign["done"])),
        ("failed", str(campaign["failed"])),
        ("pending", str(campaign["pending"])),
        ("in flight", str(campaign["in_flight"])),
    ]
    sites = [site_cells(row) for row in numbers["sites"]]
    methods = [method_cells(row) for row in numbers["methods"]]
    stores = [
        [row["store"], size(row["input_bytes"]), size(row["result_bytes"])]
        for row in numbers["stores"]
    ]
    slowest = [
        [row["task_id"], row["method"], row["site"] or "-", seconds(row["run_time_s"])]
        for row in campaign["slowest"]
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>colmena-fed report: {html.escape(numbers['run_dir'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>colmena-fed report</h1>",
        _table("Campaign", ["", ""], [list(fact) for fact in facts], "campaign"),
        _table(
            "Sites, per slot kind (waits and overhead: median / p95)", SITE_COLUMNS, sites, "sites"
        ),
        _table("Methods (median / p95)", METHOD_COLUMNS, methods, "methods"),
        _table("Bytes through each data store", ["store", "inputs", "results"], stores, "stores"),
        _table("Slowest tasks", ["task", "method", "site", "run time"], slowest, "slowest"),
    ]
    for path in plots:
        title = PLOTS.get(path.name, path.stem)
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(
            f'<img id="{path.stem}" alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]], ident: str) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return (
        f'<table id="{ident}"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
