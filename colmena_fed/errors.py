"""Typed errors: each names the file, site, field or task a user has to fix."""

from __future__ import annotations

from typing import Literal


class ColmenaFedError(Exception):
    """Base class of every error colmena-fed raises on purpose."""


class ConfigError(ColmenaFedError, ValueError):
    """A sites YAML or endpoint YAML is malformed; the message names the file and field."""


class SiteError(ColmenaFedError):
    """A site could not run a task.

    Attributes:
        site: Name of the site.
        code: Short machine-readable reason (e.g. Globus Compute's error code).
        kind: ``"system"`` when the site failed (the task could run elsewhere), ``"rejected"``
            when the task can never succeed as sent, so retrying is pointless (inputs that
            cannot be serialized, a result too large to return), ``"timeout"`` when the task
            ran past its walltime and its worker was stopped.
    """

    def __init__(
        self,
        site: str,
        code: str,
        message: str,
        kind: Literal["system", "rejected", "timeout"] = "system",
    ) -> None:
        super().__init__(f"site {site!r}: {message}")
        self.site = site
        self.code = code
        self.message = message
        self.kind = kind


class JournalError(ColmenaFedError):
    """A run directory's journal cannot be used; the message names the file and what to do."""


class UnsupportedError(ColmenaFedError, TypeError):
    """A Colmena name that has no meaning in colmena-fed; the message names the replacement."""
