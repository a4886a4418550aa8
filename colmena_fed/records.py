"""Task records as the run journal stores them: compact tuples, rebuilt into `Result`s.

A `Result` pickled as it is carries its class paths and field names, and each of its nested
records pickles through Python-level hooks: about 1 KB and 11 us per task, twice per task.
Here a record is the tuple of its field values in `FIELDS` order, its nested records tuples
of theirs (the journal keeps the field names beside, so a later version reads an older one):
a third of the size, several times faster both ways.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from operator import attrgetter, itemgetter
from typing import Any

from colmena_fed.models import (
    ANYWHERE,
    Attempt,
    DataRecord,
    FailureInfo,
    ResourceRequest,
    Result,
    Timestamps,
    WarmRecord,
    WarmUse,
    WorkerInfo,
)
from colmena_fed.shell import ShellOutput

#: The fields of a record, in the order a packed record holds them.
FIELDS: tuple[str, ...] = tuple(Result.model_fields)

_STAMPS = attrgetter(*(f.name for f in dataclasses.fields(Timestamps)))
_DATA = attrgetter(*(f.name for f in dataclasses.fields(DataRecord)))
_ATTEMPT = attrgetter(*(f.name for f in dataclasses.fields(Attempt)))
_WORKER = attrgetter(*(f.name for f in dataclasses.fields(WorkerInfo)))
_FAILURE = attrgetter(*FailureInfo.model_fields)
_SHELL = attrgetter(*(f.name for f in dataclasses.fields(ShellOutput)))
_WARM_USE = attrgetter(*(f.name for f in dataclasses.fields(WarmUse)))
_VALUES = itemgetter(*FIELDS)


def pack(task: Result, *, inputs: bool = True) -> tuple[Any, ...]:
    """The task's record as a tuple of plain values (without its inputs, unless ``inputs``)."""
    fields = dict(task.__dict__)
    if not inputs:
        fields["args"] = fields["kwargs"] = None
    fields["timestamps"] = _STAMPS(task.timestamps)
    fields["data"] = _DATA(task.data)
    fields["attempts"] = [_ATTEMPT(attempt) for attempt in task.attempts]
    if task.worker is not None:
        fields["worker"] = _WORKER(task.worker)
    if task.failure is not None:
        fields["failure"] = _FAILURE(task.failure)
    if task.shell is not None:
        fields["shell"] = _SHELL(task.shell)
    if task.warm is not None:
        fields["warm"] = ([_WARM_USE(use) for use in task.warm.uses], task.warm.held)
    fields["resources"] = None if task.resources is ANYWHERE else task.resources.model_dump()
    values: tuple[Any, ...] = _VALUES(fields)
    return values


def unpack(values: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """The fields of a record `pack` made, under ``names`` (the journal's `FIELDS`)."""
    fields = dict(zip(names, values, strict=True))
    fields["timestamps"] = Timestamps(*fields["timestamps"])
    fields["data"] = DataRecord(*fields["data"])
    fields["attempts"] = [Attempt(*attempt) for attempt in fields["attempts"]]
    if fields["worker"] is not None:
        fields["worker"] = WorkerInfo(*fields["worker"])
    if fields["failure"] is not None:
        failure = zip(FailureInfo.model_fields, fields["failure"], strict=True)
        fields["failure"] = FailureInfo(**dict(failure))
    if fields.get("shell") is not None:
        fields["shell"] = ShellOutput(*fields["shell"])
    if fields.get("warm") is not None:
        uses, held = fields["warm"]
        fields["warm"] = WarmRecord([WarmUse(*use) for use in uses], list(held))
    resources = fields["resources"]
    fields["resources"] = ANYWHERE if resources is None else ResourceRequest(**resources)
    return fields


def rebuild(fields: dict[str, Any]) -> Result:
    """A `Result` of ``fields`` as `unpack` returns them, without validating them again."""
    if tuple(fields) != FIELDS:  # another version's fields: the defaults fill the gaps
        known = {name: value for name, value in fields.items() if name in Result.model_fields}
        return Result.model_construct(**known)
    task = Result.__new__(Result)
    task.__setstate__(
        {
            "__dict__": fields,
            "__pydantic_fields_set__": set(FIELDS),
            "__pydantic_extra__": None,
            "__pydantic_private__": None,
        }
    )
    return task
