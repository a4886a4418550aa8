"""A private RabbitMQ node for the testbed, run from Debian's rabbitmq-server package."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import pika
import pika.exceptions
import psutil

from colmena_fed.testbed.errors import TestbedError

SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""Runs the node as the calling user (``/usr/sbin/rabbitmq-server`` forces ``su rabbitmq``)."""


@dataclass(frozen=True)
class _Settings:
    """What a broker keeps across restarts: its identity, ports and credentials."""

    node: str
    user: str
    password: str
    amqp_port: int
    dist_port: int
    epmd_port: int


class Broker:
    """A private RabbitMQ node on 127.0.0.1 (Debian's rabbitmq-server), its files under base_dir.

    Ports, credentials and the node name are chosen at the first start and saved in
    ``base_dir/broker.json``; later starts from the same directory reuse them and the node's
    database, so durable queues and persistent messages survive a stop and start. A node left
    running by an owner that crashed (found through the node's pid file) is stopped by `start`
    before the new one boots.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.log_path = self.base_dir / "log" / "broker.out"
        """The node's stdout and stderr (boot errors land here, not in the Erlang log)."""
        self._settings_path = self.base_dir / "broker.json"
        self._pid_file = self.base_dir / "rabbit.pid"
        self._settings: _Settings | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The AMQP URL of the node, with its credentials; valid once the broker has started."""
        settings = self._settings or self._load_settings()
        if settings is None:
            raise TestbedError(f"no broker has started in {self.base_dir}; call start() first")
        return f"amqp://{settings.user}:{settings.password}@127.0.0.1:{settings.amqp_port}/%2F"

    @property
    def running(self) -> bool:
        """Whether the node this object started is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        """Boot the node and return once it accepts AMQP connections; no-op if already running.

        Raises:
            TestbedError: rabbitmq-server is not installed, a saved port is taken by another
                program, or the node exited or did not answer within ``timeout`` seconds (the
                message ends with the node's log).
        """
        if self.running:
            return
        if not SERVER_SCRIPT.exists():
            raise TestbedError(
                f"{SERVER_SCRIPT} not found: the testbed runs a private RabbitMQ node and needs "
                "Debian's rabbitmq-server package (apt-get install rabbitmq-server)"
            )
        for sub in ("home", "mnesia", "log"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        settings = self._load_settings() or self._new_settings()
        self._settings = settings
        self._stop_orphan()
        self._kill_epmd(settings)
        self._check_ports(settings)
        config = self.base_dir / "rabbitmq.conf"
        config.touch(mode=0o600)  # it holds the password
        config.chmod(0o600)
        config.write_text(
            f"listeners.tcp.1 = 127.0.0.1:{settings.amqp_port}\n"
            f"default_user = {settings.user}\n"
            f"default_pass = {settings.password}\n"
            "loopback_users = none\n"
            # RabbitMQ's default (50 MB free) blocks every publisher on a nearly full /tmp.
            "disk_free_limit.absolute = 1MB\n"
        )
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(SERVER_SCRIPT)],
                cwd=self.base_dir,
                env=self._environment(settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._accepts_connections(settings):
            if self._proc.poll() is not None:
                self._fail(f"the RabbitMQ node exited with status {self._proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"the RabbitMQ node did not accept connections within {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node cleanly (SIGKILL after ``timeout`` seconds) and its epmd; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            # The launcher shell traps TERM, forwards it to the node and waits for it.
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            # A hung node, and the node's helpers (erl_child_setup, inet_gethost), are in the
            # launcher's process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._settings is not None:
            self._kill_epmd(self._settings)

    def _fail(self, reason: str) -> NoReturn:
        try:
            tail = (
                "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:]) or "(empty)"
            )
        except OSError:
            tail = "(no log)"
        self.stop()
        raise TestbedError(f"{reason}; last lines of {self.log_path}:\n{tail}")

    def _load_settings(self) -> _Settings | None:
        try:
            return _Settings(**json.loads(self._settings_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise TestbedError(
                f"{self._settings_path} is damaged ({exc}); delete {self.base_dir} to start afresh"
            ) from exc

    def _new_settings(self) -> _Settings:
        digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:8]
        # Keep all three sockets open until the end so the kernel hands out different ports.
        socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
        ports = [sock.getsockname()[1] for sock in socks]
        for sock in socks:
            sock.close()
        node = f"colmena-fed-{digest}@localhost"
        settings = _Settings(node, "colmena-fed", secrets.token_urlsafe(18), *ports)
        self._settings_path.touch(mode=0o600)  # it holds the password
        self._settings_path.write_text(json.dumps(asdict(settings), indent=2))
        return settings

    def _environment(self, settings: _Settings) -> dict[str, str]:
        base = self.base_dir
        return {
            **os.environ,
            "HOME": str(base / "home"),  # the Erlang cookie goes to $HOME/.erlang.cookie
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # else /etc/rabbitmq/rabbitmq-env.conf applies
            "RABBITMQ_NODENAME": settings.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(settings.amqp_port),
            "RABBITMQ_DIST_PORT": str(settings.dist_port),
            # Without this the distribution port listens on every interface.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(settings.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self._pid_file),
            "ERL_CRASH_DUMP": str(base / "log" / "erl_crash.dump"),
        }

    def _stop_orphan(self) -> None:
        """Stop a node of this directory whose owner died without stopping it."""
        try:
            node = psutil.Process(int(self._pid_file.read_text().strip()))
            # The node name is not on beam's command line, but its home directory is.
            if str(self.base_dir / "home") in node.cmdline():
                node.terminate()
                _, alive = psutil.wait_procs([node], timeout=30)
                for proc in alive:
                    proc.kill()
        except (OSError, ValueError, psutil.Error):
            pass

    def _check_ports(self, settings: _Settings) -> None:
        ports = {"AMQP": settings.amqp_port, "dist": settings.dist_port, "epmd": settings.epmd_port}
        for what, port in ports.items():
            if not _port_free(port):
                raise TestbedError(
                    f"the broker's {what} port 127.0.0.1:{port}, saved in {self._settings_path}, "
                    f"is taken by another program; stop it, or delete {self.base_dir} to let the "
                    "broker pick new ports (its queues are lost)"
                )

    def _kill_epmd(self, settings: _Settings) -> None:
        # The node starts epmd as a daemon outside its process group; epmd only obeys -kill
        # when no live node is registered with it.
        command = ["epmd", "-port", str(settings.epmd_port), "-kill"]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(command, capture_output=True, timeout=10, check=False)

    def _accepts_connections(self, settings: _Settings) -> bool:
        # A plain TCP probe first keeps pika from logging an error for every early attempt.
        try:
            socket.create_connection(("127.0.0.1", settings.amqp_port), timeout=1).close()
        except OSError:
            return False
        params = pika.URLParameters(self.url)
        params.connection_attempts = 1
        params.socket_timeout = 2
        try:
            pika.BlockingConnection(params).close()
        except pika.exceptions.AMQPError:
            return False
        return True


def _port_free(port: int) -> bool:
    # create_server sets SO_REUSEADDR: the last run's TIME_WAIT connections do not count.
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True
