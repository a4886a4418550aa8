"""``colmena-fed endpoints ...``: commands for the people who configure sites."""

from __future__ import annotations

import json
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
@click.option("--strict", is_flag=True, help="Fail on warnings too, not only on errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def validate_command(
    files: tuple[Path, ...], variables: tuple[str, ...], strict: bool, as_json: bool
) -> None:
    """Check endpoint configuration FILES without submitting any job.

    Each file is rendered as a config template with the --var values, loaded with
    globus-compute-endpoint's own loader, then checked for what the loader does not catch.
    Prints one line per finding, each an error (the endpoint would not start, or would
    misbehave for certain) or a warning (advice); exits non-zero if there is an error, or
    with --strict a warning.
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
    found = {path: validate(path, values) for path in files}
    errors = sum(any(p.severity == "error" for p in problems) for problems in found.values())
    warned = sum(any(p.severity == "warning" for p in problems) for problems in found.values())
    if as_json:
        report = [
            {
                "file": str(path),
                "ok": not any(p.severity == "error" for p in problems),
                "problems": [
                    {"field": p.field, "line": p.line, "severity": p.severity, "message": p.message}
                    for p in problems
                ],
            }
            for path, problems in found.items()
        ]
        click.echo(json.dumps(report, indent=2))
    else:
        for path, problems in found.items():
            for problem in problems:
                click.echo(str(problem))
            if not problems:
                click.echo(f"{path}: ok")
    if errors:
        click.echo(f"{errors} of {len(files)} files have errors", err=True)
    if warned:
        click.echo(f"{warned} of {len(files)} files have warnings", err=True)
    if errors or (strict and warned):
        raise SystemExit(1)
