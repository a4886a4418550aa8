"""Colmena's ``colmena.task_server.local``: refused, with the line that replaces it."""

from colmena_fed.colmena import TASK_SERVER_LINE, refused

LocalTaskServer = refused(
    "LocalTaskServer",
    f"local workers are a `local` site in the sites YAML (examples/sites.yaml): {TASK_SERVER_LINE}",
)

__all__ = ["LocalTaskServer"]
