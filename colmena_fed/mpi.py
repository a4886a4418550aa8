"""MPI sites: which sites run a ``GlobusMPIEngine``, and what a task must ask of one.

A site whose endpoint runs Parsl's MPI mode (``GlobusMPIEngine``) hands each task a set of
whole nodes of one block, sized by the task's resource specification (``num_nodes``,
``ranks_per_node`` or ``num_ranks``, ``launcher_options``). Parsl accepts specifications it
can never satisfy and waits for ever (a missing ``num_nodes``, more nodes than a block has), and
a plain engine ignores them; so colmena-fed checks each task against its site before sending it.

A `local` MPI site on a machine without a batch scheduler (a laptop, this CI machine) has no
node list for Parsl to read: `local_node_file` writes one, and the site's workers read it
through ``PBS_NODEFILE``, as under PBS.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from colmena_fed.errors import ConfigError
from colmena_fed.files import private_file

if TYPE_CHECKING:
    from colmena_fed.sites import SitesConfig

#: The keys Parsl's MPI mode takes in a resource specification.
SPECIFICATION_KEYS = ("num_nodes", "ranks_per_node", "num_ranks", "launcher_options")

#: The keys a non-MPI engine (Parsl's HTEX) takes in a resource specification.
HTEX_SPECIFICATION_KEYS = ("priority",)

#: The environment variables Parsl's MPI mode reads the block's nodes from.
NODE_LIST_VARIABLES = ("PBS_NODEFILE", "SLURM_NODELIST")


@dataclass(frozen=True)
class MPISite:
    """What the scheduler knows of a site running a ``GlobusMPIEngine``.

    Attributes:
        nodes_per_block: Nodes in each of its blocks: the most one task can have.
        specification: The site's own ``resource_specification``, under each task's.
        source: Where ``nodes_per_block`` was read, for messages.
    """

    nodes_per_block: int
    specification: Mapping[str, Any] = field(default_factory=dict)
    source: str = "the sites YAML"


def specification_problem(spec: Mapping[str, Any]) -> str | None:
    """What is wrong with a resource specification in itself (None: nothing), by field."""
    for key, value in spec.items():
        if key not in SPECIFICATION_KEYS:
            return (
                f"field {key!r} is not one Parsl's MPI mode takes ({', '.join(SPECIFICATION_KEYS)})"
            )
        if key == "launcher_options":
            if not isinstance(value, str):
                return f"field 'launcher_options' must be a string of arguments, got {value!r}"
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"field {key!r} must be a whole number >= 1, got {value!r}"
    nodes, per_node, ranks = (spec.get(key) for key in SPECIFICATION_KEYS[:3])
    if nodes and per_node and ranks and ranks != nodes * per_node:
        return (
            f"field 'num_ranks' is {ranks}, but num_nodes {nodes} x ranks_per_node {per_node} "
            f"is {nodes * per_node}; give two of the three"
        )
    if nodes and ranks and not per_node and ranks % nodes:
        return (
            f"field 'num_ranks' {ranks} is not a multiple of num_nodes {nodes}; give "
            "ranks_per_node instead"
        )
    return None


def launch_problem(spec: Mapping[str, Any]) -> str | None:
    """What an MPI site lacks in a (valid) specification to launch the task (None: nothing)."""
    if "num_nodes" not in spec:
        return (
            "the resource specification has no 'num_nodes' (Parsl's MPI mode would wait for "
            "ever); give it in the method's or the task's specification"
        )
    if "ranks_per_node" not in spec and "num_ranks" not in spec:
        return (
            "the resource specification gives neither 'ranks_per_node' nor 'num_ranks', so the "
            "launcher would be told no rank count"
        )
    return None


def endpoint_nodes_per_block(config_text: str) -> int | None:
    """Nodes per block of the ``GlobusMPIEngine`` an endpoint YAML describes; None if another.

    ``config_text`` is the rendered YAML (the engine is checked, not built, here).
    """
    data = yaml.safe_load(config_text)
    engine = data.get("engine") if isinstance(data, dict) else None
    if not isinstance(engine, dict) or engine.get("type") != "GlobusMPIEngine":
        return None
    provider = engine.get("provider")
    nodes = provider.get("nodes_per_block", 1) if isinstance(provider, dict) else 1
    return nodes if isinstance(nodes, int) and nodes >= 1 else 1


def needs_node_file(config_text: str) -> bool:
    """Whether an endpoint YAML's MPI engine runs here with no batch scheduler's node list.

    True for a ``GlobusMPIEngine`` on a ``LocalProvider`` when neither ``PBS_NODEFILE`` nor
    ``SLURM_NODELIST`` is set: Parsl's MPI mode would then refuse to start its workers.
    """
    if endpoint_nodes_per_block(config_text) is None:
        return False
    provider = (yaml.safe_load(config_text).get("engine") or {}).get("provider") or {}
    local = isinstance(provider, dict) and provider.get("type") == "LocalProvider"
    return local and not any(os.environ.get(name) for name in NODE_LIST_VARIABLES)


def local_node_file(directory: Path) -> Path:
    """A node list holding this machine alone, in ``directory``, for ``PBS_NODEFILE``."""
    path = directory / "nodefile"
    private_file(path, f"{socket.gethostname()}\n")
    return path


def mpi_sites(config: SitesConfig) -> dict[str, MPISite]:
    """The sites of a federation that run a ``GlobusMPIEngine``.

    A `local` site's engine is read from its endpoint YAML (rendered with its
    ``user_endpoint_config``); a `globus` site says so with ``nodes_per_block``.

    Raises:
        ConfigError: A site's ``nodes_per_block`` contradicts its endpoint YAML, or its
            ``resource_specification`` is not one an MPI engine takes (or it is not an MPI
            site).
    """
    from colmena_fed.backends.engine import engine_config_text  # loads Globus Compute's endpoint

    where = config.source or "sites configuration"
    found: dict[str, MPISite] = {}
    for name, site in config.sites.items():
        nodes, source = site.nodes_per_block, str(where)
        if site.local is not None:
            read = endpoint_nodes_per_block(
                engine_config_text(site.local, site.user_endpoint_config)
            )
            if nodes is not None and read != nodes:
                engine = "a GlobusMPIEngine" if read is None else f"blocks of {read} nodes"
                raise ConfigError(
                    f"{where}: site {name!r}, field 'nodes_per_block': {nodes}, but its endpoint "
                    f"YAML {site.local} describes {engine}; leave the field out for a local site"
                )
            nodes, source = read, str(site.local)
        spec = site.resource_specification
        if nodes is None:
            if spec:
                raise ConfigError(
                    f"{where}: site {name!r}, field 'resource_specification': only an MPI site "
                    "(a GlobusMPIEngine) takes one; for a globus site running one, give "
                    "nodes_per_block (the nodes in each of its blocks)"
                )
            continue
        problem = specification_problem(spec)
        if problem is not None:
            raise ConfigError(f"{where}: site {name!r}, field 'resource_specification': {problem}")
        found[name] = MPISite(nodes, dict(spec), source)
    return found
