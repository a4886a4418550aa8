"""The run journal: what the dispatcher decided about each task, written before it shows.

A run directory holds one journal, ``journal.sqlite``: an SQLite database in WAL mode, written
only by the run's dispatcher. Every transition of a task appends one row to ``events``
(submitted, dispatched, acknowledged, requeued, resent, ended), and the rows an event produced
are committed before its effects run: a task is in the journal before any site sees it, its
outcome before the thinker does. Commits are grouped per batch of events the dispatcher
applies, so a burst of tasks pays for a few commits, not one per task. Deliveries go to an
append-only file beside it, ``journal.deliveries`` (one line per result the thinker took, in
order), written by the thinker's thread before ``get_result`` returns: one ``write`` call, with
no lock shared with the dispatcher and no commit to wait for (measured in bench/journal.py).

Durability: a commit survives the thinker process dying (killed, crashed, the laptop's battery
gone with the OS still writing back), not a crash of the operating system itself
(``synchronous=NORMAL``: no fsync per commit). Resuming reads the journal back
(`colmena_fed.recovery`). Only one process at a time may hold a run directory: a lock file
(``journal.lock``, an advisory ``flock`` released by the kernel when its process dies) says
which.

Records travel pickled (dill for what pickle cannot take); a task whose inputs cannot be pickled
at all is refused (``rejected``) before it is sent, as a site would have refused it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dill

from colmena_fed.errors import JournalError
from colmena_fed.models import Result
from colmena_fed.records import FIELDS, pack

#: The journal's format; a journal of another format is refused, never rewritten.
FORMAT = 1
#: SQLite's application id of colmena-fed journals ("CFJN"): tells ours from other databases.
APPLICATION_ID = 0x43464A4E
FILE_NAME = "journal.sqlite"
DELIVERIES_NAME = "journal.deliveries"
LOCK_NAME = "journal.lock"

_SCHEMA = f"""
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {FORMAT};
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    site TEXT,
    attempt INTEGER,
    detail TEXT,
    record BLOB
);
"""
_INSERT = (
    "INSERT INTO events (task_id, kind, at, site, attempt, detail, record) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

#: One row of ``events``, as inserted.
Row = tuple[str, str, float, str | None, int | None, str | None, bytes | None]


class UnjournaledInputs(ValueError):
    """A task's inputs cannot be written down (neither pickle nor dill takes them)."""


@dataclass(frozen=True)
class RunIdentity:
    """What a resumed run must share with the run it continues: its sites and methods."""

    sites: Mapping[str, str]
    methods: Sequence[str]

    def differences(self, other: RunIdentity) -> list[str]:
        """How ``other`` (the journal's) differs from this run, in words."""
        found = []
        for name in sorted({*self.sites, *other.sites}):
            mine, theirs = self.sites.get(name), other.sites.get(name)
            if mine != theirs:
                found.append(
                    f"site {name!r}: journal has {theirs or 'no such site'}, "
                    f"this run has {mine or 'no such site'}"
                )
        missing = sorted(set(other.methods) - set(self.methods))
        if missing:
            found.append(f"methods the journal names that this run lacks: {', '.join(missing)}")
        return found


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory only its owner can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


