"""Driving a Globus Compute endpoint engine inside this process, safely.

The engine (``GlobusComputeEngine``: Parsl's HighThroughputExecutor underneath) was written to
live inside an endpoint daemon. Running it under a thinker needs a few precautions: its
subprocesses must find their console scripts and the thinker's modules, must not die with the
user's Ctrl+C but must not outlive the thinker either (`colmena_fed.guard`), and a dead
interchange must not make status reads or shutdown wait forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import sysconfig
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
from globus_compute_endpoint.engines.base import GlobusComputeEngineBase

from colmena_fed.endpoints.template import MissingVariables, TemplateError, render
from colmena_fed.errors import ConfigError
from colmena_fed.files import read_config_text
from colmena_fed.guard import adopt, ensure_guard

_ENDPOINT_SCRIPT = "globus-compute-endpoint"
_environment_lock = threading.Lock()

#: Engines given up by `abandon`, kept referenced until the process exits. Garbage-collecting
#: one would run ZeroMQ's ``Context.term()``, which waits forever for the socket that a stuck
#: Parsl thread still holds: a hang in whatever thread the collector happens to run in.
_abandoned: list[GlobusComputeEngineBase] = []

logger = logging.getLogger(__name__)


def prepare_worker_environment() -> None:
    """Let the engine's subprocesses find the scripts and modules they need, and end in time.

    The engine launches ``globus-compute-endpoint`` and Parsl's worker pool by name, so the
    directory holding this interpreter's scripts goes on PATH; the thinker's import path goes on
    PYTHONPATH so workers can import the modules that define its methods. The process's guard
    is started, and its token goes into the environment every subprocess inherits.
    """
    ensure_guard()
    with _environment_lock:
        scripts = sysconfig.get_path("scripts")
        if shutil.which(_ENDPOINT_SCRIPT) is None and scripts:
            os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
        current = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        extra = [p for p in sys.path if p and os.path.isdir(p) and p not in current]
        os.environ["PYTHONPATH"] = os.pathsep.join([p for p in [*current, *extra] if p])


def engine_config_text(path: Path, variables: Mapping[str, Any] | None = None) -> str:
    """An endpoint YAML rendered as a config template with ``variables``, as an endpoint would.

    A file without template syntax comes back as it is; `ConfigError` names the file.
    """
    text = read_config_text(path, "endpoint YAML")
    try:
        return render(path, text, variables or {})
    except MissingVariables as exc:
        raise ConfigError(f"{path}: {exc}; give them in the site's user_endpoint_config") from exc
    except TemplateError as exc:
        line = f" (line {exc.line})" if exc.line else ""
        raise ConfigError(f"{path}{line}: {exc}") from exc


def load_engine(path: Path, variables: Mapping[str, Any] | None = None) -> GlobusComputeEngineBase:
    """Build (not start) the engine an endpoint YAML describes; `ConfigError` names the file.

    The file gets the checks of ``colmena-fed endpoints validate`` first: an error refuses it,
    naming the file and field; a warning is logged.
    """
    text = engine_config_text(path, variables)
    _check(path, variables or {})
    try:
        config = load_config_yaml(text)
    except click.ClickException as exc:
        raise ConfigError(f"{path}: {exc.format_message()}") from exc
    except Exception as exc:
        raise ConfigError(f"{path}: invalid endpoint configuration: {exc}") from exc
    engine = getattr(config, "engine", None)
    if engine is None:
        raise ConfigError(f"{path}: no 'engine:' section; a site needs one to run tasks")
    return engine


def give_node_list(engine: GlobusComputeEngineBase, node_file: Path) -> None:
    """Have an MPI engine's worker pool read its block's nodes from ``node_file``.

    For a ``LocalProvider`` on a machine without a batch scheduler, whose jobs have no
    ``PBS_NODEFILE``: the pool's shell exports it before it starts (Parsl's MPI mode reads
    the node list from there, as under PBS). Only this engine's workers see it.
    """
    provider = engine.executor.provider
    export = f"export PBS_NODEFILE={shlex.quote(str(node_file))}"
    provider.worker_init = "\n".join(p for p in (provider.worker_init, export) if p)


@contextlib.contextmanager
def interrupts_ignored_by_children() -> Iterator[None]:
    """Start subprocesses deaf to Ctrl+C, so the task server alone decides when they stop.

    Ctrl+C signals the whole foreground process group; an engine's interchange killed by it
    leaves the engine unable to shut down. SIGINT is blocked in this thread while the engine
    starts: a child inherits the blocked signal mask across exec, so the interchange never sees
    SIGINT. This process still does: the signal is delivered to another thread or, once
    unblocked, to this one, and Python raises KeyboardInterrupt as usual.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def guard_interchange(engine: GlobusComputeEngineBase) -> None:
    """Have the guard stop the engine's interchange if the thinker dies.

    The interchange sets its process title, which overwrites the environment that would
    otherwise mark it for the guard; its workers still carry the mark.
    """
    process = getattr(getattr(engine, "executor", None), "interchange_proc", None)
    if process is not None:
        adopt(process.pid)


