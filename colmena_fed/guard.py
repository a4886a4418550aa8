"""The guard: a process that stops what a thinker started once the thinker is gone.

A local site's engine starts processes of its own (Parsl's interchange, a worker pool per block,
the workers). A thinker that ends without stopping its task server (SIGKILL, an exception
outside ``with server:``, a crash) would leave them running, re-parented to init. So before its
first local site starts, a thinker process starts one guard and puts the guard's token in its
environment (`VARIABLE`), which every process it starts from then on inherits, however deep.
A process that rewrites its environment block (Parsl's interchange sets its process title,
which overwrites it) is named to the guard instead (`adopt`). The guard leaves the thinker's
session and process group (Ctrl+C, or a kill of the group, does not reach it), waits for the
thinker to end, however it ends, and then stops every process that carries its token or that
it adopted: SIGTERM, then SIGKILL for any still there after `GRACE_S`. Then it exits.

A process the thinker starts that must outlive it needs `VARIABLE` removed from its environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import psutil

logger = logging.getLogger(__name__)

#: The environment variable that marks a process as one a guarded thinker started.
VARIABLE = "COLMENA_FED_GUARD"

#: Seconds a process has to exit after SIGTERM before it gets SIGKILL.
GRACE_S = 2.0

#: Seconds between two looks at the thinker where the system cannot wait on a process.
_POLL_S = 0.5

_lock = threading.Lock()


class _Guarded:
    """This process's guard: its token, and the pipe that names processes to it."""

    def __init__(self, token: str, pipe: IO[bytes]) -> None:
        self.pid = os.getpid()
        self.token = token
        self.pipe = pipe


_guarded: _Guarded | None = None


def ensure_guard() -> str:
    """Make sure this process has a guard, and that processes it starts carry its token.

    Starts the guard the first time (about a tenth of a second); returns the token.
    """
    global _guarded
    with _lock:
        if _guarded is None or _guarded.pid != os.getpid():  # none yet, or a forked child
            token = f"{os.getpid()}-{secrets.token_hex(8)}"
            _guarded = _Guarded(token, _start(token))
        os.environ[VARIABLE] = _guarded.token
        return _guarded.token


def adopt(pid: int) -> None:
    """Have the guard stop process ``pid`` too when the thinker ends (`ensure_guard` first)."""
    with _lock:
        if _guarded is None or _guarded.pid != os.getpid():
            raise RuntimeError("this process has no guard yet: call ensure_guard() first")
        try:
            created = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            return
        try:
            _guarded.pipe.write(f"{pid} {created!r}\n".encode())
            _guarded.pipe.flush()
        except OSError as exc:  # the guard is gone: say so, the site still runs
            logger.warning("the colmena-fed guard did not take process %d: %s", pid, exc)


def _start(token: str) -> IO[bytes]:
    """Start the guard of this process once it watches it; returns the pipe to it."""
    me = psutil.Process()
    environment = {name: value for name, value in os.environ.items() if name != VARIABLE}
    command = [
        sys.executable,
        "-m",
        "colmena_fed.guard",
        str(me.pid),
        repr(me.create_time()),
        token,
    ]
    launcher = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
        start_new_session=True,
    )
    assert launcher.stdin is not None
    assert launcher.stdout is not None
    answer = launcher.stdout.readline()  # written by the guard itself, once it watches
    launcher.stdout.close()
    launcher.wait()  # the launcher forks the guard and exits at once
    if not answer.startswith(b"watching"):
        raise RuntimeError(
            f"the colmena-fed guard did not start ({command[0]} -m colmena_fed.guard); "
            "without it a killed thinker would leave its sites' processes running"
        )
    return launcher.stdin


def carries(process: psutil.Process, token: str) -> bool:
    """Whether ``process`` was started (at any depth) by the thinker holding ``token``."""
    try:
        return process.environ().get(VARIABLE) == token
    except (psutil.Error, OSError):  # gone, a zombie, or another user's
        return False


def sweep(token: str, adopted: dict[int, float] | None = None) -> int:
    """Stop every process carrying ``token`` or adopted (pid: creation time); returns how many.

    SIGTERM first, then SIGKILL for those still running after `GRACE_S`.
    """
    stopped: set[int] = set()
    for _ in range(5):  # a process may start another between the scan and the signal
        found = [p for p in psutil.process_iter() if p.pid != os.getpid() and carries(p, token)]
        found += [p for p in _still_there(adopted or {}) if p.pid not in stopped]
        found = [p for p in found if _alive(p)]
        if not found:
            break
        _signal(found, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while (alive := [p for p in found if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal(alive, signal.SIGKILL)
        stopped.update(p.pid for p in found)
    return len(stopped)


def _still_there(adopted: dict[int, float]) -> list[psutil.Process]:
    """The adopted processes that still run (the same process: its pid not reused)."""
    processes = []
    for pid, created in adopted.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if abs(process.create_time() - created) < 0.5:
                processes.append(process)
    return processes


def _signal(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _Watch:
    """The guard's view of its thinker: whether it still runs, and what it adopted."""

    def __init__(self, pid: int, created: float) -> None:
        self.adopted: dict[int, float] = {}
        self._pending = b""
        self._named: int | None = 0  # stdin, until the thinker closes it
        try:
            self.thinker: psutil.Process | None = psutil.Process(pid)
            if abs(self.thinker.create_time() - created) > 0.5:
                self.thinker = None  # the pid was reused: the thinker is gone already
        except psutil.NoSuchProcess:
            self.thinker = None
        self._handle: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)  # Linux: a wait that costs nothing
        if self.thinker is not None and pidfd_open is not None:
            with contextlib.suppress(OSError):
                self._handle = pidfd_open(pid)

    def wait(self) -> None:
        """Return once the thinker has ended, reading what it adopts meanwhile."""
        while self.thinker is not None and self.thinker.is_running():
            watched = [fd for fd in (self._named, self._handle) if fd is not None]
            timeout = None if self._handle is not None else _POLL_S
            readable, _, _ = select.select(watched, [], [], timeout)
            if self._handle in readable:
                break
            if self._named in readable:
                self._read()
        if self._named is not None:  # what it wrote before it ended
            os.set_blocking(self._named, False)
            with contextlib.suppress(BlockingIOError):
                self._read()

    def _read(self) -> None:
        assert self._named is not None
        chunk = os.read(self._named, 65536)
        if not chunk:
            self._named = None
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            pid, created = line.split()
            self.adopted[int(pid)] = float(created)


def main(argv: list[str]) -> None:
    """Guard the thinker ``argv[1]`` (started at ``argv[2]``), stopping ``argv[3]``'s carriers."""
    pid, created, token = int(argv[1]), float(argv[2]), argv[3]
    if os.fork() > 0:  # the thinker reaps this launcher at once; the guard lives on, detached
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = _Watch(pid, created)
    sys.stdout.write("watching\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # let go of the thinker's pipe
    watch.wait()
    stopped = sweep(token, watch.adopted)
    if stopped:
        with contextlib.suppress(OSError):
            print(
                f"colmena-fed: stopped {stopped} processes that thinker {pid} left running",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main(sys.argv)
