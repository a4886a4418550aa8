"""Endpoint YAML as a Globus Compute config template, rendered the way an endpoint renders it.

A template-capable endpoint (what ``globus-compute-endpoint configure`` makes) keeps its engine
configuration in ``user_config_template.yaml.j2``: Jinja2, rendered with the variables a user
sends as ``user_endpoint_config`` before the engine starts. The files in ``endpoints/`` are such
templates (``{{ account }}``), so the same file serves a ``local`` site, a single-user endpoint
and a multi-user one. Rendering goes through the endpoint's own renderer, so what renders here
renders there: same sandbox, same quoting of values, same reserved names.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2
from globus_compute_endpoint.endpoint.config.config import CoreEndpointConfig
from globus_compute_endpoint.endpoint.config.utils import render_config_user_template
from globus_compute_endpoint.endpoint.identity_mapper import MappedPosixIdentity
from globus_compute_sdk.sdk.batch import create_user_runtime

from colmena_fed.errors import ConfigError

#: What makes a file a template. A lone ``{#`` is not enough: shell's ``${#ARRAY[@]}`` has one.
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\{%")
_UNDEFINED = re.compile(r"^'([A-Za-z_][A-Za-z0-9_]*)' is undefined$")


class TemplateError(ConfigError):
    """A template that cannot be rendered: bad Jinja syntax, or a value it refuses."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        #: The template's line the error is on, where Jinja knows it.
        self.line = line


class MissingVariables(TemplateError):
    """Template variables that have no value and no default."""

    def __init__(self, names: list[str], rendered: str) -> None:
        listed = ", ".join(repr(name) for name in names)
        super().__init__(f"template variables without a value: {listed}")
        self.names = names
        #: The template rendered with each missing variable as its `placeholder`.
        self.rendered = rendered


def parse_variable(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` as a template variable.

    VALUE is read as JSON where it is JSON (``4``, ``true``, ``null``), as a user's
    ``user_endpoint_config`` would carry it, and as a string otherwise (``01:00:00``). Lists and
    mappings are refused: the endpoint's renderer quotes each of their strings again, so they
    cannot be written into a configuration.
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ConfigError(f"{text!r}: expected NAME=VALUE, NAME a template variable name")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return name, value
    if isinstance(parsed, (list, dict)):
        raise ConfigError(
            f"{text!r}: a template variable must be a string, number, true/false or null; the "
            "endpoint quotes each string inside a list or mapping again"
        )
    return name, parsed


def render(path: Path, text: str, variables: Mapping[str, Any]) -> str:
    """Render the template ``text`` (read from ``path``) with ``variables``.

    Text without template syntax comes back unchanged. Raises `MissingVariables` naming every
    variable that is used with no value and no default, and `TemplateError` for anything else
    the renderer refuses.
    """
    if not _TEMPLATE_SYNTAX.search(text):
        return text
    identity = _this_user()
    runtime = json.loads(json.dumps(asdict(create_user_runtime())))
    missing: list[str] = []
    values = dict(variables)
    while True:
        try:
            rendered = _render_once(path, text, values, identity, runtime)
        except jinja2.UndefinedError as exc:
            name = _undefined_name(exc)
            if name is None or name in values:
                raise TemplateError(f"template: {exc}") from exc
            missing.append(name)
            values[name] = placeholder(name)
            continue
        if missing:
            raise MissingVariables(missing, rendered)
        return rendered


def placeholder(name: str) -> str:
    """A stand-in value for ``name`` that can be found again in the rendered YAML."""
    return f"<missing {name}>"


def _render_once(
    path: Path,
    text: str,
    variables: dict[str, Any],
    identity: MappedPosixIdentity,
    runtime: dict[str, Any],
) -> str:
    try:
        return render_config_user_template(
            parent_config=CoreEndpointConfig(),
            user_config_template=text,
            user_config_template_path=path.resolve(),
            mapped_identity=identity,
            user_opts=variables,
            user_runtime=runtime,
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax: {exc.message}", exc.lineno) from exc
    except jinja2.UndefinedError:
        raise
    except (jinja2.TemplateError, ValueError) as exc:
        raise TemplateError(f"template: {exc}") from exc


def _undefined_name(exc: jinja2.UndefinedError) -> str | None:
    match = _UNDEFINED.match(str(exc.message))
    return match.group(1) if match else None


def _this_user() -> MappedPosixIdentity:
    """The identity a single-user endpoint maps every task to: the user running it."""
    try:
        record = pwd.getpwuid(os.getuid())
    except KeyError:  # a container user with no passwd entry
        home = os.path.expanduser("~")
        record = pwd.struct_passwd(("", "x", os.getuid(), os.getgid(), "", home, "/bin/sh"))
    return MappedPosixIdentity(
        local_user_record=record,
        matched_identity=uuid.UUID(int=0),
        globus_identity_candidates=[],
    )
