"""The ``colmena-fed`` command line."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.live import Live

from colmena_fed.endpoints.cli import endpoints
from colmena_fed.errors import ColmenaFedError
from colmena_fed.testbed.cli import testbed

# The task server and what it needs are imported by the commands that run one, so that the
# other commands (testbed, endpoints) start in a fraction of the time.
if TYPE_CHECKING:
    from colmena_fed.methods import MethodLike
    from colmena_fed.queues import TaskQueues
    from colmena_fed.sites import SitesConfig
    from colmena_fed.thinker import BaseThinker

Factory = Callable[["TaskQueues"], tuple["BaseThinker", Iterable["MethodLike"]]]


def load_factory(spec: str) -> Factory:
    """Import ``FILE.py:FUNCTION`` and return the function.

    The file's directory goes on the import path, so local workers can import the module that
    defines the campaign's methods by name.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise click.BadParameter(f"{spec!r}: expected FILE.py:FUNCTION", param_hint="CAMPAIGN")
    path = Path(path_text).resolve()
    if not path.is_file():
        raise click.BadParameter(f"{path_text}: no such file", param_hint="CAMPAIGN")
    existing = importlib.util.find_spec(path.stem) if path.stem.isidentifier() else None
    if existing is not None and existing.origin != str(path):
        raise click.BadParameter(
            f"{path_text}: its name {path.stem!r} is already the name of the module "
            f"{existing.origin or path.stem}; rename the campaign file",
            param_hint="CAMPAIGN",
        )
    sys.path.insert(0, str(path.parent))
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    if module_spec is None or module_spec.loader is None:
        raise click.BadParameter(f"{path_text}: not a Python file", param_hint="CAMPAIGN")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[path.stem] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        Console(stderr=True).print_exception()
        raise click.ClickException(
            f"{path_text}: importing the campaign raised {type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        functions = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise click.BadParameter(
            f"{path_text} has no function {name!r}; it defines: {', '.join(functions)}",
            param_hint="CAMPAIGN",
        )
    return factory