class Journal:
    """The open journal of a run, written by its dispatcher (one thread at a time)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock: int) -> None:
        """Wrap an open, checked ``connection`` to ``path``; ``lock`` is the held lock file."""
        self.path = path
        self._db = connection
        self._lock = lock
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._deliveries: int | None = os.open(path.with_name(DELIVERIES_NAME), flags, 0o600)
        self._deliveries_lock = threading.Lock()  # a delivery never writes to a closed file
        #: Rows appended since the last commit.
        self.rows: list[Row] = []

    @classmethod
    def create(cls, run_dir: Path, identity: RunIdentity, task_group: str) -> Journal:
        """Start the journal of a new run in ``run_dir``; refuses a directory that has one."""
        lock = hold(private_dir(run_dir))
        path = run_dir / FILE_NAME
        try:
            if path.exists():
                raise JournalError(
                    f"{path}: this run directory already holds a run; resume it "
                    "(--resume, or TaskServer(..., resume=True)) or choose another run directory"
                )
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            connection = _connect(path)
            connection.executescript(_SCHEMA)
            meta = {
                "format": FORMAT,
                "created": time.time(),
                "task_group": task_group,
                "sites": dict(identity.sites),
                "methods": list(identity.methods),
                "fields": list(FIELDS),
            }
            connection.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
            connection.commit()
        except BaseException:
            os.close(lock)
            raise
        return cls(path, connection, lock)

    # Rows: appended by the dispatcher, committed by `commit`.

    def submitted(self, task: Result, input_keys: Sequence[tuple[str, Any]] = ()) -> None:
        """``task`` was requested: all it takes to send it again, with its stores' keys."""
        try:
            record = _dumps((pack(task), list(input_keys)))
        except Exception as exc:
            raise UnjournaledInputs(
                f"cannot serialize the inputs of task {task.task_id} ({task.method}) to write "
                f"them in the run journal (a resumed run sends tasks again from it): {exc}"
            ) from exc
        created = task.timestamps.created
        self.rows.append((task.task_id, "submitted", created, None, None, None, record))

    def dispatched(self, task: Result, site: str, attempt: int, at: float) -> None:
        """Attempt ``attempt`` of ``task`` was sent to ``site``."""
        self.rows.append((task.task_id, "dispatched", at, site, attempt, None, None))

    def acknowledged(self, task_id: str, site: str, remote_id: str, at: float) -> None:
        """Globus Compute took the task at ``site`` under its own id ``remote_id``."""
        self.rows.append((task_id, "acknowledged", at, site, None, remote_id, None))

    def requeued(self, task: Result, reason: str, at: float) -> None:
        """The task's last attempt failed for ``reason`` and it waits to be placed again."""
        self.rows.append((task.task_id, "requeued", at, None, len(task.attempts), reason, None))

    def resent(self, task: Result, reason: str, at: float) -> None:
        """A resumed run sends the task again (not counted as a retry), for ``reason``."""
        self.rows.append((task.task_id, "resent", at, None, len(task.attempts), reason, None))

    def ended(self, task: Result, at: float) -> None:
        """The task has its final outcome (its record, but for the inputs)."""
        fields = pack(task, inputs=False)
        try:
            record = _dumps(fields)
            detail = None
        except Exception as exc:  # a value nothing can pickle: the outcome without it
            value = FIELDS.index("value")
            fields = (*fields[:value], None, *fields[value + 1 :])
            record, detail = _dumps(fields), f"value not written down: {exc}"
        self.rows.append((task.task_id, "ended", at, task.site, len(task.attempts), detail, record))

    def delivered(self, task_id: str, at: float) -> None:
        """The thinker took the task's result: written at once (any thread), not at `commit`."""
        with self._deliveries_lock:
            if self._deliveries is not None:
                os.write(self._deliveries, f"{task_id} {at!r}\n".encode())

    def resumed(self, at: float) -> None:
        """A new thinker process took the run over."""
        self.rows.append(("", "resumed", at, None, None, f"pid {os.getpid()}", None))

    def commit(self) -> None:
        """Write the rows appended since the last commit, as one transaction."""
        rows, self.rows = self.rows, []
        self._db.executemany(_INSERT, rows)
        self._db.commit()

    def close(self) -> None:
        """Commit what is left and release the run directory."""
        try:
            if self.rows:
                self.commit()
            self._db.close()
        finally:
            with self._deliveries_lock:
                if self._deliveries is not None:
                    os.close(self._deliveries)
                    self._deliveries = None
            os.close(self._lock)


def hold(run_dir: Path) -> int:
    """Take the run directory's lock for this process; refuse one another live process holds."""
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise JournalError(
            f"{run_dir}: the run directory is in use by process {holder} (its lock "
            f"{path} is held); stop that process first, or choose another run directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("PRAGMA query_only = ON")
        return connection
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return bytes(dill.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def loads(record: bytes) -> Any:
    """A record as `Journal` wrote it (with pickle, or dill for what pickle could not take)."""
    try:
        return pickle.loads(record)
    except Exception:
        return dill.loads(record)
