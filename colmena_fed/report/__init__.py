"""``colmena-fed report``: what a campaign did, from its run journal.

`load_run` reads a run directory (finished, crashed, or still running); `summary` makes the
numbers (the ``--json`` schema, docs/report.md); `summary_tables` shows them in a terminal;
`write_report` writes the plots and the HTML page into ``RUN_DIR/report/``; `export` writes
one `Result` per line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from colmena_fed.files import private_dir
from colmena_fed.report.export import export
from colmena_fed.report.load import ReportError, Run, load_run
from colmena_fed.report.numbers import SCHEMA, Window, summary
from colmena_fed.report.terminal import summary_tables

__all__ = [
    "SCHEMA",
    "ReportError",
    "Run",
    "Window",
    "export",
    "load_run",
    "summary",
    "summary_tables",
    "write_report",
]


def write_report(run: Run, window: Window, numbers: dict[str, Any]) -> Path:
    """Write the plots and ``index.html`` into the run's ``report/`` (0700); the page's path."""
    from colmena_fed.report.page import page  # matplotlib: only when plots are drawn
    from colmena_fed.report.plots import draw_all

    directory = private_dir(run.run_dir / "report")
    plots = draw_all(run, window, directory)
    for path in plots:
        os.chmod(path, 0o600)
    index = directory / "index.html"
    descriptor = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w") as out:
        out.write(page(numbers, plots))
    return index
