"""The task record: one `Result` carries everything about one task, from creation to delivery."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic_core import to_jsonable_python

from colmena_fed import clock
from colmena_fed.compat import (
    ColmenaTimestamps,
    FailureInformation,
    TimeSpans,
    WorkerInformation,
)
from colmena_fed.shell import ShellOutput

FailureKind = Literal["user", "system", "rejected", "shutdown", "expired", "superseded", "timeout"]


class ResourceRequest(BaseModel):
    """What one task needs from a site: a slot kind, optionally a given site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot: str | None = Field(
        default=None,
        description="Slot kind the task needs ('cpu', 'gpu', ...); None: the method's own kind.",
    )
    site: str | None = Field(
        default=None, description="Run only on this site (a name from the sites YAML)."
    )
    specification: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Globus Compute resource specification for this task (e.g. {num_nodes: 2}), "
            "merged over its site's 'resource_specification'."
        ),
    )
    endpoint_config: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Variables for a multi-user endpoint's config template for this task, merged over "
            "its site's 'user_endpoint_config' (`globus` sites)."
        ),
    )


#: The request of a task that needs only its method's slot kind (shared: requests are frozen).
ANYWHERE = ResourceRequest()


class FailureInfo(BaseModel):
    """Why a task did not produce a value."""

    model_config = ConfigDict(extra="forbid")

    kind: FailureKind = Field(
        description=(
            "'user': the method raised; 'system': the site or its workers failed; "
            "'rejected': the task can never succeed as sent (unknown method, no site offers its "
            "slot, inputs that cannot be serialized, a result too large to return); "
            "'shutdown': the task server stopped before the task ran; 'expired': the task was "
            "not dispatched within its max_wait; 'superseded': a newer task with the same "
            "supersede key replaced it while it was pending; 'timeout': the method ran past "
            "its walltime and was stopped."
        )
    )
    exception_type: str = Field(description="Name of the exception class, e.g. 'ValueError'.")
    message: str = Field(description="The exception's message, or colmena-fed's explanation.")
    traceback: str | None = Field(
        default=None, description="Formatted traceback from where the error was raised, if any."
    )


#: Records of one task that every task builds (worker, timestamps, attempts, data) are plain
#: slotted dataclasses, not models: much cheaper to build, and without a dict each. Pydantic
#: still validates them inside a `Result` (``model_validate``, JSON) and documents their fields.
_RECORD_CONFIG = ConfigDict(extra="forbid")


@dataclasses.dataclass(slots=True)
class WorkerInfo:
    """Where on the site the task ran."""

    __pydantic_config__: ClassVar[ConfigDict] = _RECORD_CONFIG

    hostname: Annotated[str, Field(description="Host name of the worker's node.")]
    pid: Annotated[int, Field(description="Process id of the worker that ran the task.")]
    accelerator: Annotated[
        str | None,
        Field(
            description=(
                "Accelerator id the worker was pinned to (CUDA_VISIBLE_DEVICES or the worker's "
                "accelerator variable); None for a worker without one."
            )
        ),
    ] = None


@dataclasses.dataclass(slots=True)
class Timestamps:
    """Wall-clock times (seconds since the epoch) of every hop a task makes."""

    __pydantic_config__: ClassVar[ConfigDict] = _RECORD_CONFIG

    created: Annotated[float, Field(description="The thinker called send_inputs.")] = (
        dataclasses.field(default_factory=clock.now)
    )
    dispatched: Annotated[
        float | None, Field(description="The task server sent the task to a site (last attempt).")
    ] = None
    compute_started: Annotated[
        float | None, Field(description="A worker started running the method (worker's clock).")
    ] = None
    compute_ended: Annotated[
        float | None, Field(description="The method returned or raised (worker's clock).")
    ] = None
    received: Annotated[
        float | None, Field(description="The task server received the outcome back from the site.")
    ] = None
    delivered: Annotated[
        float | None, Field(description="The thinker took the result from its topic (get_result).")
    ] = None


@dataclasses.dataclass(slots=True)
class Attempt:
    """One time the task was sent to a site, and how that attempt ended."""

    __pydantic_config__: ClassVar[ConfigDict] = _RECORD_CONFIG

    site: Annotated[str, Field(description="Site the attempt was sent to.")]
    dispatched: Annotated[
        float, Field(description="When the task server sent it (seconds since epoch).")
    ]
    ended: Annotated[
        float | None, Field(description="When the attempt ended; None while it runs.")
    ] = None
    reason: Annotated[
        str | None,
        Field(
            description=(
                "Why the attempt did not produce the final outcome (e.g. 'WorkerLost: ...', "
                "'site offline'); None for the attempt that did."
            )
        ),
    ] = None