def build_campaign(factory: Factory, queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    """Call the factory and check it returned ``(thinker, methods)``."""
    from colmena_fed.thinker import BaseThinker

    try:
        built: Any = factory(queues)
    except Exception as exc:
        Console(stderr=True).print_exception()
        raise click.ClickException(
            f"the campaign factory {getattr(factory, '__name__', factory)} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], BaseThinker)):
        raise click.ClickException(
            "the campaign factory must return (thinker, methods): a BaseThinker built on the "
            f"queues it was given, and a list of task functions; it returned {built!r}"
        )
    thinker, methods = built
    return thinker, list(methods)


sites_option = click.option(
    "--sites",
    "sites_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The sites YAML describing the federation.",
)


def _load_sites(path: Path, command: str) -> SitesConfig:
    """The sites YAML at ``path``; a simulated federation is refused (it runs from Python)."""
    from colmena_fed.sites import SitesConfig

    try:
        sites = SitesConfig.from_yaml(path)
    except ColmenaFedError as exc:
        raise click.ClickException(str(exc)) from exc
    if sites.simulated:
        raise click.ClickException(
            f"{path}: every site is a 'sim' site; a simulated federation runs in virtual "
            f"time, driven from Python by TaskServer(...).world.run(), not by '{command}'"
        )
    return sites


def _interrupt(signum: int, frame: object) -> None:
    """Treat SIGTERM like Ctrl+C, so the sites are shut down rather than orphaned."""
    raise KeyboardInterrupt


@click.group()
@click.version_option(package_name="colmena-fed")
def main() -> None:
    """Steer AI-in-the-loop campaigns across several Globus Compute sites."""


@main.command()
@click.argument("campaign")
@sites_option
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The run directory: journal, logs, engine files (default: runs/<date-time>).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --run-dir whose thinker died (same CAMPAIGN and SITES).",
)
def run(campaign: str, sites_path: Path, run_dir: Path | None, resume: bool) -> None:
    """Run CAMPAIGN (FILE.py:FACTORY) on the sites of SITES.

    FACTORY is called with the TaskQueues and returns (thinker, methods). Every run keeps a
    journal in its run directory; --resume continues one whose thinker died: results it had
    are replayed to the new thinker (marked replayed), what it had not received yet arrives as
    new, tasks still at globus sites are claimed there, and the rest is sent again.
    """
    if resume and run_dir is None:
        raise click.UsageError("--resume needs --run-dir, the run directory of the run to resume")
    from colmena_fed.display import LiveDisplay
    from colmena_fed.queues import TaskQueues
    from colmena_fed.server import TaskServer

    console = Console(width=None if sys.stdout.isatty() else 132)
    sites = _load_sites(sites_path, "colmena-fed run")
    factory = load_factory(campaign)
    queues = TaskQueues()
    thinker, methods = build_campaign(factory, queues)
    run_dir = run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if resume and not run_dir.is_dir():
        raise click.BadParameter(f"{run_dir}: no such run directory", param_hint="--run-dir")
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(run_dir, 0o700)
    os.close(os.open(run_dir / "colmena-fed.log", os.O_CREAT | os.O_APPEND, 0o600))
    logging.basicConfig(
        filename=run_dir / "colmena-fed.log",
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server = TaskServer(queues, sites, methods, run_dir=run_dir, resume=resume)
        console.print(
            f"{'resuming' if resume else 'starting'} {len(sites.sites)} sites: "
            f"{', '.join(sites.sites)} (run directory: {run_dir})"
        )
        with server, LiveDisplay(server, console):
            if server.recovery is not None:
                carried = server.recovery
                console.print(
                    f"resumed: {len(carried.delivered)} results replayed, "
                    f"{len(carried.outstanding)} tasks carried over"
                )
            thinker.run()
    except ColmenaFedError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        agent = thinker.failed_agent or "the thinker"
        Console(stderr=True).print_exception()
        raise click.ClickException(
            f"the campaign stopped: {agent} raised {type(exc).__name__}: {exc}"
        ) from exc
    _print_summary(console, run_dir)
    if thinker.interrupted:
        console.print(f"interrupted: unfinished tasks were ended; logs in {run_dir}")
        sys.exit(130)
    console.print(f"campaign finished; logs in {run_dir}")


def _print_summary(console: Console, run_dir: Path) -> None:
    """The run's report tables, after it (``colmena-fed report`` for the plots and page)."""
    from colmena_fed.report import Window, load_run, summary, summary_tables

    try:
        run = load_run(run_dir)
        console.print(summary_tables(summary(run, Window.of(run))))
    except Exception:  # a report must never turn a finished run into a failed one
        logging.getLogger(__name__).exception("could not summarize the run")
        console.print(f"(no summary: see {run_dir / 'colmena-fed.log'})")
        return
    console.print(f"plots and an HTML page: colmena-fed report {run_dir}")


@main.group()
def sites() -> None:
    """The sites of a federation."""


@sites.command(name="status")
@sites_option
@click.option("--watch", is_flag=True, help="Refresh until Ctrl+C.")
@click.option(
    "--interval", default=2.0, show_default=True, help="Seconds between refreshes (--watch)."
)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts (one line per refresh).")
@click.option(
    "--wait",
    default=60.0,
    show_default=True,
    help="Seconds to wait for the first workers of sites that keep a block running.",
)
@click.option(
    "--run",
    "campaign",
    type=click.Path(path_type=Path),
    help="A campaign's run directory: show its counts at each site too (it may be running).",
)
def status(
    sites_path: Path,
    *,
    watch: bool,
    interval: float,
    as_json: bool,
    wait: float,
    campaign: Path | None,
) -> None:
    """Show each site of SITES: online, workers, tasks queued and running there, slots.

    Local sites are started for the length of the command. Exits 1 if a site is offline
    (without --watch).
    """
    from colmena_fed.site_status import (
        refreshes,
        site_rows,
        status_server,
        status_table,
        wait_for_workers,
    )

    config = _load_sites(sites_path, "colmena-fed sites status")
    console = Console(width=None if sys.stdout.isatty() else 132)
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="colmena-fed-status-") as run_dir:
        try:
            with status_server(config, Path(run_dir)) as server:
                wait_for_workers(server, wait)
                if not watch:
                    rows = site_rows(server, campaign)
                    if as_json:
                        click.echo(json.dumps({"sites": rows}))
                    else:
                        console.print(status_table(rows))
                    if not all(row["online"] for row in rows):
                        sys.exit(1)
                    return
                every = refreshes(server, interval, campaign)
                _watch(server_rows=every, console=console, as_json=as_json)
        except ColmenaFedError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            return


def _watch(server_rows: Iterable[list[dict[str, Any]]], console: Console, as_json: bool) -> None:
    from colmena_fed.site_status import status_table

    if as_json:
        for rows in server_rows:
            click.echo(json.dumps({"sites": rows}))
        return
    with Live(console=console, auto_refresh=False) as live:
        for rows in server_rows:
            live.update(status_table(rows), refresh=True)


def parse_duration(text: str | None) -> float | None:
    """Seconds in ``90``, ``90s``, ``30m``, ``2h`` or ``1d`` (None stays None)."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected a duration such as 90, 90s, 30m, 2h or 1d"
        ) from None
    if value < 0:
        raise click.BadParameter(f"{text!r}: a duration cannot be negative")
    return value


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON (docs/report.md).")
@click.option(
    "--export",
    "export_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write one Result per line (JSON Lines) to this file.",
)
@click.option("--since", help="Start of the window, after the run's start (e.g. 30m).")
@click.option("--until", help="End of the window, after the run's start (e.g. 2h).")
@click.option("--no-plots", is_flag=True, help="Skip the plots and the HTML page.")
def report(
    run_dir: Path,
    *,
    as_json: bool,
    export_path: Path | None,
    since: str | None,
    until: str | None,
    no_plots: bool,
) -> None:
    """Report what the campaign in RUN_DIR did: tables, plots and an HTML page.

    Works on a finished run, one whose thinker died, and one still running. Plots and
    index.html go to RUN_DIR/report/.
    """
    from colmena_fed.report import Window, export, load_run, summary, write_report
    from colmena_fed.report.terminal import summary_tables

    window_since, window_until = parse_duration(since), parse_duration(until)
    try:
        run = load_run(run_dir)
        try:
            window = Window.of(run, window_since, window_until)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since/--until") from exc
        numbers = summary(run, window)
        index = None if no_plots else write_report(run, window, numbers)
        exported = None if export_path is None else export(run.run_dir, window, export_path)
    except ColmenaFedError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(numbers, indent=1))
        return
    console = Console(width=None if sys.stdout.isatty() else 132)
    console.print(summary_tables(numbers))
    if index is not None:
        console.print(f"plots and page: {index}")
    if exported is not None:
        console.print(f"{exported} results written to {export_path}")


main.add_command(testbed)
main.add_command(endpoints)
