"""The run journal: what the dispatcher decided about each task, written before it shows.

A run directory holds one journal, ``journal.log``: an append-only log written only by the
run's dispatcher. Every transition of a task is one event (submitted, dispatched, acknowledged,
requeued, resent, intermediate, ended; and the run's own: status, channel, resumed, closed),
and the events a batch produced are appended as one checksummed frame, with one ``write``
call, before its effects run: a task is in the journal before any site sees it, its outcome
(and each intermediate result) before the thinker does. A burst of tasks pays for a few
writes, not one per task; an SQLite commit of the same rows cost eight times as much
(bench/journal.py). Deliveries go to an append-only file beside it, ``journal.deliveries``
(one line per result the thinker took, in order; an intermediate one as ``id/sequence``),
written by the thinker's thread before ``get_result`` returns, with no lock shared with the
dispatcher.

The log is the header (`MAGIC`, then `FORMAT` as 4 bytes), a frame of the run's facts as JSON
(`meta`), then one frame per batch of events (a pickled list of `Row`); a frame is its length
and CRC-32 (4 bytes each, big-endian), then its payload. `read` takes one apart.

Durability: a write survives the thinker process dying (killed, crashed, the laptop's battery
gone with the OS still writing back), not a crash of the operating system itself (no fsync per
batch; the same as SQLite's ``synchronous=NORMAL``). A thinker killed during a write may leave
its last frame cut short; Linux stops such a write only between pages, so the cut falls on a
page boundary, and nothing that frame recorded had happened yet: `read` drops it, and a resumed
run cuts it off before writing on. A frame cut short anywhere else, or whose checksum is wrong,
is a damaged journal, refused. Resuming reads the journal back (`colmena_fed.recovery`). Only one
process at a time may hold a run directory: a lock file (``journal.lock``, an advisory
``flock`` released by the kernel when its process dies) says which.

Records travel pickled (dill for what pickle cannot take); a task whose inputs cannot be pickled
at all is refused (``rejected``) before it is sent, as a site would have refused it.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import pickle
import struct
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dill

from colmena_fed.errors import JournalError
from colmena_fed.files import private_dir
from colmena_fed.models import Result
from colmena_fed.records import FIELDS, pack

#: The journal's format; a journal of another format is refused, never rewritten.
FORMAT = 1
#: The first bytes of every colmena-fed journal (then `FORMAT`, 4 bytes big-endian).
MAGIC = b"colmena-fed journal\n"
FILE_NAME = "journal.log"
DELIVERIES_NAME = "journal.deliveries"
LOCK_NAME = "journal.lock"

_HEADER = struct.Struct(">I")
_FRAME = struct.Struct(">II")  # payload length, CRC-32 of the payload

#: One event, as written: task id, kind, when, site, attempt, detail, record (pickled).
Row = tuple[str, str, float, str | None, int | None, str | None, bytes | None]

#: What to do with a journal that cannot be used, in every message saying so.
ELSE = "start a new run in another run directory (the file is left as it is)"


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


class Journal:
    """The open journal of a run, written by its dispatcher (one thread at a time)."""

    def __init__(self, path: Path, lock: int) -> None:
        """Append to the checked journal at ``path``; ``lock`` is the held lock file."""
        self.path = path
        self._lock = lock
        self._log: int | None = os.open(path, os.O_WRONLY | os.O_APPEND)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._deliveries: int | None = os.open(path.with_name(DELIVERIES_NAME), flags, 0o600)
        self._deliveries_lock = threading.Lock()  # a delivery never writes to a closed file
        #: Rows appended since the last commit.
        self.rows: list[Row] = []

    @classmethod
    def create(
        cls,
        run_dir: Path,
        identity: RunIdentity,
        task_group: str,
        facts: Mapping[str, Any] | None = None,
    ) -> Journal:
        """Start the journal of a new run in ``run_dir``; refuses a directory that has one.

        ``facts`` (JSON-able) join the run's facts: what reports need to know of its sites.
        """
        lock = hold(private_dir(run_dir))
        path = run_dir / FILE_NAME
        try:
            if path.exists():
                raise JournalError(
                    f"{path}: this run directory already holds a run; resume it "
                    "(--resume, or TaskServer(..., resume=True)) or choose another run directory"
                )
            meta = {
                "format": FORMAT,
                "created": time.time(),
                "task_group": task_group,
                "sites": dict(identity.sites),
                "methods": list(identity.methods),
                "fields": list(FIELDS),
                **(facts or {}),
            }
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            try:
                _write(fd, MAGIC + _HEADER.pack(FORMAT) + _frame(json.dumps(meta).encode()))
            finally:
                os.close(fd)
        except BaseException:
            os.close(lock)
            raise
        return cls(path, lock)

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

    def intermediate(self, record: Result, data: bytes, at: float) -> None:
        """An intermediate result went to the thinker: its value as it travelled (``data``)."""
        error = record.failure.message if record.failure is not None else None
        attempt = len(record.attempts)
        detail = str(record.sequence)
        payload = _dumps((record.timestamps.compute_ended, data, error))
        row = (record.task_id, "intermediate", at, record.site, attempt, detail, payload)
        self.rows.append(row)

    def channel(self, name: str, position: str, at: float) -> None:
        """The run's stream on channel ``name`` is read up to ``position``."""
        self.rows.append(("", "channel", at, name, None, position, None))

    def delivered(self, task_id: str, at: float) -> None:
        """The thinker took the task's result: written at once (any thread), not at `commit`.

        An intermediate result is written as its `delivery_key`.
        """
        with self._deliveries_lock:
            if self._deliveries is not None:
                os.write(self._deliveries, f"{task_id} {at!r}\n".encode())

    def status(self, site: str, online: bool, workers: int | None, at: float) -> None:
        """``site`` went online or offline, or its worker count changed."""
        detail = json.dumps({"online": online, "workers": workers})
        self.rows.append(("", "status", at, site, None, detail, None))

    def resumed(self, at: float) -> None:
        """A new thinker process took the run over."""
        self.rows.append(("", "resumed", at, None, None, f"pid {os.getpid()}", None))

    def closed(self, at: float) -> None:
        """The task server stopped: what had not ended ends as ``shutdown``."""
        self.rows.append(("", "closed", at, None, None, None, None))

    def commit(self) -> None:
        """Append the rows added since the last commit, as one frame (one ``write``)."""
        rows, self.rows = self.rows, []
        if self._log is None:
            raise OSError(f"{self.path}: the journal is closed")
        _write(self._log, _frame(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)))

    def close(self) -> None:
        """Commit what is left and release the run directory."""
        try:
            if self.rows:
                self.commit()
        finally:
            if self._log is not None:
                os.close(self._log)
                self._log = None
            with self._deliveries_lock:
                if self._deliveries is not None:
                    os.close(self._deliveries)
                    self._deliveries = None
            os.close(self._lock)


