"""What the testbed service must remember across its own restarts, in one SQLite file.

Executors cache function ids for their whole life, and an endpoint's results name only their
task: after a restart the service must still know each function's code and each task's group,
or submits fail and results cannot reach the SDK.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (id TEXT PRIMARY KEY, name TEXT, code TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, heartbeat_t REAL, global_state TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, task_group TEXT NOT NULL, endpoint TEXT NOT NULL, function TEXT NOT NULL,
    status TEXT NOT NULL, completion_t REAL, data TEXT, failed INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_by_group ON tasks (task_group);
"""


class TaskRecord(NamedTuple):
    """One task as the service knows it."""

    task_id: str
    task_group: str
    endpoint: str
    status: str
    completion_t: float | None
    data: str | None
    failed: bool


class EndpointRecord(NamedTuple):
    """One registered endpoint and its latest heartbeat."""

    endpoint_id: str
    name: str
    heartbeat_t: float | None
    global_state: dict[str, Any]


class State:
    """The service's records: functions, endpoints, tasks. Safe to use from any thread."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the records in ``path``, readable by this user only.

        The WAL files SQLite makes beside it take the same mode.
        """
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add_function(self, function_id: str, name: str, code: str) -> None:
        """Record a registered function."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO functions VALUES (?, ?, ?)", (function_id, name, code)
            )

    def function_code(self, function_id: str) -> str | None:
        """The packed code buffer of a function, or None if it was never registered."""
        with self._lock:
            row = self._db.execute(
                "SELECT code FROM functions WHERE id = ?", (function_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def add_endpoint(self, endpoint_id: str, name: str) -> None:
        """Record a registered endpoint (again, if it re-registers)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO endpoints (id, name) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET name = excluded.name",
                (endpoint_id, name),
            )

    def endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        """A registered endpoint, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, heartbeat_t, global_state FROM endpoints WHERE id = ?",
                (endpoint_id,),
            ).fetchone()
        if row is None:
            return None
        return EndpointRecord(row[0], row[1], row[2], json.loads(row[3] or "{}"))

    def heartbeat(self, endpoint_id: str, global_state: Mapping[str, Any]) -> None:
        """Record an endpoint's status report."""
        with self._lock:
            self._db.execute(
                "UPDATE endpoints SET heartbeat_t = ?, global_state = ? WHERE id = ?",
                (time.time(), json.dumps(global_state, default=str), endpoint_id),
            )

    def add_tasks(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Record submitted tasks: (task id, task group, endpoint, function)."""
        with self._lock, self._db:  # one transaction for the whole batch
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO tasks (id, task_group, endpoint, function, status) "
                "VALUES (?, ?, ?, ?, 'waiting-for-ep')",
                rows,
            )

    def finish_tasks(self, results: Iterable[tuple[str, str, bool]]) -> list[str | None]:
        """Record results (task id, data, failed) in one transaction.

        Returns their task groups, None for a task never submitted.
        """
        groups: list[str | None] = []
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for task_id, data, failed in results:
                row = self._db.execute(
                    "UPDATE tasks SET status = ?, completion_t = ?, data = ?, failed = ? "
                    "WHERE id = ? RETURNING task_group",
                    ("failed" if failed else "success", now, data, int(failed), task_id),
                ).fetchone()
                groups.append(None if row is None else str(row[0]))
        return groups

    def task(self, task_id: str) -> TaskRecord | None:
        """A task, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, task_group, endpoint, status, completion_t, data, failed "
                "FROM tasks WHERE id = ?",
                (task_id,),
            ).fetchone()
        if row is None:
            return None
        return TaskRecord(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))

    def group_tasks(self, task_group: str) -> list[str]:
        """The ids of a task group's tasks."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM tasks WHERE task_group = ?", (task_group,)
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
