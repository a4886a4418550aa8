"""The ``local`` backend: an endpoint YAML's engine, started in this process.

The endpoint YAML is loaded with globus-compute-endpoint's own config loader, so whatever
validates for ``globus-compute-endpoint start`` validates here. Tasks travel in Globus
Compute's own message format (messagepack ``Task``/``Result``, ``ComputeSerializer`` buffers),
exactly as they would from the cloud to a real endpoint.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result as GCResult
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines.base import GCFuture, GlobusComputeEngineBase

from colmena_fed.backends import (
    PAYLOAD_LIMIT_BYTES,
    OutcomeCallback,
    SiteStatus,
    StatusCallback,
    last_line,
)
from colmena_fed.backends.engine import (
    StatusReader,
    abandon,
    engine_config_text,
    give_node_list,
    guard_interchange,
    interchange_exit_code,
    interrupts_ignored_by_children,
    load_engine,
    prepare_worker_environment,
)
from colmena_fed.backends.serializer import FastSerializer
from colmena_fed.errors import ConfigError, SiteError
from colmena_fed.methods import Method
from colmena_fed.models import Result
from colmena_fed.mpi import local_node_file, needs_node_file
from colmena_fed.worker import WorkerReport, read_report

#: Globus Compute error codes of failures that a retry would only repeat.
WOULD_FAIL_AGAIN = frozenset({"MaxResultSizeExceeded"})


class LocalBackend:
    """A site whose Globus Compute engine runs inside the thinker's process."""

    polled = True
    outlives_thinker = False

    def __init__(
        self,
        name: str,
        endpoint_yaml: Path,
        variables: Mapping[str, Any] | None = None,
        specification: Mapping[str, Any] | None = None,
    ) -> None:
        """Prepare the site ``name``; nothing starts until `start`.

        ``endpoint_yaml`` is rendered as a config template with ``variables`` (the site's
        ``user_endpoint_config``), as a template-capable endpoint would render it. Every task
        is sent with ``specification`` (the site's ``resource_specification``), its own
        merged over it.
        """
        self.name = name
        self.endpoint_yaml = endpoint_yaml
        self.variables = dict(variables or {})
        self.specification = dict(specification or {})
        self.endpoint_id = str(uuid.uuid4())
        self._serializer = FastSerializer()
        self._functions: dict[str, str] = {}
        self._no_kwargs = self._serializer.serialize({})
        self._engine: GlobusComputeEngineBase | None = None
        self._status: StatusReader | None = None
        self._abandoned = False

    def start(self, run_dir: Path, on_status: StatusCallback) -> None:
        """Load the endpoint YAML and start its engine, with its logs under ``run_dir``.

        Its state is read by polling `status`, so ``on_status`` is not needed.
        """
        try:
            engine = load_engine(self.endpoint_yaml, self.variables)
        except ConfigError as exc:
            raise ConfigError(f"site {self.name!r}: {exc}") from exc
        prepare_worker_environment()
        run_dir.mkdir(parents=True, exist_ok=True)
        if needs_node_file(engine_config_text(self.endpoint_yaml, self.variables)):
            give_node_list(engine, local_node_file(run_dir))
        # Known before it starts, so that `shutdown` stops whatever part of it did start.
        self._engine = engine
        self._status = StatusReader(engine)
        try:
            with interrupts_ignored_by_children():
                engine.start(endpoint_id=uuid.UUID(self.endpoint_id), run_dir=str(run_dir))
        except Exception as exc:
            self.shutdown()
            raise SiteError(
                self.name, type(exc).__name__, f"engine failed to start: {exc}"
            ) from exc
        finally:
            guard_interchange(engine)  # started, or half-started

    def register(self, method: Method, function: Callable[..., Any]) -> None:
        """Serialize ``function`` once; every task of ``method`` reuses the buffer."""
        self._functions[method.name] = self._serializer.serialize(function)

    def submit(self, task: Result, on_done: OutcomeCallback) -> None:
        """Pack the task as Globus Compute does and hand it to the engine."""
        task_id, method, args, kwargs = task.task_id, task.method, task.args, task.kwargs
        if self._engine is None:
            on_done(SiteError(self.name, "NotStarted", "the site's engine is not running"))
            return
        serializer = self._serializer
        gc_task_id = uuid.UUID(task_id)
        try:
            buffer = serializer.pack_buffers(
                [
                    self._functions[method],
                    serializer.serialize((task_id, len(task.attempts), task.walltime, *args)),
                    serializer.serialize(dict(kwargs)) if kwargs else self._no_kwargs,
                ]
            )
        except Exception as exc:
            message = f"cannot serialize the inputs of task {task_id} ({method}): {exc}"
            on_done(SiteError(self.name, "SerializationError", message, kind="rejected"))
            return
        if len(buffer) > PAYLOAD_LIMIT_BYTES:
            message = (
                f"the inputs of task {task_id} ({method}) are {len(buffer) / 1e6:.1f} MB once "
                f"serialized, over Globus Compute's {PAYLOAD_LIMIT_BYTES / 2**20:.0f} MiB limit; "
                "configure a data store ('data: stores:' in the sites YAML) so that large "
                "inputs travel through it"
            )
            on_done(SiteError(self.name, "PayloadTooLarge", message, kind="rejected"))
            return
        packed = messagepack.pack(Task(task_id=gc_task_id, task_buffer=buffer))
        future = GCFuture(gc_task_id)
        future.add_done_callback(functools.partial(self._deliver, on_done))
        try:
            spec = task.resources.specification
            if self.specification:
                spec = {**self.specification, **(spec or {})}
            self._engine.submit(future, packed, resource_specification=spec or {})
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)

    def _deliver(self, on_done: OutcomeCallback, future: GCFuture) -> None:
        on_done(self._outcome(future))

    def _outcome(self, future: GCFuture) -> WorkerReport | SiteError:
        try:
            message = messagepack.unpack(future.result())
        except Exception as exc:
            return SiteError(self.name, type(exc).__name__, str(exc) or repr(exc))
        assert isinstance(message, GCResult)
        if message.error_details is not None:
            code = message.error_details.code
            text = last_line(message.data)
            if code == "MaxResultSizeExceeded":
                text += (
                    "; configure a data store ('data: stores:' in the sites YAML, reachable "
                    "from this site) so that large results travel through it"
                )
            kind: Literal["system", "rejected"] = (
                "rejected" if code in WOULD_FAIL_AGAIN else "system"
            )
            return SiteError(self.name, code, text, kind=kind)
        try:
            return read_report(self._serializer.deserialize(message.data))
        except Exception as exc:
            message_text = f"cannot read the result: {exc}"
            return SiteError(self.name, "DeserializationError", message_text, kind="rejected")

    def status(self) -> SiteStatus:
        """The engine's own status report, read as slots and workers."""
        engine = self._engine
        if engine is None:
            return SiteStatus(online=False, detail="not started")
        exit_code = interchange_exit_code(engine)
        if exit_code is not None:
            self._abandon(engine, exit_code)
            return SiteStatus(online=False, detail=f"interchange exited with code {exit_code}")
        failure = engine.executor_exception
        if failure is not None:
            return SiteStatus(online=False, detail=f"engine failed: {failure}")
        assert self._status is not None
        state = self._status.read()
        if isinstance(state, str):
            return SiteStatus(online=False, detail=state)
        return SiteStatus.from_report(state)

    def shutdown(self) -> None:
        """Stop the engine and its worker processes."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        exit_code = interchange_exit_code(engine)
        if exit_code is None:
            engine.shutdown()
        else:
            self._abandon(engine, exit_code)

    def _abandon(self, engine: GlobusComputeEngineBase, exit_code: int) -> None:
        """Fail the tasks of an engine whose interchange exited, and stop its workers (once)."""
        if not self._abandoned:
            self._abandoned = True
            message = f"the site's interchange exited with code {exit_code}"
            abandon(engine, SiteError(self.name, "InterchangeExited", message))
