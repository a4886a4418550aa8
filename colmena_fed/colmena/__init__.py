"""Colmena's module layout over colmena-fed, for porting an application by its imports.

Replace ``colmena.`` with ``colmena_fed.colmena.`` in an application's imports and rewrite
the line that builds its task server (docs/from-colmena.md). Each module here holds the names
of the Colmena module of the same path: colmena-fed's objects where the name means something
here, and for the rest (Colmena's task servers, its Redis queues) a stand-in whose
construction raises `UnsupportedError` naming the colmena-fed replacement.
"""

from __future__ import annotations

from typing import Any, NoReturn

from colmena_fed.errors import UnsupportedError


def refused(name: str, instead: str) -> type:
    """A stand-in for Colmena's class ``name``: building one raises, saying ``instead``."""

    def refuse(self: object, *args: Any, **kwargs: Any) -> NoReturn:
        raise UnsupportedError(f"{name} has no meaning in colmena-fed: {instead}")

    doc = f"Colmena's {name}, refused here: {instead}"
    return type(name, (), {"__init__": refuse, "__doc__": doc})


TASK_SERVER_LINE = (
    "the sites come from a sites YAML (one endpoint YAML per site), so build the task server "
    "with `TaskServer(queues, SitesConfig.from_yaml('sites.yaml'), methods)` (both from "
    "colmena_fed); the methods may stay as Colmena gives them"
)
