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


class FailureInformation(BaseModel):
    """Colmena's view of a failure: the exception as text, and its traceback."""

    exception: str = Field(description="The exception, as 'Type: message'.")
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
