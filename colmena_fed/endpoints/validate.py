"""Checking an endpoint configuration before a batch job finds out what is wrong with it.

Each file is rendered as the endpoint's template and loaded with globus-compute-endpoint's own
config loader, which builds the engine, provider and launcher without submitting anything. On
top of that come checks the loader does not make: unknown keys reported all at once with the
key they resemble, accelerators that do not match the workers per node, a GPU request whose
workers are not pinned to GPUs, a batch provider that would silently use Parsl's default
walltime or the user's default account, and a multi-node block whose launcher starts workers
on one node only. Every problem names its file and field.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
import globus_compute_endpoint.engines
import parsl.addresses
import parsl.launchers
import parsl.providers
import yaml
from globus_compute_endpoint.endpoint.config.config import BaseConfig, UserEndpointConfig
from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
from parsl.executors import HighThroughputExecutor, MPIExecutor
from parsl.jobs.job_status_poller import JobStatusPoller
from parsl.providers.cluster_provider import ClusterProvider

from colmena_fed.endpoints.template import MissingVariables, TemplateError, placeholder, render
from colmena_fed.errors import ConfigError
from colmena_fed.files import UniqueKeyLoader, read_config_text

#: The Parsl executor each engine hands its remaining keyword arguments to.
_ENGINE_EXECUTORS: dict[str, type] = {
    "GlobusComputeEngine": HighThroughputExecutor,
    "GlobusMPIEngine": MPIExecutor,
}

#: Scheduler requests for GPUs, in any provider option that carries directives.
_GPU_REQUEST = re.compile(r"ngpus=|--gpus|--gres[= ]\S*gpu|(?:^|\s)-G\s|--constraint[= ]\S*gpu")

#: Providers whose jobs have no walltime (HTCondor runs a job until it ends).
_NO_WALLTIME = frozenset({"CondorProvider"})

#: Scheduler directives in ``scheduler_options`` that set the account or project instead.
_CHARGED_IN_OPTIONS = {
    "account": re.compile(r"#PBS\s+-A\s|#SBATCH\s+(?:-A\s|--account[= ])"),
    "project": re.compile(r"\+ProjectName\s*=|#PBS\s+-P\s"),
}

#: The MPI launcher each provider's jobs use (the machines in endpoints/ are Slurm or PBS).
_MPI_LAUNCHERS = {
    "SlurmProvider": "srun",
    "PBSProProvider": "mpiexec",
    "TorqueProvider": "mpiexec",
    "LocalProvider": "mpiexec",
}

#: The launchers Parsl's MPI mode composes a prefix for.
_ALL_MPI_LAUNCHERS = ("mpiexec", "srun", "aprun")

#: Launchers that start the worker pool on the block's first node only.
_ONE_NODE_LAUNCHERS = frozenset({"SingleNodeLauncher", "SimpleLauncher"})


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an endpoint configuration.

    Attributes:
        severity: ``error`` when the endpoint would not start, or would misbehave for certain;
            ``warning`` for advice that may not apply to this site (an account where the
            scheduler needs none, a walltime left to the queue's default).
    """

    file: Path
    field: str
    message: str
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.field or '(file)'}: {self.severity}: {self.message}"


def validate(path: Path, variables: Mapping[str, Any]) -> list[Problem]:
    """Every problem found in the endpoint configuration at ``path``; empty if it is sound.

    ``variables`` are the template variables (``--var``; a site's ``user_endpoint_config``).
    """
    try:
        text = read_config_text(path, "endpoint YAML")
    except ConfigError as exc:
        return [Problem(path, "", str(exc).removeprefix(f"{path}: "))]
    try:
        rendered = render(path, text, variables)
    except MissingVariables as exc:
        return _missing(path, exc)
    except TemplateError as exc:
        return [Problem(path, "", str(exc), exc.line)]
    try:
        data = yaml.load(rendered, Loader=UniqueKeyLoader)  # a key given twice loses one
    except yaml.YAMLError as exc:
        # The line where the broken construct starts; the rendered file's lines are the
        # template's when rendering kept their number.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        same_lines = len(rendered.splitlines()) == len(text.splitlines())
        line = mark.line + 1 if mark is not None and same_lines else None
        return [Problem(path, "", f"not valid YAML: {_yaml_reason(exc)}", line)]
    if not isinstance(data, dict):
        return [Problem(path, "", "expected a mapping of endpoint settings (display_name, engine)")]
    problems = list(_unknown_keys(path, data))
    if problems:
        return problems
    mpi = list(_mpi_engine(path, data))
    if any(problem.severity == "error" for problem in mpi):
        return mpi
    loader_problem = _load(path, rendered, data)
    if loader_problem is not None:
        return [loader_problem]
    return [*mpi, *_semantic(path, data)]


