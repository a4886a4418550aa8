"""Reading a run's journal back: where each task stood when its thinker died.

`reopen` checks the journal's run facts before anything else happens (`take_over`: it is left
exactly as it was if it cannot be used: another process holds the run directory, it is not a
colmena-fed journal, it is of another format, or it names other sites or methods than this
run), then reads its events and sorts every task the run submitted into one of four states
(`recover`, into a `Recovery`; a truncated or corrupt frame is refused there, the journal
still left as it was): delivered to the thinker; ended but not delivered; in flight at a site;
pending on the thinker side. A task server does the second step while its sites start.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmena_fed.errors import JournalError
from colmena_fed.journal import (
    FILE_NAME,
    Journal,
    RunIdentity,
    hold,
    loads,
    read,
    read_deliveries,
    read_meta,
)
from colmena_fed.models import Attempt, Result
from colmena_fed.records import rebuild, unpack

logger = logging.getLogger(__name__)

#: A store's name and an object's key there.
StoreKey = tuple[str, Any]


@dataclass
class InFlight:
    """A task that was at a site when the thinker died."""

    task: Result
    site: str
    #: Globus Compute's id of the task, if the journal had it.
    remote_id: str | None


@dataclass
class Recovery:
    """Every task of a run, by where it stood when the journal ends."""

    task_group: str
    #: Results the thinker took, in the order it took them (replayed, marked ``replayed``).
    delivered: list[Result] = field(default_factory=list)
    #: Results that came back and were never taken (delivered once, as new).
    undelivered: list[Result] = field(default_factory=list)
    #: Tasks sent to a site whose outcome never came back.
    in_flight: list[InFlight] = field(default_factory=list)
    #: Tasks waiting for a slot, in the order they were submitted.
    pending: list[Result] = field(default_factory=list)
    #: Store objects of each unfinished task's inputs.
    live_inputs: dict[str, list[StoreKey]] = field(default_factory=dict)
    #: Store objects of finished tasks' inputs (to evict).
    ended_inputs: list[StoreKey] = field(default_factory=list)
    #: Every Globus Compute task id the run's journal knows.
    remote_ids: set[str] = field(default_factory=set)
    #: When the journal recorded its last event (the thinker died after that).
    last_event: float = 0.0
    #: Intermediate results that went to the thinker's topics and were never taken (taken
    #: once, as new, before their task's final result).
    untaken_intermediates: list[Result] = field(default_factory=list)
    #: Per unfinished streaming task: intermediate results journaled, and of which attempt.
    streamed: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Per channel, the stream position the journal read up to.
    channels: dict[str, str] = field(default_factory=dict)

    @property
    def outstanding(self) -> list[Result]:
        """Tasks whose results the thinker will receive as new: every one not delivered."""
        return [*self.undelivered, *(t.task for t in self.in_flight), *self.pending]


def reopen(run_dir: Path, identity: RunIdentity) -> tuple[Journal, Recovery]:
    """Take over the run in ``run_dir`` (same sites and methods); its journal and recovery."""
    journal, _ = take_over(run_dir, identity)
    try:
        return journal, recover(journal)
    except BaseException:
        journal.close()
        raise


def take_over(run_dir: Path, identity: RunIdentity) -> tuple[Journal, dict[str, Any]]:
    """Hold ``run_dir`` and check its journal's run facts (fast); `recover` reads the rest.

    Returns the journal and its run facts.
    """
    path = run_dir / FILE_NAME
    if not path.is_file():
        raise JournalError(
            f"{path}: no journal to resume in {run_dir}; start a new run (without --resume) "
            "or name the run directory of the run to resume"
        )
    lock = hold(run_dir)
    try:
        meta = read_meta(path)
        theirs = RunIdentity(meta.get("sites", {}), meta.get("methods", []))
        differences = identity.differences(theirs)
        if differences:
            raise JournalError(
                f"{path}: this run is not the one the journal records "
                f"({'; '.join(differences)}); resume with the sites YAML and campaign the run "
                "started with, or start a new run in another run directory"
            )
        journal = Journal(path, lock)
    except BaseException:
        os.close(lock)
        raise
    return journal, meta


def recover(journal: Journal) -> Recovery:
    """Read and sort the tasks of a journal `take_over` checked, before anything is written to it.

    Raises `JournalError` (the journal left as it was) if a frame is corrupt or truncated.
    """
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of new records, none garbage: collecting them is waste
    try:
        contents = read(journal.path)
        recovery = _sorted(contents.events, read_deliveries(journal.path.parent), contents.meta)
    finally:
        if collecting:
            gc.enable()
    if contents.torn:  # the dead thinker's last write, cut short: nothing it held happened
        logger.warning(
            "%s: dropped its last %d bytes, a write cut short when the thinker died",
            journal.path,
            contents.torn,
        )
        os.truncate(journal.path, contents.end)
    return recovery


@dataclass
class _Task:
    fields: dict[str, Any]
    keys: list[StoreKey]
    attempts: list[Attempt] = field(default_factory=list)
    retries: int = 0
    remote_id: str | None = None
    ended: dict[str, Any] | None = None
    delivered: float | None = None
    #: Intermediate results journaled: (sequence, attempt, when, payload), in order.
    intermediates: list[tuple[int, int, float, bytes]] = field(default_factory=list)


def _sorted(
    events: Iterable[tuple[Any, ...]], deliveries: list[tuple[str, float]], meta: dict[str, Any]
) -> Recovery:
    recovery = Recovery(meta["task_group"])
    names = meta["fields"]
    tasks: dict[str, _Task] = {}
    delivered: list[tuple[_Task, int | None, float]] = []  # an intermediate's sequence
    ended: list[_Task] = []
    last = 0.0
    for task_id, kind, at, site, attempt, detail, record in events:
        last = max(last, at)
        if not task_id:  # the run's own events: resumed, status, channel, closed
            if kind == "channel":
                recovery.channels[site] = detail
            continue
        if kind == "submitted":
            values, keys = loads(record)
            tasks[task_id] = _Task(unpack(values, names), keys)
            continue
        state = tasks[task_id]
        if kind == "dispatched":
            state.attempts.append(Attempt(site=site, dispatched=at))
            state.remote_id = None
        elif kind == "acknowledged":
            state.remote_id = detail
            recovery.remote_ids.add(detail)
        elif kind in ("requeued", "resent"):
            state.attempts[-1].ended, state.attempts[-1].reason = at, detail
            state.retries += kind == "requeued"
        elif kind == "intermediate":
            state.intermediates.append((int(detail), attempt, at, record))
        elif kind == "ended" and state.ended is None:
            state.ended = unpack(loads(record), names)
            ended.append(state)
    taken_intermediates: set[str] = set()
    for key, at in deliveries:
        task_id, _, number = key.partition("/")
        taken = tasks.get(task_id)
        if number:
            if taken is not None and key not in taken_intermediates:
                taken_intermediates.add(key)
                delivered.append((taken, int(number), at))
                last = max(last, at)
        elif taken is not None and taken.ended is not None and taken.delivered is None:
            taken.delivered = at
            delivered.append((taken, None, at))
            last = max(last, at)
    recovery.last_event = last
    for state, sequence, at in delivered:
        if sequence is None:
            result = _finished(state)
        else:
            result = _intermediate(state, state.intermediates[sequence])
        result.timestamps.delivered = at
        result.replayed = True
        recovery.delivered.append(result)
    for task_id, state in tasks.items():
        for entry in state.intermediates:
            if f"{task_id}/{entry[0]}" not in taken_intermediates:
                recovery.untaken_intermediates.append(_intermediate(state, entry))
        if state.intermediates and state.ended is None:
            recovery.streamed[task_id] = (len(state.intermediates), state.intermediates[-1][1])
    for state in ended:
        recovery.ended_inputs += state.keys
        if state.delivered is None:
            recovery.undelivered.append(_finished(state))
    for task_id, state in tasks.items():
        if state.ended is not None:
            continue
        task = rebuild(state.fields)
        task.attempts, task.retries = state.attempts, state.retries
        recovery.live_inputs[task_id] = state.keys
        last_attempt = state.attempts[-1] if state.attempts else None
        if last_attempt is not None and last_attempt.ended is None:
            task.site = last_attempt.site
            task.timestamps.dispatched = last_attempt.dispatched
            recovery.in_flight.append(InFlight(task, last_attempt.site, state.remote_id))
        else:
            task.site = None
            recovery.pending.append(task)
    return recovery


def _intermediate(state: _Task, entry: tuple[int, int, float, bytes]) -> Result:
    """An intermediate result, as the journal holds it, rebuilt."""
    sequence, attempt, at, payload = entry
    sent, data, error = loads(payload)
    fields = dict(state.fields)  # the task's own record keeps its fields
    fields["timestamps"] = dataclasses.replace(fields["timestamps"])
    result = rebuild(fields)
    if not result.keep_inputs:
        result.args, result.kwargs = (), {}
    result.attempts = state.attempts[:attempt]
    result.site = result.attempts[-1].site if result.attempts else None
    result.sequence, result.success = sequence, error is None
    result.timestamps.compute_ended, result.timestamps.received = sent, at
    if error is None:
        result.value = loads(data)
    else:
        result.fail("system", "UnreadableIntermediate", error)
    return result


def _finished(state: _Task) -> Result:
    assert state.ended is not None
    fields = dict(state.ended)
    keep = fields.get("keep_inputs", True)
    fields["args"] = state.fields["args"] if keep else ()
    fields["kwargs"] = state.fields["kwargs"] if keep else {}
    return rebuild(fields)
