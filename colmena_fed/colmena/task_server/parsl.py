"""Colmena's ``colmena.task_server.parsl``: refused, with the line that replaces it."""

from colmena_fed.colmena import TASK_SERVER_LINE, refused

ParslTaskServer = refused(
    "ParslTaskServer",
    f"it takes a Parsl Config, and colmena-fed has none: {TASK_SERVER_LINE}",
)

__all__ = ["ParslTaskServer"]