def _missing(path: Path, missing: MissingVariables) -> list[Problem]:
    """One problem per missing variable, at the fields that use it."""
    try:
        data = yaml.safe_load(missing.rendered)
    except yaml.YAMLError:
        data = None
    problems = []
    for name in missing.names:
        fields = [
            field
            for field, value in _leaves(data)
            if isinstance(value, str) and placeholder(name) in value
        ]
        problems.append(
            Problem(
                path,
                ", ".join(fields) or f"{{{{ {name} }}}}",
                f"template variable {name!r} has no value; give --var {name}=VALUE "
                "(for a site: its user_endpoint_config)",
            )
        )
    return problems


def _unknown_keys(path: Path, data: dict[str, Any]) -> Iterator[Problem]:
    """Keys no constructor takes, each with the closest key it does take."""
    yield from _extra(path, "", data, _parameters(UserEndpointConfig) | _parameters(BaseConfig))
    engine = data.get("engine")
    if "engine" in data and not isinstance(engine, dict):
        yield Problem(path, "engine", "expected a mapping with the engine's type and settings")
    if not isinstance(engine, dict):
        return
    yield from _block(path, "engine", engine, globus_compute_endpoint.engines, "engine")
    address = engine.get("address")
    if isinstance(address, dict):
        yield from _block(path, "engine.address", address, parsl.addresses, "address function")
    scaling = engine.get("job_status_kwargs")
    if isinstance(scaling, dict):  # the engine hands these to Parsl's JobStatusPoller
        known = _parameters(JobStatusPoller)
        yield from _extra(path, "engine.job_status_kwargs", scaling, known, typed=False)
    provider = engine.get("provider")
    if provider is not None and not isinstance(provider, dict):
        yield Problem(path, "engine.provider", "expected a mapping with the provider's type")
    if isinstance(provider, dict):
        yield from _block(path, "engine.provider", provider, parsl.providers, "provider")
        launcher = provider.get("launcher")
        if isinstance(launcher, dict):
            field = "engine.provider.launcher"
            yield from _block(path, field, launcher, parsl.launchers, "launcher")


def _block(
    path: Path, field: str, block: dict[str, Any], module: Any, kind: str
) -> Iterator[Problem]:
    """The problem with a typed block's ``type``, or else its unknown keys."""
    found = _typed(path, field, block, module, kind)
    if isinstance(found, Problem):
        yield found
        return
    known = _parameters(found)
    if field == "engine":
        executor = _ENGINE_EXECUTORS.get(block["type"])
        if executor is None:  # other engines take keywords this module does not list
            return
        # GlobusMPIEngine takes its parent's keywords through **kwargs: read them there.
        for ancestor in found.__mro__[1:] if isinstance(found, type) else ():
            known |= _parameters(ancestor)
        known |= _parameters(executor)
    yield from _extra(path, field, block, known)


def _typed(
    path: Path, field: str, block: dict[str, Any], module: Any, kind: str
) -> Callable[..., Any] | Problem:
    """The class (or function) a block's ``type`` names, or the problem with its ``type``."""
    name = block.get("type")
    if name is None:
        return Problem(path, f"{field}.type", f"missing: say which {kind} this is")
    if not isinstance(name, str):
        return Problem(path, f"{field}.type", f"{name!r} is not the name of a {kind}")
    found = getattr(module, name, None)
    if callable(found) and not name.startswith("_"):
        return found
    known = sorted(
        k
        for k, v in vars(module).items()
        if not k.startswith("_") and callable(v) and k[0].isupper()
    ) or sorted(k for k in dir(module) if k.startswith("address_by"))
    return Problem(path, f"{field}.type", f"unknown {kind} {name!r}{_did_you_mean(name, known)}")


def _extra(
    path: Path, field: str, block: dict[str, Any], known: set[str], typed: bool = True
) -> Iterator[Problem]:
    """Keys of ``block`` not in ``known`` (nor ``type``, for a typed block below the top)."""
    known = known | {"type"} if field and typed else known
    for key in block:
        if key not in known:
            where = f"{field}.{key}" if field else str(key)
            yield Problem(path, where, f"unknown key{_did_you_mean(str(key), sorted(known))}")