@dataclasses.dataclass(slots=True)
class DataRecord:
    """What moving the task's data out of band cost (all None for a task with nothing proxied)."""

    __pydantic_config__: ClassVar[ConfigDict] = _RECORD_CONFIG

    input_bytes: Annotated[
        int | None, Field(description="Bytes of the inputs that went through a store.")
    ] = None
    proxy_inputs_s: Annotated[
        float | None, Field(description="Seconds the thinker spent putting inputs in a store.")
    ] = None
    resolve_inputs_s: Annotated[
        float | None, Field(description="Seconds the worker spent resolving input proxies.")
    ] = None
    result_bytes: Annotated[
        int | None, Field(description="Bytes of the result, when it went through a store.")
    ] = None
    proxy_result_s: Annotated[
        float | None,
        Field(description="Seconds the worker spent putting the result in a store."),
    ] = None
    resolve_result_s: Annotated[
        float | None,
        Field(description="Seconds the thinker spent resolving the result proxy."),
    ] = None


@dataclasses.dataclass(slots=True)
class WarmUse:
    """One call of `colmena_fed.warm` in a task: its key, and whether the worker had it."""

    __pydantic_config__: ClassVar[ConfigDict] = _RECORD_CONFIG

    key: Annotated[str, Field(description="The key the method asked for.")]
    hit: Annotated[bool, Field(description="The worker held it already (no load).")]
    load_s: Annotated[
        float, Field(description="Seconds the loader took on a miss; 0 on a hit.")
    ] = 0.0


@dataclasses.dataclass(slots=True)
class WarmRecord:
    """What a task found warm on its worker (`colmena_fed.warm`), and what it left there."""

    __pydantic_config__: ClassVar[ConfigDict] = _RECORD_CONFIG

    uses: Annotated[list[WarmUse], Field(description="Each warm() call of the task, in order.")] = (
        dataclasses.field(default_factory=list)
    )
    held: Annotated[
        list[str],
        Field(description="The keys the worker held once the task ended, least recent first."),
    ] = dataclasses.field(default_factory=list)

    @property
    def hit(self) -> bool:
        """Whether the task found everything it asked for warm (False if it asked for nothing)."""
        return bool(self.uses) and all(use.hit for use in self.uses)

    @property
    def load_s(self) -> float:
        """Seconds the task spent loading what it did not find warm."""
        return sum(use.load_s for use in self.uses)


def new_task_id() -> str:
    """A random (version 4) UUID as 32 hex digits, made without building a `uuid.UUID`."""
    bits = int.from_bytes(os.urandom(16), "big")
    bits = bits & ~(0xF000 << 64) | (0x4000 << 64)  # version 4
    bits = bits & ~(0xC000 << 48) | (0x8000 << 48)  # RFC 4122 variant
    return f"{bits:032x}"


def jsonable(value: Any) -> Any:
    """A JSON stand-in for a value pydantic cannot write: an array's list, else its repr."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_jsonable_python(tolist(), fallback=jsonable)
    return repr(value)


def _nan_if_none(value: float | None) -> float:
    """Colmena's way of saying "did not happen": NaN."""
    return math.nan if value is None else value


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