@dataclass
class Contents:
    """A journal, read back."""

    #: The run's facts: format, created, task group, sites, methods, record fields.
    meta: dict[str, Any]
    #: Every event, in the order the dispatcher wrote them.
    events: list[Row]
    #: Where the last whole frame ends.
    end: int
    #: Bytes after it: a frame the thinker's death cut short (dropped), or 0.
    torn: int


def read(path: Path, *, live: bool = False) -> Contents:
    """Read the journal at ``path``; `JournalError` naming the file if it cannot be used.

    With ``live``, the journal may be one a running thinker is writing: a last frame cut
    short anywhere is one not written to the end yet, not a damaged journal.
    """
    frames, meta = _opened(path, live)
    events: list[Row] = []
    try:
        for payload in frames:
            events += pickle.loads(payload)
    except (ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise _corrupt(path, exc) from exc
    return Contents(meta, events, frames.end, len(frames.data) - frames.end)


def read_meta(path: Path) -> dict[str, Any]:
    """The run's facts (the journal's first frame) alone: a check that reads no event."""
    return _opened(path, live=False)[1]


def _opened(path: Path, live: bool) -> tuple[_Frames, dict[str, Any]]:
    """The journal's frames after its run facts, and the facts; `JournalError` if unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JournalError(f"{path}: cannot be read ({exc.strerror}); {ELSE}") from exc
    start = len(MAGIC) + _HEADER.size
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise JournalError(f"{path}: the journal is truncated (it ends in its header); {ELSE}")
        raise JournalError(f"{path}: not a colmena-fed journal; {ELSE}")
    if len(data) < start:
        raise JournalError(f"{path}: the journal is truncated (it ends in its header); {ELSE}")
    (version,) = _HEADER.unpack_from(data, len(MAGIC))
    if version != FORMAT:
        raise JournalError(
            f"{path}: a journal of format {version}; this colmena-fed reads format {FORMAT} "
            f"only: resume it with the colmena-fed version that wrote it, or {ELSE}"
        )
    frames = _Frames(path, data, start, live)
    try:
        meta = json.loads(next(frames))
    except StopIteration:
        raise JournalError(f"{path}: the journal is truncated (no run facts); {ELSE}") from None
    except ValueError as exc:
        raise _corrupt(path, exc) from exc
    return frames, meta


def _corrupt(path: Path, exc: Exception) -> JournalError:
    return JournalError(
        f"{path}: the journal is corrupt (a frame that is not colmena-fed's: {exc}); "
        f"nothing was changed; {ELSE}"
    )


class _Frames:
    """The payloads of the frames of ``data`` from ``offset``; `end` is past the last whole one."""

    def __init__(self, path: Path, data: bytes, offset: int, live: bool) -> None:
        self.path, self.data, self.end, self.live = path, data, offset, live

    def __iter__(self) -> _Frames:
        return self

    def __next__(self) -> bytes:
        data, offset = self.data, self.end
        if offset == len(data):
            raise StopIteration
        if offset + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, offset)
            payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
            if len(payload) == length:
                if zlib.crc32(payload) != crc:
                    raise JournalError(
                        f"{self.path}: the journal is corrupt (the frame at byte {offset} "
                        f"fails its checksum); nothing was changed; {ELSE}"
                    )
                self.end = offset + _FRAME.size + length
                return payload
        if self.live or len(data) % mmap.PAGESIZE == 0:  # being written, or cut by a death
            raise StopIteration
        raise JournalError(
            f"{self.path}: the journal is truncated (its last {len(data) - offset} bytes are "
            f"part of a frame); nothing was changed; {ELSE}"
        )


def delivery_key(record: Result) -> str:
    """How the deliveries file names a result: its task id (``id/sequence`` if intermediate)."""
    return record.task_id if record.sequence is None else f"{record.task_id}/{record.sequence}"


def read_deliveries(run_dir: Path) -> list[tuple[str, float]]:
    """The results the thinker took, in order: (task id, when), from the deliveries file."""
    try:
        text = (run_dir / DELIVERIES_NAME).read_text()
    except FileNotFoundError:
        return []
    taken = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2:  # a line cut short by the thinker's death is no delivery
            taken.append((words[0], float(words[1])))
    return taken


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _write(fd: int, data: bytes) -> None:
    """Write all of ``data`` in one call; a short write (a full disk) is an error."""
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"the journal took {written} of {len(data)} bytes (is the disk full?)")


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