def _parameters(target: Any) -> set[str]:
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(target).parameters.values()
    return {p.name for p in params if p.kind in kinds and p.name != "self"}


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _load(path: Path, rendered: str, data: dict[str, Any]) -> Problem | None:
    """What globus-compute-endpoint's own loader says; it builds the engine but starts nothing."""
    engine_block = data.get("engine")
    if isinstance(engine_block, dict) and isinstance(engine_block.get("address"), dict):
        # An address function (address_by_interface: hsn0) names the endpoint host's network,
        # which this machine need not have; it was checked above, and is resolved there.
        rendered = yaml.safe_dump({**data, "engine": {**engine_block, "address": "127.0.0.1"}})
    try:
        config = load_config_yaml(rendered)
    except click.ClickException as exc:
        return _loader_problem(path, exc.format_message(), data)
    except Exception as exc:
        return _loader_problem(path, f"{type(exc).__name__}: {exc}", data)
    engine = getattr(config, "engine", None)
    if engine is None:
        return Problem(
            path,
            "engine",
            "missing: this is an endpoint's own config.yaml, not the engine configuration "
            "of a site (its user_config_template)",
        )
    engine.shutdown()
    return None


def _loader_problem(path: Path, message: str, data: dict[str, Any]) -> Problem:
    """The loader's message, tied to the field it is about where the message names one."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("For further information")]
    named = re.search(r"""argument ["']([A-Za-z_]\w*)["']""", message)
    key = named.group(1) if named else (lines[1] if len(lines) > 2 else None)
    fields = [field for field, _ in _leaves(data) if key and field.split(".")[-1] == key]
    text = " ".join(lines[2:] if key and not named and fields else lines)
    return Problem(path, fields[0] if fields else "", text)


def _semantic(path: Path, data: dict[str, Any]) -> Iterator[Problem]:
    """Checks of meaning: a configuration that loads, yet would not run as its author meant."""
    engine = _mapping(data.get("engine"))
    provider = _mapping(engine.get("provider"))
    accelerators = engine.get("available_accelerators")
    if isinstance(accelerators, str):
        yield Problem(
            path,
            "engine.available_accelerators",
            f"{accelerators!r} is a string, which Parsl splits into one accelerator per "
            'character; give a count (4) or a list of ids (["0", "1"])',
        )
        return
    count = accelerators if isinstance(accelerators, int) else len(accelerators or [])
    workers = engine.get("max_workers_per_node")
    if count and workers is not None and workers != count:
        yield Problem(
            path,
            "engine.max_workers_per_node",
            f"{workers} workers per node but {count} accelerators: each worker is pinned to "
            f"one accelerator, so Parsl starts {min(workers, count)} "
            + ("and the other accelerators stay idle" if workers < count else "workers, not more")
            + "; make them equal",
            severity="warning",
        )
    request = _gpu_request(provider)
    if request and not count and engine.get("type") != "GlobusMPIEngine":
        yield Problem(
            path,
            "engine.available_accelerators",
            f"the provider asks for GPUs ({request}) but workers are not pinned to them: set "
            "available_accelerators to the GPUs (or GPU tiles) per node",
            severity="warning",
        )
    provider_class = getattr(parsl.providers, str(provider.get("type")), None)  # checked above
    if isinstance(provider_class, type) and issubclass(provider_class, ClusterProvider):
        yield from _batch_settings(path, provider, _parameters(provider_class))
        yield from _launcher(path, engine, provider)


def _batch_settings(path: Path, provider: dict[str, Any], accepted: set[str]) -> Iterator[Problem]:
    walltime = provider.get("walltime")
    if isinstance(walltime, int):
        yield Problem(
            path,
            "engine.provider.walltime",
            f"{walltime} is a number, not HH:MM:SS: YAML reads an unquoted 1:00:00 as "
            f"seconds in base 60; quote it: walltime: '{_hms(walltime)}'",
        )
    if walltime is None and provider.get("type") not in _NO_WALLTIME:
        yield Problem(
            path,
            "engine.provider.walltime",
            "missing: Parsl's default (10 or 20 minutes) would end each block early; "
            "set the walltime your queue allows, e.g. '01:00:00'",
            severity="warning",
        )
    options = str(provider.get("scheduler_options") or "")
    for key in ("account", "project"):
        if key not in accepted or _CHARGED_IN_OPTIONS[key].search(options):
            continue
        if key not in provider:
            yield Problem(
                path,
                f"engine.provider.{key}",
                f"missing: jobs would be charged to your default {key}, or refused; set the "
                f"allocation to charge (or {key}: null where the scheduler needs none)",
                severity="warning",
            )
        elif provider[key] == "":
            yield Problem(
                path,
                f"engine.provider.{key}",
                "empty: some providers still pass it to the scheduler (PBS then reads the job "
                f"script as the {key}); write {key}: null for none",
            )


def _launcher(path: Path, engine: dict[str, Any], provider: dict[str, Any]) -> Iterator[Problem]:
    nodes = provider.get("nodes_per_block", 1)
    launcher = _mapping(provider.get("launcher"))
    name = launcher.get("type", "SingleNodeLauncher")
    if (
        isinstance(nodes, int)
        and nodes > 1
        and name in _ONE_NODE_LAUNCHERS
        and engine.get("type") != "GlobusMPIEngine"
    ):
        yield Problem(
            path,
            "engine.provider.launcher",
            f"{nodes} nodes per block, but the {name} starts workers on the first node only; "
            "use SrunLauncher (Slurm) or MpiExecLauncher (PBS) to start them on every node",
        )


def _mpi_engine(path: Path, data: dict[str, Any]) -> Iterator[Problem]:
    """An MPI engine's launchers and sizes, which its loader checks late or not at all."""
    engine = _mapping(data.get("engine"))
    if engine.get("type") != "GlobusMPIEngine":
        return
    provider = _mapping(engine.get("provider"))
    kind = str(provider.get("type"))
    launcher = _mapping(provider.get("launcher")).get("type", "SingleNodeLauncher")
    if launcher != "SimpleLauncher":
        yield Problem(
            path,
            "engine.provider.launcher",
            f"{launcher}: Parsl's MPI mode needs the SimpleLauncher (one worker pool per "
            "block, on its first node, whose tasks launch their ranks with mpi_launcher)",
        )
    mpi_launcher = engine.get("mpi_launcher", "mpiexec")
    expected = _MPI_LAUNCHERS.get(kind)
    if mpi_launcher not in _ALL_MPI_LAUNCHERS:
        yield Problem(
            path,
            "engine.mpi_launcher",
            f"{mpi_launcher!r} is not a launcher Parsl composes; use "
            f"{expected or ' or '.join(_ALL_MPI_LAUNCHERS)}",
        )
    elif expected is not None and mpi_launcher != expected:
        yield Problem(
            path,
            "engine.mpi_launcher",
            f"{mpi_launcher} under the {kind}, whose jobs launch MPI programs with {expected}",
            severity="warning" if kind == "SlurmProvider" else "error",
        )
    nodes = provider.get("nodes_per_block", 1)
    workers = engine.get("max_workers_per_block")
    if kind == "LocalProvider" and isinstance(nodes, int) and nodes > 1:
        yield Problem(
            path,
            "engine.provider.nodes_per_block",
            f"{nodes} nodes per block, but a LocalProvider's block is this one machine: 1",
        )
    if workers is None:
        yield Problem(
            path,
            "engine.max_workers_per_block",
            "missing: Parsl's default runs one MPI task per block at a time; set how many "
            "run at once (at most nodes_per_block)",
            severity="warning",
        )
    elif isinstance(workers, int) and isinstance(nodes, int) and workers > nodes:
        yield Problem(
            path,
            "engine.max_workers_per_block",
            f"{workers} tasks at once per block, but a block has {nodes} nodes and each task "
            "takes at least one: the others wait on the block",
        )


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _gpu_request(provider: dict[str, Any]) -> str:
    """The provider setting that asks the scheduler for GPUs, if one does."""
    if provider.get("gpus_per_node"):
        return f"gpus_per_node: {provider['gpus_per_node']}"
    launcher = _mapping(provider.get("launcher"))
    for key, value in [*provider.items(), *launcher.items()]:
        if key in ("worker_init", "type") or not isinstance(value, str):
            continue
        match = _GPU_REQUEST.search(value)
        if match or (key in ("gres", "constraint") and "gpu" in value):
            return f"{key}: {value.strip()!r}"
    return ""


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted field, value) in parsed YAML, mappings included."""
    if isinstance(data, dict):
        for key, value in data.items():
            field = f"{prefix}.{key}" if prefix else str(key)
            yield field, value
            yield from _leaves(value, field)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _leaves(value, f"{prefix}[{index}]")


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    return " ".join(str(part) for part in (context, problem) if part) or str(exc)