class Result(BaseModel):
    """The record of one task: inputs, outcome, placement and every timestamp.

    Created by `TaskQueues.send_inputs`, completed by the task server and the worker, and
    handed to the thinker by `TaskQueues.get_result`. Every delay a task met can be computed
    from this record alone.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    task_id: str = Field(
        default_factory=new_task_id, description="Unique id of the task (a UUID, as hex)."
    )
    method: str = Field(description="Name of the method to run.")
    topic: str = Field(default="default", description="Topic the result is delivered on.")
    args: tuple[Any, ...] = Field(default=(), description="Positional inputs of the method.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword inputs of the method."
    )
    keep_inputs: bool = Field(
        default=True, description="Keep the inputs on the record after the task ends."
    )
    keep_result: bool = Field(
        default=False,
        description=(
            "Deliver a result that came back through a data store as its proxy, and keep its "
            "object in the store (for later tasks) until the thinker releases it."
        ),
    )
    value: Any = Field(default=None, description="What the method returned (None on failure).")
    success: bool | None = Field(
        default=None,
        description="True if the method returned, False if it failed, None while running.",
    )
    failure: FailureInfo | None = Field(default=None, description="Why the task failed, if it did.")
    resources: ResourceRequest = Field(
        default=ANYWHERE, description="What the task asked of a site."
    )
    task_info: dict[str, Any] = Field(
        default_factory=dict, description="Free-form data from the thinker, returned untouched."
    )
    retries: int = Field(default=0, description="How many times the task was re-sent to a site.")
    max_retries: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Re-sends allowed after a site fails the task (never after the method raises); "
            "None: the method's own limit."
        ),
    )
    walltime: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds the method may run on its worker; past that it is stopped and the task "
            "ends as a failed result of kind 'timeout'. None: the method's walltime."
        ),
    )
    max_wait: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds the task may wait on the thinker side to be dispatched; past that it ends "
            "as a failed result of kind 'expired'."
        ),
    )
    supersede: str | None = Field(
        default=None,
        description=(
            "Key: a newer pending task with the same key replaces this one while it is still "
            "pending (it then ends as 'superseded')."
        ),
    )
    priority: int = Field(
        default=0,
        description="Pending tasks with higher priority are dispatched first (FIFO within one).",
    )
    stores: list[str] = Field(
        default_factory=list,
        description=(
            "Stores holding the task's proxied inputs: it runs only on sites that reach them."
        ),
    )
    data: DataRecord = Field(
        default_factory=DataRecord, description="Sizes and times of the data sent out of band."
    )
    attempts: list[Attempt] = Field(
        default_factory=list, description="Every dispatch to a site, in order, and how it ended."
    )
    slot: str | None = Field(default=None, description="Slot kind the task was placed on.")
    site: str | None = Field(default=None, description="Name of the site the task ran on.")
    endpoint: str | None = Field(
        default=None, description="Globus Compute endpoint id of that site."
    )
    placement: str | None = Field(
        default=None, description="Why the scheduler chose that site, in words."
    )
    worker: WorkerInfo | None = Field(default=None, description="The worker that ran the task.")
    timestamps: Timestamps = Field(
        default_factory=Timestamps, description="When the task passed each hop."
    )
    downtime: float = Field(
        default=0.0,
        description=(
            "Seconds the task spent with no thinker running (a resumed run: from the last "
            "thing its journal recorded to the resume); not counted against its max_wait."
        ),
    )
    replayed: bool = Field(
        default=False,
        description=(
            "A resumed run hands the thinker again a result it had delivered before the "
            "thinker died, marked replayed, so the thinker can rebuild its state from it."
        ),
    )
    streams: bool = Field(
        default=False,
        description=(
            "Whether the method streams intermediate results (a generator, or one calling "
            "`colmena_fed.emit`): the task runs only on sites that reach a channel."
        ),
    )
    sequence: int | None = Field(
        default=None,
        description=(
            "On an intermediate result: its place in the task's stream (0, 1, ...); None on "
            "the task's final result."
        ),
    )
    intermediates: int = Field(
        default=0,
        description="On the final result: how many intermediate results came before it.",
    )
    shell: ShellOutput | None = Field(
        default=None,
        description=(
            "A shell or MPI method's command as run: its exit status and the last lines of "
            "its stdout and stderr (a failed command's too)."
        ),
    )
    warm_key: str | None = Field(
        default=None,
        description=(
            "The key of the state the task's method keeps warm on its worker "
            "(`colmena_fed.warm`): the task server prefers a site where it is warm."
        ),
    )
    warm: WarmRecord | None = Field(
        default=None,
        description=(
            "What the method found warm on its worker: each warm() call's key, hit and load "
            "time, and the keys the worker held afterwards (None: it called warm() never and "
            "its worker holds nothing)."
        ),
    )

    @field_serializer("args", "kwargs", "value", "task_info", when_used="json")
    def _json_data(self, data: Any) -> Any:
        """Inputs and values in JSON: numpy arrays as lists, anything else unknown as its repr."""
        return to_jsonable_python(data, fallback=jsonable)

    def fail(self, kind: FailureKind, exception_type: str, message: str) -> None:
        """Mark the task failed for a reason of its own (no traceback: nothing raised here)."""
        self.success = False
        self.failure = FailureInfo(kind=kind, exception_type=exception_type, message=message)

    @property
    def inputs(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Colmena's ``inputs``: the positional and keyword inputs, as a pair."""
        return self.args, self.kwargs

    @property
    def complete(self) -> bool | None:
        """Colmena's ``complete``: whether this is the task's final result (None: not ended).

        False on an intermediate result (`sequence` set).
        """
        if self.sequence is not None:
            return False
        return None if self.success is None else True

    @property
    def failure_info(self) -> FailureInformation | None:
        """Colmena's ``failure_info`` (the exception as Type('message')), from `failure`."""
        failure = self.failure
        if failure is None:
            return None
        text = f"{failure.exception_type}({failure.message!r})"
        return FailureInformation(exception=text, traceback=failure.traceback)

    @property
    def worker_info(self) -> WorkerInformation | None:
        """Colmena's ``worker_info``, from `worker` (with its pid and accelerator)."""
        worker = self.worker
        if worker is None:
            return None
        extra = {"pid": worker.pid, "accelerator": worker.accelerator}
        return WorkerInformation(hostname=worker.hostname, **extra)

    @property
    def timestamp(self) -> ColmenaTimestamps:
        """Colmena's ``timestamp``, from `timestamps` (NaN for a hop not taken)."""
        stamps = self.timestamps

        return ColmenaTimestamps(
            created=stamps.created,
            input_received=stamps.created,  # the task server takes it in send_inputs
            compute_started=_nan_if_none(stamps.compute_started),
            compute_ended=_nan_if_none(stamps.compute_ended),
            result_sent=_nan_if_none(stamps.compute_ended),
            result_received=_nan_if_none(stamps.delivered),
            start_task_submission=_nan_if_none(stamps.dispatched),
            task_received=_nan_if_none(stamps.received),
        )

    @property
    def time(self) -> TimeSpans:
        """Colmena's ``time``: the run time and the data plane's timings (NaN if none)."""
        data = self.data

        return TimeSpans(
            running=_nan_if_none(self.run_time),
            serialize_inputs=_nan_if_none(data.proxy_inputs_s),
            deserialize_inputs=_nan_if_none(data.resolve_inputs_s),
            serialize_results=_nan_if_none(data.proxy_result_s),
            deserialize_results=_nan_if_none(data.resolve_result_s),
        )

    def json(self, **kwargs: Any) -> str:
        """The record as Colmena writes it: ``inputs`` (not args/kwargs), and Colmena's names.

        ``exclude`` (a set, or a dict of names) works as in Colmena, ``inputs`` included:
        ``result.json(exclude={'inputs', 'value'})``. Numpy arrays become lists.
        """
        exclude = kwargs.pop("exclude", None) or set()
        names = set(exclude) if isinstance(exclude, (set, frozenset, list, tuple)) else set()
        if isinstance(exclude, dict):
            names = {name for name, drop in exclude.items() if drop is True}
        data = json.loads(self.model_dump_json(exclude={"args", "kwargs"}, **kwargs))
        inputs = self.model_dump(mode="json", include={"args", "kwargs"})
        colmena = {
            "inputs": [inputs["args"], inputs["kwargs"]],
            "complete": self.complete,
            "failure_info": None if self.failure_info is None else self.failure_info.model_dump(),
            "worker_info": None if self.worker_info is None else self.worker_info.model_dump(),
            "timestamp": self.timestamp.model_dump(),
            "time": self.time.model_dump(),
        }
        data.update(colmena)
        return json.dumps({key: value for key, value in data.items() if key not in names})

    @property
    def queue_wait(self) -> float | None:
        """Seconds the task waited on the thinker side for a free slot."""
        return _span(self.timestamps.created, self.timestamps.dispatched)

    @property
    def remote_wait(self) -> float | None:
        """Seconds from dispatch until a worker started the method."""
        return _span(self.timestamps.dispatched, self.timestamps.compute_started)

    @property
    def run_time(self) -> float | None:
        """Seconds the method itself ran."""
        return _span(self.timestamps.compute_started, self.timestamps.compute_ended)

    @property
    def total_time(self) -> float | None:
        """Seconds from send_inputs until the thinker received the result."""
        end = self.timestamps.delivered or self.timestamps.received
        return _span(self.timestamps.created, end)

    @property
    def overhead(self) -> float | None:
        """Seconds of the round trip that were not the method running (queue wait included)."""
        total = _span(self.timestamps.created, self.timestamps.received)
        run = self.run_time
        if total is None:
            return None
        return total - (run or 0.0)
