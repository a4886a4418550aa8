"""The testbed as a whole: broker, stand-in service and endpoint daemons, children of one process.

`Testbed` starts a private RabbitMQ node, the stand-in Globus Compute service
(`colmena_fed.testbed.service`, as its own process so it can be restarted under running
endpoints), and one real endpoint daemon per endpoint YAML, each registered through the SDK's
own ``Client.register_endpoint``. The endpoints die with the process that started them, so the
test fixture or ``colmena-fed testbed up``'s background process holds it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from colmena_fed.backends.engine import engine_config_text, load_engine
from colmena_fed.backends.globus import make_client
from colmena_fed.files import private_dir
from colmena_fed.mpi import endpoint_nodes_per_block
from colmena_fed.sites import GlobusConfig
from colmena_fed.testbed.broker import Broker
from colmena_fed.testbed.daemon import EndpointDaemon, check_endpoint_version, kill_session
from colmena_fed.testbed.errors import TestbedError
from colmena_fed.testbed.service import AMQP_URL_VARIABLE, HOST, PORT
from colmena_fed.testbed.token import TOKEN_VARIABLE, new_token


class Testbed:
    """A local Globus Compute service with real endpoints, all under ``directory``."""

    def __init__(self, directory: Path, heartbeat_period: int = 5) -> None:
        """Keep the testbed's files under ``directory``; endpoints beat every few seconds."""
        self.directory = Path(directory).resolve()
        self.heartbeat_period = heartbeat_period
        self.broker = Broker(self.directory / "broker")
        self.daemons: dict[str, EndpointDaemon] = {}
        #: Endpoint UUID by endpoint name.
        self.endpoints: dict[str, str] = {}
        self._yamls: dict[str, Path] = {}
        self._service: subprocess.Popen[bytes] | None = None
        self._token: str | None = None  # made at the first start, kept across restarts

    def start(
        self,
        endpoint_yamls: Sequence[Path],
        timeout: float = 180.0,
        pythonpath: Sequence[Path] = (),
    ) -> dict[str, str]:
        """Start everything and wait until every endpoint reports online; returns their UUIDs.

        Each endpoint is named after its YAML's file name; ``pythonpath`` directories are where
        its workers import the campaign's modules from. On any failure what started is stopped.
        """
        names = [Path(path).stem for path in endpoint_yamls]
        if len(set(names)) != len(names):
            raise TestbedError(f"two endpoint YAMLs share a file name: {', '.join(names)}")
        for path in endpoint_yamls:
            load_engine(Path(path))  # a ConfigError naming the file, before anything starts
        check_endpoint_version()
        private_dir(self.directory)
        if _port_taken(PORT):
            raise TestbedError(
                f"port {PORT} on localhost is taken (the SDK's local service address); is a "
                "testbed already up? ('colmena-fed testbed down')"
            )
        try:
            self.broker.start()
            self.start_service()
            client = make_client(GlobusConfig(service="testbed", testbed_dir=self.directory))
            for name, path in zip(names, endpoint_yamls, strict=True):
                creds = client.register_endpoint(name, None, display_name=name)
                self.endpoints[name] = creds["endpoint_id"]
                self._yamls[name] = Path(path).resolve()
                daemon = EndpointDaemon(
                    name,
                    engine_config_text(Path(path)),
                    creds,
                    self.directory / "endpoints",
                    heartbeat_period=self.heartbeat_period,
                    pythonpath=pythonpath,
                )
                self.daemons[name] = daemon
                daemon.start()
            self.wait_online(timeout)
        except BaseException:
            self.stop()
            raise
        return dict(self.endpoints)

    def start_service(self, timeout: float = 30.0) -> None:
        """Start the stand-in service and wait until it answers.

        A restarted service keeps the token: clients that hold it go on working.
        """
        if self._token is None:
            self._token = new_token(self.directory)
        token = self._token
        env = {**os.environ, AMQP_URL_VARIABLE: self.broker.url, TOKEN_VARIABLE: token}
        ready = urllib.request.Request(
            f"http://{HOST}:{PORT}/v2/version", headers={"Authorization": f"Bearer {token}"}
        )
        log = self.directory / "service.log"
        state_dir = str(self.directory)
        with log.open("ab") as out:
            self._service = subprocess.Popen(
                [sys.executable, "-m", "colmena_fed.testbed.service", "--state-dir", state_dir],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._service.poll() is not None:
                raise TestbedError(f"the testbed service exited at start:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(ready, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TestbedError(f"the testbed service did not answer within {timeout:.0f} s")

    @property
    def service_pid(self) -> int | None:
        """Process ID of the stand-in service while it runs."""
        service = self._service
        return None if service is None or service.poll() is not None else service.pid

    def stop_service(self) -> None:
        """Stop the stand-in service (endpoints and broker keep running)."""
        service, self._service = self._service, None
        if service is None or service.poll() is not None:
            return
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()

    def revive(self) -> list[str]:
        """Restart whatever part died (broker, service, endpoint daemons); returns their names.

        A restarted endpoint keeps its UUID and queue; the tasks it held when it died are lost,
        as on a real node crash (its status reports a new start time, so clients can tell).
        """
        revived = []
        if not self.broker.running:
            self.broker.start()
            revived.append("broker")
        if self._service is None or self._service.poll() is not None:
            self.start_service()
            revived.append("service")
        for name, daemon in self.daemons.items():
            if not daemon.running:
                if daemon.pid is not None:  # its interchange and workers may outlive it
                    kill_session(daemon.pid)
                daemon.start()
                revived.append(name)
        return revived

    def wait_online(self, timeout: float) -> None:
        """Wait until every endpoint's status is online."""
        client = make_client(GlobusConfig(service="testbed", testbed_dir=self.directory))
        deadline = time.monotonic() + timeout
        waiting = dict(self.endpoints)
        while waiting:
            for name, endpoint_id in list(waiting.items()):
                if not self.daemons[name].running:
                    log = self.daemons[name].endpoint_dir / "daemon.out"
                    raise TestbedError(f"endpoint {name!r} exited at start:\n{_tail(log)}")
                if client.get_endpoint_status(endpoint_id)["status"] == "online":
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                raise TestbedError(
                    f"endpoint(s) {', '.join(waiting)} not online within {timeout:.0f} s; see "
                    f"{self.directory / 'endpoints'}/NAME/endpoint.log"
                )
            if waiting:
                time.sleep(0.5)

    def sites(self) -> dict[str, Any]:
        """A sites YAML (as a mapping) with every endpoint as a `globus` site."""
        sites = {
            name: {"endpoint": endpoint_id, **offer_of(self._yamls[name])}
            for name, endpoint_id in self.endpoints.items()
        }
        return {
            "sites": sites,
            "globus": {"service": "testbed", "testbed_dir": str(self.directory)},
        }

    def stop(self) -> None:
        """Stop the endpoints, the service and the broker; leaves no process behind."""
        try:
            for daemon in self.daemons.values():
                daemon.stop()
        finally:
            try:
                self.stop_service()
            finally:
                self.broker.stop()

    def __enter__(self) -> Testbed:
        """The testbed itself (start it with `start`)."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop everything."""
        self.stop()


def offer_of(endpoint_yaml: Path) -> dict[str, Any]:
    """What an endpoint offers, as a site's fields: ``resources`` (and ``nodes_per_block``).

    One ``gpu`` slot per accelerator, else one ``cpu`` per worker; an MPI engine offers its
    blocks' ``nodes``.
    """
    text = engine_config_text(endpoint_yaml)
    engine = (yaml.safe_load(text) or {}).get("engine", {})
    provider = engine.get("provider", {})
    blocks = int(provider.get("max_blocks", 1))
    nodes_per_block = endpoint_nodes_per_block(text)
    if nodes_per_block is not None:
        return {
            "resources": {"nodes": nodes_per_block * blocks},
            "nodes_per_block": nodes_per_block,
        }
    accelerators = engine.get("available_accelerators")
    if accelerators:
        count = accelerators if isinstance(accelerators, int) else len(accelerators)
        return {"resources": {"gpu": count}}
    nodes = int(provider.get("nodes_per_block", 1)) * blocks
    return {"resources": {"cpu": int(engine.get("max_workers_per_node", 1)) * nodes}}


def write_sites(path: Path, sites: dict[str, Any]) -> None:
    """Write a sites YAML made by `Testbed.sites`, with a header saying where it came from."""
    header = "# Written by 'colmena-fed testbed up': the testbed's endpoints as globus sites.\n"
    path.write_text(header + yaml.safe_dump(sites, sort_keys=False))


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
