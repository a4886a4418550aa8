"""``colmena-fed testbed up|down|status``: the local Globus Compute stand-in from the shell."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from colmena_fed.files import private_dir
from colmena_fed.testbed.token import DEFAULT_DIR

#: The state file in the testbed's directory, present while the testbed is up.
STATE_FILE = "testbed.json"

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="The testbed's directory: broker data, logs, endpoint directories, state.",
)


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.group()
def testbed() -> None:
    """A local stand-in for the Globus Compute cloud, with real endpoints (for offline work)."""


@testbed.command()
@click.option(
    "--endpoints",
    "endpoint_yamls",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Endpoint YAML of one endpoint to run (repeat, or list several after one flag).",
)
@click.argument("more_endpoints", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--sites-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the sites YAML of the endpoints (default: DIR/sites.yaml).",
)
@click.option(
    "--pythonpath",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory the endpoints' workers import campaign modules from (repeatable).",
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for it.")
@_dir_option
def up(
    *,
    endpoint_yamls: tuple[Path, ...],
    more_endpoints: tuple[Path, ...],
    sites_out: Path | None,
    pythonpath: tuple[Path, ...],
    timeout: float,
    directory: Path,
) -> None:
    """Start a broker, the stand-in service and one endpoint per YAML; print their UUIDs.

    It keeps running in the background until 'colmena-fed testbed down'.
    """
    for module in ("flask", "pika", "psutil"):
        if importlib.util.find_spec(module) is None:
            raise click.ClickException(
                f"the testbed needs {module}: pip install 'colmena-fed[testbed]'"
            )
    state = _read_state(directory)
    if state is not None and _alive(state["pid"]):
        raise click.ClickException(
            f"a testbed is already up in {directory} (pid {state['pid']}); "
            "'colmena-fed testbed down' first"
        )
    private_dir(directory)
    (directory / STATE_FILE).unlink(missing_ok=True)
    sites_out = (sites_out or directory / "sites.yaml").resolve()
    yamls = [str(p.resolve()) for p in (*endpoint_yamls, *more_endpoints)]
    command = [sys.executable, "-m", "colmena_fed.testbed.supervisor", "--dir", str(directory)]
    command += ["--sites-out", str(sites_out), "--endpoints", *yamls]
    if pythonpath:
        command += ["--pythonpath", *(str(p.resolve()) for p in pythonpath)]
    log = directory / "testbed.log"
    with log.open("ab") as out:
        supervisor = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while (state := _read_state(directory)) is None:
        if supervisor.poll() is not None or time.monotonic() > deadline:
            if supervisor.poll() is None:
                supervisor.send_signal(signal.SIGTERM)
                try:
                    supervisor.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    supervisor.kill()
            lines = log.read_text(errors="replace").splitlines()[-15:]
            raise click.ClickException("the testbed did not start:\n" + "\n".join(lines))
        time.sleep(0.5)
    for name, endpoint in state["endpoints"].items():
        click.echo(f"{name}: {endpoint['endpoint_id']}")
    click.echo(f"sites YAML: {state['sites']}")


@testbed.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for it.")
@_dir_option
def down(timeout: float, directory: Path) -> None:
    """Stop the testbed's endpoints, service and broker."""
    state = _read_state(directory)
    if state is None or not _alive(state["pid"]):
        click.echo(f"no testbed is up in {directory}")
        return
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(state["pid"]):
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the testbed (pid {state['pid']}) did not stop within {timeout:.0f} s; "
                f"see {directory / 'testbed.log'}"
            )
        time.sleep(0.2)
    click.echo("testbed down")


@testbed.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_dir_option
def status(as_json: bool, directory: Path) -> None:
    """Show the testbed's endpoints as the stand-in service reports them."""
    from colmena_fed.backends.globus import make_client
    from colmena_fed.sites import GlobusConfig

    state = _read_state(directory)
    if state is None or not _alive(state["pid"]):
        raise click.ClickException(f"no testbed is up in {directory}")
    client = make_client(GlobusConfig(service="testbed", testbed_dir=directory))
    for endpoint in state["endpoints"].values():
        try:
            answer = client.get_endpoint_status(endpoint["endpoint_id"])
        except Exception as exc:
            answer = {"status": f"unknown ({exc})", "details": {}}
        endpoint["status"] = answer["status"]
        endpoint["workers"] = answer.get("details", {}).get("total_workers")
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    table = Table(title=f"testbed {directory} (sites YAML: {state['sites']})")
    for column in ("endpoint", "UUID", "status", "workers", "pid"):
        table.add_column(column)
    for name, endpoint in state["endpoints"].items():
        table.add_row(
            name,
            endpoint["endpoint_id"],
            endpoint["status"],
            str(endpoint["workers"]),
            str(endpoint["pid"]),
        )
    Console().print(table)
