"""Real Globus Compute endpoint processes, started as the cloud's multi-user endpoint starts them.

This is the one module that relies on ``globus-compute-endpoint _start-user-endpoint``, an
internal command whose stdin format is not a public interface; hence the pinned version.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml

from colmena_fed.mpi import local_node_file, needs_node_file
from colmena_fed.testbed.errors import TestbedError

PINNED_ENDPOINT_VERSION = "4.19.0"
"""The globus-compute-endpoint release whose internal command the testbed is known to work with."""

_ENDPOINT_SCRIPT = "globus-compute-endpoint"


def check_endpoint_version() -> None:
    """Refuse to drive an endpoint release other than `PINNED_ENDPOINT_VERSION`.

    Raises:
        TestbedError: the installed globus-compute-endpoint is another version.
    """
    import globus_compute_endpoint

    installed = globus_compute_endpoint.__version__
    if installed != PINNED_ENDPOINT_VERSION:
        raise TestbedError(
            f"globus-compute-endpoint {installed} is installed, but the testbed drives "
            "globus-compute-endpoint's internal _start-user-endpoint command, which is only known "
            f"to work with {PINNED_ENDPOINT_VERSION}; install "
            f"globus-compute-endpoint=={PINNED_ENDPOINT_VERSION}"
        )


class EndpointDaemon:
    """One real Globus Compute endpoint process, started as the cloud starts user endpoints.

    It is launched the way the Globus Compute service's multi-user endpoint launches the user
    endpoints it manages: configuration and AMQP credentials come on stdin, so it never talks
    to a web service. It runs in a session of its own, together with its engine's interchange
    and workers, so `stop` and `kill` can reach all of them. It exits by itself about a second
    after the process that started it dies.

    Args:
        name: Endpoint name; its directory is ``user_dir / name``.
        config_text: The endpoint's ``config.yaml`` text (it must have an ``engine`` block).
        amqp_creds: The registration answer: ``endpoint_id`` and the task, result and
            heartbeat queue infos.
        user_dir: Plays the part of ``~/.globus_compute``.
        heartbeat_period: Seconds between heartbeats (at least 5); overrides the YAML's value.
        pythonpath: Directories its workers import modules from, before the inherited path.
    """

    def __init__(
        self,
        name: str,
        config_text: str,
        amqp_creds: Mapping[str, Any],
        user_dir: Path,
        *,
        heartbeat_period: int | None = None,
        pythonpath: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.pythonpath = [str(Path(p).resolve()) for p in pythonpath]
        self.config_text = config_text
        self.amqp_creds = dict(amqp_creds)
        self.user_dir = Path(user_dir).resolve()
        self.heartbeat_period = heartbeat_period
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_dir(self) -> Path:
        """The endpoint's directory: its log (``endpoint.log``), pid file and ``daemon.out``."""
        return self.user_dir / self.name

    @property
    def pid(self) -> int | None:
        """Process ID of the endpoint (also its session ID); None before the first start."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the endpoint process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch the endpoint and hand it its configuration; returns without waiting for it.

        Raises:
            TestbedError: it is already running, the installed endpoint is not the pinned
                version, or its command is missing.
        """
        if self.running:
            raise TestbedError(f"endpoint {self.name!r} is already running (pid {self.pid})")
        check_endpoint_version()
        scripts = sysconfig.get_path("scripts")
        command = Path(scripts) / _ENDPOINT_SCRIPT
        if not command.exists():
            raise TestbedError(f"{command} not found; install globus-compute-endpoint in {scripts}")
        self.endpoint_dir.mkdir(parents=True, exist_ok=True)
        # A pid file from a killed run blocks the start for 3 heartbeat periods.
        (self.endpoint_dir / "daemon.pid").unlink(missing_ok=True)
        stdin = json.dumps(
            {"ep_info": {}, "config": self._config(), "amqp_creds": self.amqp_creds}
        ).encode()
        with (self.endpoint_dir / "daemon.out").open("wb") as out:
            self._proc = subprocess.Popen(
                [str(command), "_start-user-endpoint", self.name],
                cwd=self.endpoint_dir,
                env=self._environment(scripts),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert self._proc.stdin is not None
        # An endpoint that dies at once closes the pipe; its reason is in daemon.out.
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.write(stdin)
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the endpoint cleanly (SIGKILL after ``timeout`` seconds) and all it started.

        A clean stop sends a last heartbeat with ``active: false`` and shuts the engine down.
        Idempotent.
        """
        if self._proc is None:
            return
        if self._proc.poll() is None:
            # Only the endpoint: it stops its engine itself, and a group-wide SIGTERM would
            # make the interchange and workers die before it can.
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """Simulate a crash of the node: SIGKILL the endpoint, its interchange and its workers."""
        if self._proc is None:
            return
        kill_session(self._proc.pid)
        self._proc.wait()

    def _config(self) -> str:
        if self.heartbeat_period is None:
            return self.config_text
        config = yaml.safe_load(self.config_text)
        if not isinstance(config, dict):
            raise TestbedError(f"endpoint {self.name!r}: the configuration is not a YAML mapping")
        config["heartbeat_period"] = self.heartbeat_period
        return yaml.safe_dump(config, sort_keys=False)

    def _environment(self, scripts: str) -> dict[str, str]:
        env = dict(os.environ)
        # This variable would take precedence over user_dir / name as the endpoint directory.
        env.pop("GLOBUS_COMPUTE_ENDPOINT_DIR", None)
        env["GLOBUS_COMPUTE_USER_DIR"] = str(self.user_dir)
        # The engine launches the interchange and worker pool by name from PATH, and workers
        # must import the caller's modules.
        env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
        current = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        extra = [p for p in sys.path if p and os.path.isdir(p) and p not in current]
        env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *current, *extra])
        if needs_node_file(self.config_text):  # an MPI engine on this scheduler-less machine
            env["PBS_NODEFILE"] = str(local_node_file(self.endpoint_dir))
        return env


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (its leader included) until none is left.

    What a node crash does to an endpoint: its engine's interchange and workers die with it.
    """
    # Parsl's LocalProvider starts workers in process groups of their own, but they stay in
    # the endpoint's session, and keep it after the endpoint dies and they are reparented.
    # Repeat: a process may fork between the scan and the signal.
    for _ in range(100):
        members = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
        if not members:
            return
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        time.sleep(0.05)
