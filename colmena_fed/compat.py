"""Colmena's shapes of a task record, read off colmena-fed's `Result` (``colmena.models``).

A Colmena application reads ``result.failure_info.exception``, ``result.worker_info.hostname``,
``result.timestamp.compute_started`` or ``result.time.running``, and writes
``result.json(exclude={'inputs'})`` lines for its notebooks. colmena-fed's record keeps its own
fields (``failure``, ``worker``, ``timestamps``); these models are the same facts under
Colmena's names, built on demand (`colmena_fed.models.Result` exposes them as properties).
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class SerializationMethod(str, Enum):
    """Colmena's serialization methods (records stay in the thinker's process here)."""

    JSON = "json"
    PICKLE = "pickle"


class ResourceRequirements(BaseModel):
    """Colmena's per-task resource request: nodes, and processes and threads per node.

    Given to ``send_inputs(resources=...)``, anything beyond one process on one node becomes
    the task's Globus Compute resource specification (``num_nodes``, ``ranks_per_node``),
    which only MPI sites accept; ``cpu_threads`` is not sent (a method reads it itself).
    """

    model_config = ConfigDict(validate_assignment=True)

    node_count: int = Field(default=1, ge=1, description="Nodes the task spans.")
    cpu_processes: int = Field(default=1, ge=1, description="Processes (ranks) per node.")
    cpu_threads: int = Field(default=1, ge=1, description="Threads per process.")

    @property
    def total_ranks(self) -> int:
        """Processes over all nodes."""
        return self.node_count * self.cpu_processes

    def specification(self) -> dict[str, int] | None:
        """The Globus Compute resource specification this asks for; None for one process."""
        if self.total_ranks == 1:
            return None
        return {"num_nodes": self.node_count, "ranks_per_node": self.cpu_processes}


class FailureInformation(BaseModel):
    """Colmena's view of a failure: the exception as text, and its traceback."""

    exception: str = Field(description="The exception, as ``repr`` writes it: Type('message').")
    traceback: str | None = Field(default=None, description="The traceback, if there is one.")


class WorkerInformation(BaseModel):
    """Colmena's view of the worker that ran the task (more fields allowed, as Colmena's)."""

    model_config = ConfigDict(extra="allow")

    hostname: str | None = Field(default=None, description="Host name of the worker's node.")


class ColmenaTimestamps(BaseModel):
    """Colmena's ``Timestamps``: when each hop happened (NaN: it did not happen)."""

    created: float = Field(description="The thinker sent the task.")
    input_received: float = Field(default=math.nan, description="The task server took it.")
    compute_started: float = Field(default=math.nan, description="A worker started the method.")
    compute_ended: float = Field(default=math.nan, description="The method returned or raised.")
    result_sent: float = Field(default=math.nan, description="The outcome left the site.")
    result_received: float = Field(default=math.nan, description="The thinker took the result.")
    start_task_submission: float = Field(
        default=math.nan, description="The task server sent the task to a site."
    )
    task_received: float = Field(
        default=math.nan, description="The task server received the outcome."
    )


class TimeSpans(BaseModel):
    """Colmena's ``TimeSpans``: how long the steps took (NaN: not measured here)."""

    running: float = Field(default=math.nan, description="The method's run time.")
    serialize_inputs: float = Field(default=math.nan, description="Putting inputs in a store.")
    deserialize_inputs: float = Field(default=math.nan, description="Resolving input proxies.")
    serialize_results: float = Field(default=math.nan, description="Putting the result in a store.")
    deserialize_results: float = Field(default=math.nan, description="Resolving the result.")
    async_resolve_proxies: float = Field(default=math.nan, description="Not measured here.")
    proxy: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    additional: dict[str, float] = Field(default_factory=dict)
