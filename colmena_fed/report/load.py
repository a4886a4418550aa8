"""A run directory read back for reporting: one row per task, each site's status over time.

Reads the journal as another process would (`colmena_fed.journal.read` with ``live``), so it
works on a finished run, on one whose thinker died, and on one still running. Records are read
as the packed tuples the journal holds, by field index, without rebuilding `Result` objects:
a report over 100,000 tasks reads them in about a second.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmena_fed.errors import JournalError
from colmena_fed.journal import FILE_NAME, loads, read, read_deliveries
from colmena_fed.models import Attempt, DataRecord, FailureInfo, Timestamps, WorkerInfo


class ReportError(JournalError):
    """A run directory that cannot be reported on (named, with what to do)."""


class Unimportable:
    """Stands for an object of a class this process cannot import (a campaign's own type).

    A report reads records for their timestamps and sites, not their inputs: an input whose
    class lives in the campaign's script must not stop it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Take whatever the pickled object was built from, and keep none of it."""

    def __setstate__(self, state: Any) -> None:
        """Drop the pickled state."""


class _Lenient(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return Unimportable


def load_record(record: bytes) -> Any:
    """A journal record, its objects of unimportable classes as `Unimportable`."""
    try:
        return loads(record)
    except Exception:
        return _Lenient(io.BytesIO(record)).load()


#: What a task's row says of where it stands.
DONE, FAILED, RUNNING, PENDING = "done", "failed", "in flight", "pending"


@dataclass(slots=True)
class TaskRow:
    """One task of the run, as far as the journal knows it."""

    task_id: str
    method: str
    topic: str
    slot: str
    created: float
    state: str = PENDING
    #: The failure kind of a failed task (user, system, rejected, expired, ...).
    failure: str | None = None
    #: Where it ran last (or runs now).
    site: str | None = None
    #: When it was first sent to a site, and when its last attempt was.
    first_dispatched: float | None = None
    dispatched: float | None = None
    compute_started: float | None = None
    compute_ended: float | None = None
    received: float | None = None
    delivered: float | None = None
    ended: float | None = None
    attempts: int = 0
    #: Each attempt: site, dispatched, ended (None while it runs).
    tries: list[tuple[str, float, float | None]] = field(default_factory=list)
    retries: int = 0
    failovers: int = 0
    #: Host and process of the worker that ran it, if one did.
    worker: tuple[str, int] | None = None
    stores: tuple[str, ...] = ()
    input_bytes: int = 0
    result_bytes: int = 0

    @property
    def run_time(self) -> float | None:
        """Seconds the method ran."""
        if self.compute_started is None or self.compute_ended is None:
            return None
        return self.compute_ended - self.compute_started

    @property
    def thinker_wait(self) -> float | None:
        """Seconds from ``send_inputs`` to the first dispatch (waiting for a slot)."""
        return None if self.first_dispatched is None else self.first_dispatched - self.created

    @property
    def remote_wait(self) -> float | None:
        """Seconds from the last dispatch to a worker starting the method."""
        if self.dispatched is None or self.compute_started is None:
            return None
        return self.compute_started - self.dispatched

    @property
    def overhead(self) -> float | None:
        """Seconds from dispatch to the outcome received that were not the method running."""
        if self.dispatched is None or self.received is None:
            return None
        return self.received - self.dispatched - (self.run_time or 0.0)


@dataclass
class SiteHistory:
    """A site: its slots, and its status each time it changed."""

    name: str
    kind: str
    capacity: dict[str, int]
    result_store: str | None
    #: (when, online, workers), in time order.
    changes: list[tuple[float, bool, int | None]] = field(default_factory=list)


@dataclass
class Run:
    """Everything a report needs of one run directory."""

    run_dir: Path
    meta: dict[str, Any]
    tasks: list[TaskRow]
    sites: dict[str, SiteHistory]
    #: First and last time the journal knows of.
    start: float
    end: float
    #: Whether the task server stopped (a ``closed`` event) after its last resume.
    finished: bool
    #: How many times a new thinker took the run over.
    resumes: int

    @functools.cached_property
    def by_site_slot(self) -> dict[tuple[str | None, str], list[TaskRow]]:
        """The tasks of each site and slot kind (site None: never sent anywhere)."""
        groups: dict[tuple[str | None, str], list[TaskRow]] = {}
        for task in self.tasks:
            groups.setdefault((task.site, task.slot), []).append(task)
        return groups


def load_run(run_dir: Path) -> Run:
    """Read ``run_dir``; `ReportError` naming it if it cannot be reported on."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    path = run_dir / FILE_NAME
    if not path.is_file():
        raise ReportError(
            f"{run_dir}: no run journal here ({FILE_NAME}); name the run directory a "
            "`colmena-fed run --run-dir` (or TaskServer(run_dir=...)) wrote"
        )
    contents = read(path, live=True)
    meta = contents.meta
    names = list(meta["fields"])
    reader = _Reader(names)
    tasks: dict[str, TaskRow] = {}
    sites = {
        name: SiteHistory(
            name,
            kind,
            dict(meta.get("capacity", {}).get(name, {})),
            meta.get("result_stores", {}).get(name),
        )
        for name, kind in meta.get("sites", {}).items()
    }
    times: list[float] = []
    finished, resumes = False, 0
    for task_id, kind, at, site, _, detail, record in contents.events:
        times.append(at)
        if not task_id:
            if kind == "status" and site in sites and detail is not None:
                status = json.loads(detail)
                sites[site].changes.append((at, bool(status["online"]), status["workers"]))
            elif kind == "closed":
                finished = True
            elif kind == "resumed":
                finished, resumes = False, resumes + 1
            continue
        if kind == "submitted" and record is not None:
            tasks[task_id] = reader.submitted(load_record(record)[0])
            continue
        row = tasks.get(task_id)
        if row is None:
            continue
        if kind == "dispatched":
            row.attempts += 1
            row.dispatched, row.site, row.state = at, site, RUNNING
            row.tries.append((site or "", at, None))
            if row.first_dispatched is None:
                row.first_dispatched = at
        elif kind in ("requeued", "resent"):
            row.state = PENDING
            if row.tries:
                row.tries[-1] = (*row.tries[-1][:2], at)
            failover = detail is not None and detail.startswith("SiteOffline")
            row.failovers += kind == "requeued" and failover
            row.retries += kind == "requeued" and not failover
        elif kind == "ended" and row.ended is None and record is not None:
            reader.ended(row, load_record(record), at)
    for task_id, at in read_deliveries(run_dir):
        delivered = tasks.get(task_id)
        if delivered is not None and delivered.delivered is None:
            delivered.delivered = at
            times.append(at)
    if not tasks and not any(history.changes for history in sites.values()):
        raise ReportError(f"{run_dir}: the run has no task yet: nothing to report")
    return Run(
        run_dir,
        meta,
        list(tasks.values()),
        sites,
        min(times),
        max(times),
        finished,
        resumes,
    )


class _Reader:
    """Reads packed records (`colmena_fed.records.pack`) by the field names the journal kept."""

    def __init__(self, names: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(names)}
        self.task_id, self.method, self.topic = index["task_id"], index["method"], index["topic"]
        self.slot, self.stores = index["slot"], index["stores"]
        self.stamps, self.success = index["timestamps"], index["success"]
        self.failure, self.site = index["failure"], index["site"]
        self.worker, self.data = index["worker"], index["data"]
        self.attempts = index["attempts"]
        stamps = [f.name for f in dataclasses.fields(Timestamps)]
        self.created = stamps.index("created")
        self.dispatched = stamps.index("dispatched")
        self.started, self.finished = stamps.index("compute_started"), stamps.index("compute_ended")
        self.received = stamps.index("received")
        data = [f.name for f in dataclasses.fields(DataRecord)]
        self.input_bytes, self.result_bytes = data.index("input_bytes"), data.index("result_bytes")
        self.kind = list(FailureInfo.model_fields).index("kind")
        worker = [f.name for f in dataclasses.fields(WorkerInfo)]
        self.host, self.pid = worker.index("hostname"), worker.index("pid")
        attempt = [f.name for f in dataclasses.fields(Attempt)]
        self.attempt_site, self.attempt_sent = attempt.index("site"), attempt.index("dispatched")
        self.attempt_ended = attempt.index("ended")

    def submitted(self, values: Sequence[Any]) -> TaskRow:
        stamps = values[self.stamps]
        return TaskRow(
            values[self.task_id],
            values[self.method],
            values[self.topic],
            values[self.slot] or "",
            stamps[self.created],
            stores=tuple(values[self.stores] or ()),
        )

    def ended(self, row: TaskRow, values: Sequence[Any], at: float) -> None:
        stamps = values[self.stamps]
        row.ended, row.site = at, values[self.site]
        row.state = DONE if values[self.success] else FAILED
        failure = values[self.failure]
        row.failure = None if failure is None else failure[self.kind]
        row.dispatched = stamps[self.dispatched]
        row.compute_started, row.compute_ended = stamps[self.started], stamps[self.finished]
        row.received = stamps[self.received]
        worker = values[self.worker]
        if worker is not None:
            row.worker = (worker[self.host], worker[self.pid])
        data = values[self.data]
        row.input_bytes = data[self.input_bytes] or 0
        row.result_bytes = data[self.result_bytes] or 0
        attempts = values[self.attempts]
        if attempts:
            row.tries = [
                (a[self.attempt_site], a[self.attempt_sent], a[self.attempt_ended])
                for a in attempts
            ]
            if row.site is None:
                row.site = attempts[-1][self.attempt_site]
