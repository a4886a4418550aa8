"""Typed errors: each names the file, site, field or task a user has to fix."""

from __future__ import annotations


class ColmenaFedError(Exception):
    """Base class of every error colmena-fed raises on purpose."""


class ConfigError(ColmenaFedError, ValueError):
    """A sites YAML or endpoint YAML is malformed; the message names the file and field."""


class SiteError(ColmenaFedError):
    """A site could not run a task for a reason outside the user's code.

    Attributes:
        site: Name of the site.
        code: Short machine-readable reason (e.g. Globus Compute's error code).
    """

    def __init__(self, site: str, code: str, message: str) -> None:
        super().__init__(f"site {site!r}: {message}")
        self.site = site
        self.code = code
        self.message = message
