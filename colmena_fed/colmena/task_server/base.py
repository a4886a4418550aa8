"""Colmena's ``colmena.task_server.base``: refused (colmena-fed's task server is not a Process)."""

from colmena_fed.colmena import TASK_SERVER_LINE, refused

BaseTaskServer = refused(
    "BaseTaskServer",
    f"colmena-fed's task server dispatches to sites and is not subclassed: {TASK_SERVER_LINE}",
)
FutureBasedTaskServer = refused(
    "FutureBasedTaskServer",
    f"colmena-fed's task server dispatches to sites and is not subclassed: {TASK_SERVER_LINE}",
)

__all__ = ["BaseTaskServer", "FutureBasedTaskServer"]
