"""Colmena's ``colmena.task_server.globus``: refused, with the line that replaces it."""

from colmena_fed.colmena import TASK_SERVER_LINE, refused

GlobusComputeTaskServer = refused(
    "GlobusComputeTaskServer",
    "endpoints are named per site (a `globus` site's endpoint_id in the sites YAML) and "
    f"methods map to slot kinds, not endpoints: {TASK_SERVER_LINE}",
)

__all__ = ["GlobusComputeTaskServer"]
