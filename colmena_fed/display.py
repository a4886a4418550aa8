"""A live terminal view of a campaign: tasks pending, running and done per site."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from colmena_fed.server import TaskServer


def state_cell(online: bool, detail: str) -> str:
    """A site's state for a table: online, or offline with the reason."""
    return "[green]online[/]" if online else f"[red]offline[/] {escape(detail)}"


def workers_cell(idle: int | None, total: int | None) -> str:
    """Workers idle/total, or '-' where the site has not said."""
    return "-" if total is None else f"{idle}/{total}"


def slots_cell(resources: Mapping[str, int]) -> str:
    """A site's slots by kind, e.g. '2 cpu, 1 gpu'."""
    return ", ".join(f"{n} {kind}" for kind, n in resources.items())


def site_table(server: TaskServer, title: str = "colmena-fed") -> Table:
    """One table row per site, and a caption with the work waiting on the thinker side."""
    sites, pending = server.snapshot()
    waiting = ", ".join(f"{n} {slot}" for slot, n in sorted(pending.items())) or "none"
    table = Table(title=title, caption=f"pending on the thinker side: {waiting}")
    for column in ("site", "status", "workers idle/total", "slots", "running", "done", "failed"):
        table.add_column(column, justify="left" if column in ("site", "status") else "right")
    table.add_column("methods run")
    for name, counts in sites.items():
        status = counts.status
        methods = ", ".join(f"{m} x{n}" for m, n in sorted(counts.by_method.items()))
        table.add_row(
            name,
            state_cell(status.online, status.detail),
            workers_cell(status.idle_workers, status.workers),
            slots_cell(server.config.sites[name].resources),
            str(counts.running),
            str(counts.done),
            str(counts.failed),
            methods,
        )
    return table


class LiveDisplay:
    """Redraws `site_table` a few times a second while the campaign runs (a context manager)."""

    def __init__(self, server: TaskServer, console: Console | None = None, period: float = 0.5):
        """Show ``server``'s sites on ``console`` every ``period`` seconds."""
        self.server = server
        self.console = console or Console()
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    def _title(self) -> str:
        return f"colmena-fed - {time.monotonic() - self._started:.0f} s"

    def __enter__(self) -> LiveDisplay:
        self._started = time.monotonic()
        if self.console.is_terminal:
            self._thread = threading.Thread(
                target=self._run, name="colmena-fed-display", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.console.print(site_table(self.server, self._title()))

    def _run(self) -> None:
        with Live(console=self.console, transient=True, auto_refresh=False) as live:
            while not self._stop.wait(self.period):
                live.update(site_table(self.server, self._title()), refresh=True)
