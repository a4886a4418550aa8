"""The run journal and resume: a thinker killed at any point loses nothing and repeats nothing."""

from __future__ import annotations

import hashlib
import mmap
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import run_processes, still_running
from sample_methods import double, nap
from test_thinker_exit import CLI, environment, sites_yaml

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.errors import JournalError
from colmena_fed.journal import DELIVERIES_NAME, FILE_NAME, MAGIC, Journal, RunIdentity, read
from colmena_fed.recovery import reopen

RESUMABLE = Path(__file__).parent / "campaigns" / "resumable.py"
TASKS = 15  # the campaign's: 3 held, 12 on the default topic
IDENTITY = RunIdentity({"cpu-site": "local"}, ["double", "nap"])


def journal_counts(run_dir: Path) -> dict[str, int]:
    """Rows of each kind in a run's journal, read as another process reads it."""
    counts = Counter(kind for _, kind, *_ in read(run_dir / FILE_NAME).events)
    return {**counts, "delivered": len(deliveries(run_dir))}


def deliveries(run_dir: Path) -> list[str]:
    """The task ids of the results the thinker took, in order."""
    path = run_dir / DELIVERIES_NAME
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def tasks_by_state(run_dir: Path) -> Counter[str]:
    """How many tasks are delivered, ended (not delivered), in flight and pending."""
    kinds: dict[str, list[str]] = {}
    for task_id, kind, *_ in read(run_dir / FILE_NAME, live=True).events:
        if task_id:
            kinds.setdefault(task_id, []).append(kind)
    taken = set(deliveries(run_dir))
    states: Counter[str] = Counter()
    for task_id, task in kinds.items():
        if task_id in taken:
            states["delivered"] += 1
        elif "ended" in task:
            states["ended"] += 1
        elif task[-1] == "dispatched" or task[-1] == "acknowledged":
            states["in flight"] += 1
        else:
            states["pending"] += 1
    return states


