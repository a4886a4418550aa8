"""``colmena-fed endpoints ...``: commands for the people who configure sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from colmena_fed.errors import ConfigError


@click.group()
def endpoints() -> None:
    """Endpoint configurations (the files in endpoints/)."""


@endpoints.command(name="validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="A template variable (repeatable); VALUE is read as JSON where it is JSON.",
)
def validate_command(files: tuple[Path, ...], variables: tuple[str, ...]) -> None:
    """Check endpoint configuration FILES without submitting any job.

    Each file is rendered as a config template with the --var values, loaded with
    globus-compute-endpoint's own loader, then checked for what the loader does not catch.
    Prints one line per problem; exits non-zero if there is any.
    """
    # Imported here: they load globus-compute-endpoint, which other commands do not need.
    from colmena_fed.endpoints.template import parse_variable
    from colmena_fed.endpoints.validate import validate

    values: dict[str, Any] = {}
    for text in variables:
        try:
            name, value = parse_variable(text)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--var") from exc
        values[name] = value
    failed = 0
    for path in files:
        problems = validate(path, values)
        for problem in problems:
            click.echo(str(problem))
        if problems:
            failed += 1
        else:
            click.echo(f"{path}: ok")
    if failed:
        click.echo(f"{failed} of {len(files)} files have problems", err=True)
        raise SystemExit(1)