def interchange_exit_code(engine: GlobusComputeEngineBase) -> int | None:
    """The exit code of the engine's interchange process, or None while it runs."""
    process = getattr(getattr(engine, "executor", None), "interchange_proc", None)
    return None if process is None else process.poll()


class StatusReader:
    """Reads an engine's status report without ever blocking its caller for long.

    ``get_status_report`` asks the interchange over a channel that has no timeout: if the
    interchange dies mid-request, the call never returns. Each read therefore runs in its own
    daemon thread; a read still stuck from before makes later reads report "no answer".
    """

    def __init__(self, engine: GlobusComputeEngineBase, timeout: float = 10.0) -> None:
        """Read ``engine``'s reports, waiting at most ``timeout`` seconds for each."""
        self.engine = engine
        self.timeout = timeout
        self._stuck: threading.Thread | None = None

    def read(self) -> Mapping[str, Any] | str:
        """The report's ``global_state``, or why it could not be read."""
        if self._stuck is not None and self._stuck.is_alive():
            return "the interchange stopped answering status requests"
        answer: dict[str, Any] = {}

        def ask() -> None:
            try:
                answer["state"] = dict(self.engine.get_status_report().global_state)
            except Exception as exc:
                answer["error"] = f"no status report: {exc}"

        thread = threading.Thread(target=ask, name="colmena-fed-status-read", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._stuck = thread
            return f"no status report within {self.timeout:.0f} s"
        state: Mapping[str, Any] | str = answer["state"] if "state" in answer else answer["error"]
        return state


def abandon(engine: GlobusComputeEngineBase, reason: Exception) -> None:
    """Stop an engine whose interchange has exited, without waiting on the dead interchange.

    The engine's own shutdown asks the interchange which blocks to scale in, and Parsl's scaling
    thread may already be stuck asking it something: both would wait forever. Instead: fail
    every outstanding task with ``reason``, stop the scaling thread without joining it, and
    cancel the worker blocks through the provider (which kills their process groups).
    """
    _abandoned.append(engine)
    executor = engine.executor
    executor.set_bad_state_and_fail_all(reason)
    poller = getattr(engine, "job_status_poller", None)
    if poller is not None:
        poller._kill_event.set()
        engine.job_status_poller = None
    job_ids = [job for job in executor.blocks_to_job_id.values() if job is not None]
    if job_ids:
        executor.provider.cancel(job_ids)


def _check(path: Path, variables: Mapping[str, Any]) -> None:
    from colmena_fed.endpoints.validate import validate  # loads every Parsl provider

    problems = validate(path, variables)
    for problem in problems:
        if problem.severity == "warning":
            logger.warning("%s", problem)
    errors = [str(problem) for problem in problems if problem.severity == "error"]
    if errors:
        raise ConfigError("; ".join(errors))