def campaign(tmp_path: Path, sites: Path, *extra: str) -> subprocess.Popen[str]:
    files = {name: str(tmp_path / name.lower()) for name in ("TALLY", "RELEASE", "RECEIVED")}
    return subprocess.Popen(
        [CLI, "run", f"{RESUMABLE}:make_resumable", "--sites", str(sites), *extra],
        cwd=tmp_path,
        env={**environment(), **files},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize("backend", ["local", "globus"])
def test_a_thinker_killed_mid_run_resumes_with_every_task_ended_and_delivered_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    testbed = request.getfixturevalue("testbed") if backend == "globus" else None
    sites, run_dir = sites_yaml(tmp_path, backend, testbed), tmp_path / "run"
    first = campaign(tmp_path, sites, "--run-dir", str(run_dir))
    deadline = time.monotonic() + 120
    states: Counter[str] = Counter()
    # Kill it with results delivered, results received but not delivered (the held topic),
    # tasks in flight and tasks pending.
    while not all(states[s] for s in ("delivered", "ended", "in flight", "pending")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, f"the campaign never reached the kill point: {states}"
        time.sleep(0.05)
        if (run_dir / FILE_NAME).exists():
            states = tasks_by_state(run_dir)
    second_thinker = TaskServer(
        TaskQueues(), SitesConfig.from_yaml(sites), [double], run_dir, resume=True
    )
    with pytest.raises(JournalError, match=f"in use by process {first.pid}"):
        second_thinker.start()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    ended_before = journal_counts(run_dir)["ended"]
    ran_before = (tmp_path / "tally").read_text().split()
    (tmp_path / "release").touch()

    second = campaign(tmp_path, sites, "--run-dir", str(run_dir), "--resume")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, out + err
    assert "resumed:" in out

    lines = [line.split() for line in (tmp_path / "received").read_text().splitlines()]
    new = Counter(value for value, _, replayed, _ in lines if replayed == "False")
    replayed = Counter(value for value, _, replayed, _ in lines if replayed == "True")
    assert new == Counter(str(i) for i in range(TASKS))  # every result delivered once as new
    assert set(replayed.values()) == {1}  # and those delivered before, replayed once
    assert set(replayed) <= set(new)
    assert all(success == "True" for *_, success in lines)
    counts = journal_counts(run_dir)
    assert counts["ended"] == counts["delivered"] == counts["submitted"] == TASKS
    ran = Counter((tmp_path / "tally").read_text().split())
    run_twice = {i for i, n in ran.items() if n > 1}
    if backend == "globus":
        assert not run_twice  # found in the run's task group, not sent again
    else:  # what was in flight died with the engine and was sent again, saying why
        assert 1 <= len(run_twice) <= 2
        assert counts["resent"] == len(run_twice)
        assert set(ran) == {str(i) for i in range(TASKS)}
    assert len(ran_before) >= ended_before >= 1


def small_journal(run_dir: Path) -> None:
    """A journal of a run whose thinker died: one result delivered, one task pending."""
    journal = Journal.create(run_dir, IDENTITY, "8c7e1d0a-0000-4000-8000-000000000000")
    done = Result(method="double", args=(np.arange(3),), kwargs={"scale": np.float64(2)})
    journal.submitted(done)
    journal.dispatched(done, "cpu-site", 1, time.time())
    done.value, done.success, done.site = np.arange(3) * 2, True, "cpu-site"
    journal.ended(done, time.time())
    journal.delivered(done.task_id, time.time())
    journal.submitted(Result(method="nap", args=(1.0,), max_wait=60, priority=3))
    journal.commit()
    journal.close()


def test_a_journal_keeps_numpy_inputs_and_values_and_their_records_write_json(
    tmp_path: Path,
) -> None:
    small_journal(tmp_path)
    journal, recovery = reopen(tmp_path, IDENTITY)
    journal.close()
    (replay,) = recovery.delivered
    assert replay.replayed
    assert replay.timestamps.delivered is not None
    assert np.array_equal(replay.args[0], np.arange(3))
    assert np.array_equal(replay.value, [0, 2, 4])
    (pending,) = recovery.pending
    assert (pending.method, pending.priority, pending.max_wait) == ("nap", 3, 60)
    text = replay.model_dump_json()
    assert '"args":[[0,1,2]]' in text
    assert '"value":[0,2,4]' in text
    assert '"scale":2.0' in text


def fingerprint(run_dir: Path) -> dict[str, str]:
    """The bytes of every file of the run directory (not of the sites' directories in it)."""
    files = (path for path in run_dir.iterdir() if path.is_file())
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def damage(path: Path, how: str) -> str:
    """Spoil the journal at ``path``; what the error must say."""
    data = path.read_bytes()
    if how == "foreign":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
        return "not a colmena-fed journal"
    if how == "not a journal":
        path.write_bytes(b"run,task\n" * 200)
        return "not a colmena-fed journal"
    if how == "other version":
        path.write_bytes(MAGIC + (99).to_bytes(4, "big") + data[len(MAGIC) + 4 :])
        return "a journal of format 99; this colmena-fed reads format 1"
    if how == "truncated":
        cut = len(data) // 2 + 100
        assert cut % mmap.PAGESIZE  # not where a dying thinker's write could stop
        os.truncate(path, cut)
        return "truncated"
    inside = len(data) - 100  # corrupt: one byte of the last frame's payload flipped
    path.write_bytes(data[:inside] + bytes([data[inside] ^ 0xFF]) + data[inside + 1 :])
    return "corrupt"


def bulky_journal(run_dir: Path) -> Path:
    """`small_journal` and 200 more tasks pending, each in a frame of its own."""
    small_journal(run_dir)
    journal, _ = reopen(run_dir, IDENTITY)
    for _ in range(200):
        journal.submitted(Result(method="double", args=(os.urandom(200),)))
        journal.commit()
    journal.close()
    return run_dir / FILE_NAME


@pytest.mark.parametrize(
    "how", ["foreign", "not a journal", "other version", "truncated", "corrupt"]
)
def test_a_journal_that_cannot_be_resumed_is_one_clear_error_and_left_as_it_was(
    tmp_path: Path, how: str
) -> None:
    expected = damage(bulky_journal(tmp_path), how)
    before = fingerprint(tmp_path)
    with pytest.raises(JournalError, match=expected) as raised:
        reopen(tmp_path, IDENTITY)
    assert str(tmp_path / FILE_NAME) in str(raised.value)
    assert fingerprint(tmp_path) == before


def test_a_corrupt_frame_found_while_the_sites_start_stops_them_and_leaves_the_journal(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    damage(bulky_journal(run_dir), "corrupt")  # the run facts are whole: the sites start
    before = fingerprint(run_dir)
    config = SitesConfig.from_yaml(sites_yaml(tmp_path, "local", None))
    server = TaskServer(TaskQueues(), config, [double, nap], run_dir=run_dir, resume=True)
    already = set(run_processes(os.getpid(), run_dir))  # other tests' sites
    with pytest.raises(JournalError, match="corrupt"):
        server.start()
    assert fingerprint(run_dir) == before
    started = {
        pid: process
        for pid, process in run_processes(os.getpid(), run_dir).items()
        if pid not in already and "colmena_fed.guard" not in process.cmdline()  # the process's
    }
    assert still_running(started) == []


def test_a_write_cut_short_by_the_thinkers_death_is_dropped_and_the_run_resumes(
    tmp_path: Path,
) -> None:
    path = bulky_journal(tmp_path)
    whole = len(path.read_bytes())
    journal, _ = reopen(tmp_path, IDENTITY)
    cut_short = Result(method="nap", args=(os.urandom(2 * mmap.PAGESIZE),))
    journal.submitted(cut_short)
    journal.commit()
    journal.close()
    events = len(read(path).events)
    os.truncate(path, whole + 100)  # a reader of a running thinker's journal may see this
    assert len(read(path, live=True).events) == events - 1
    cut = (whole // mmap.PAGESIZE + 1) * mmap.PAGESIZE  # where the kernel stops a killed write
    os.truncate(path, cut)
    journal, recovery = reopen(tmp_path, IDENTITY)
    assert cut_short.task_id not in {task.task_id for task in recovery.pending}
    assert len(recovery.pending) == 201
    assert path.stat().st_size == whole  # cut off before anything is written after it
    journal.submitted(Result(method="nap", args=(1.0,)))
    journal.commit()
    journal.close()
    journal, recovery = reopen(tmp_path, IDENTITY)
    journal.close()
    assert len(recovery.pending) == 202


@pytest.mark.parametrize(
    ("sites", "methods", "expected"),
    [
        ({"cpu-site": "local", "gpu-site": "local"}, ["double", "nap"], "site 'gpu-site'"),
        ({"cpu-site": "globus endpoint 1"}, ["double", "nap"], "site 'cpu-site'"),
        ({"cpu-site": "local"}, ["double"], "lacks: nap"),
    ],
)
def test_resuming_with_other_sites_or_methods_names_the_difference(
    tmp_path: Path, sites: dict[str, str], methods: list[str], expected: str
) -> None:
    small_journal(tmp_path)
    before = fingerprint(tmp_path)
    with pytest.raises(JournalError, match=expected):
        reopen(tmp_path, RunIdentity(sites, methods))
    assert fingerprint(tmp_path) == before


def test_a_new_run_refuses_a_run_directory_holding_one_and_resume_needs_a_journal(
    tmp_path: Path,
) -> None:
    small_journal(tmp_path / "old")
    with pytest.raises(JournalError, match="already holds a run; resume it"):
        Journal.create(tmp_path / "old", IDENTITY, "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JournalError, match="no journal to resume"):
        reopen(tmp_path / "empty", IDENTITY)
