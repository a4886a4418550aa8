"""Fixtures: a real two-site federation (CPU and GPU endpoint engines), shared by the session."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest
import redis
from globus_compute_sdk.sdk import executor as sdk_executor
from sample_methods import accelerator, add, blob, die, double, fail, nap, warm_model

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.exceptions import TimeoutException
from colmena_fed.methods import MethodLike

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS = REPO / "endpoints"
TOPICS = ["simulate", "train", "other"]


def federation_config(
    cpu_slots: int = 2, gpu_slots: int = 1, testbed: RunningTestbed | None = None
) -> SitesConfig:
    """The two sites of examples/sites.yaml, with the given slots.

    Without ``testbed`` they are `local` sites; with it, `globus` sites: the same endpoint
    YAMLs run as endpoint daemons behind the testbed's stand-in Globus Compute service.
    """
    yamls = {"cpu-site": "local-cpu", "gpu-site": "local-gpu"}
    slots = {"cpu-site": {"cpu": cpu_slots}, "gpu-site": {"gpu": gpu_slots}}
    if testbed is None:
        sites = {
            name: {"local": str(ENDPOINTS / f"{stem}.yaml"), "resources": slots[name]}
            for name, stem in yamls.items()
        }
        return SitesConfig.from_dict({"sites": sites, "scheduler": {"status_period": 0.5}})
    sites = {
        name: {"endpoint": testbed.endpoints[stem], "resources": slots[name]}
        for name, stem in yamls.items()
    }
    return SitesConfig.from_dict(
        {"sites": sites, "scheduler": {"status_period": 1}, "globus": testbed.globus}
    )


class RunningTestbed(NamedTuple):
    """A testbed started with ``colmena-fed testbed up``: its directory and state file."""

    directory: Path
    state: dict[str, Any]

    @property
    def endpoints(self) -> dict[str, str]:
        """Endpoint UUID by endpoint name."""
        return {name: e["endpoint_id"] for name, e in self.state["endpoints"].items()}

    @property
    def globus(self) -> dict[str, str]:
        """The sites YAML's ``globus:`` section for this testbed."""
        return {"service": "testbed", "testbed_dir": str(self.directory)}

    def current(self) -> dict[str, Any]:
        """The state file now (process ids change when the testbed restarts a part)."""
        state: dict[str, Any] = json.loads((self.directory / "testbed.json").read_text())
        return state


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of our own on 127.0.0.1, with nothing saved to disk."""

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/test.sh installs it)"
        self.port = port or free_port()
        command = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        if password is not None:
            command += ["--requirepass", password]
        self.process = subprocess.Popen([*command, "--appendonly", "no"], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=password)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (it may have been killed already)."""
        self.process.terminate()
        self.process.wait(timeout=30)


def drain(queues: TaskQueues, topic: str = "default") -> list[Result]:
    """Every result waiting on ``topic``, in order."""
    results = []
    while True:
        try:
            results.append(queues.get_result(topic, timeout=0))
        except TimeoutException:
            return results


def colmena_fed(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``colmena-fed`` command of this venv."""
    command = [str(Path(sys.executable).parent / "colmena-fed"), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)


def pytest_configure(config: pytest.Config) -> None:
    """Let the Ctrl+C tests deliver SIGINT however the suite was started.

    A shell that runs the suite as a background job (``cmd &``, nohup) starts it with SIGINT
    ignored, which Python then leaves ignored, and every process it starts inherits. A
    handler installed here is reset to the default in each child at exec.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that need the testbed last, so it is up only while they run."""
    needs = [item for item in items if _needs_testbed(item)]
    items[:] = [item for item in items if not _needs_testbed(item)] + needs


def _needs_testbed(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    names = getattr(item, "fixturenames", ())
    return "testbed" in names or "globus" in params.values()


def _ours(process: psutil.Process, directory: Path, sessions: set[int]) -> bool:
    """Whether ``process`` belongs to the testbed in ``directory`` (or its endpoints)."""
    try:
        command = " ".join(process.info["cmdline"] or [])
        return os.getsid(process.pid) in sessions or str(directory) in command
    except (OSError, psutil.Error):
        return False


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestbed]:
    """The local Globus Compute stand-in; local-cpu.yaml, local-gpu.yaml and local-mpi.yaml are its
    endpoints.

    Started and stopped with the command line, as a user would; stopping must leave no process.
    """
    directory = tmp_path_factory.mktemp("testbed")
    yamls = [str(ENDPOINTS / f"local-{kind}.yaml") for kind in ("cpu", "gpu", "mpi")]
    up = colmena_fed(
        "testbed",
        "up",
        "--dir",
        str(directory),
        "--pythonpath",
        str(REPO / "tests"),
        "--endpoints",
        *yamls,
    )
    assert up.returncode == 0, up.stderr + up.stdout
    state = json.loads((directory / "testbed.json").read_text())
    yield RunningTestbed(directory, state)
    restarted = json.loads((directory / "testbed.json").read_text())  # new pids after restarts
    # Every task server is stopped by now, but the SDK's result watchers (one per task group,
    # shared by a process's Executors) stay connected; stopped after the broker, they would
    # retry it for half a minute before this process may exit.
    for watcher in list(sdk_executor._RESULT_WATCHERS.values()):
        watcher.shutdown(wait=False, cancel_futures=True)
    down = colmena_fed("testbed", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    sessions = {e["pid"] for s in (state, restarted) for e in s["endpoints"].values()}
    left = [p for p in psutil.process_iter(["cmdline"]) if _ours(p, directory, sessions)]
    assert not left, f"testbed processes left behind: {left}"


METHODS: list[MethodLike] = [
    blob,
    double,
    add,
    die,
    fail,
    nap,
    Method(nap, slot="gpu", name="gpu_nap"),
    Method(accelerator, slot="gpu"),
    Method(warm_model, slot="gpu"),
]


@pytest.fixture(scope="session", params=["local", "globus"])
def federation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TaskServer]:
    """One task server over a CPU site (2 slots) and a GPU site (1 slot), started once per
    backend: `local` sites, then `globus` sites through the testbed."""
    queues = TaskQueues(topics=TOPICS)
    bed = request.getfixturevalue("testbed") if request.param == "globus" else None
    config = federation_config(testbed=bed)
    server = TaskServer(queues, config, METHODS, run_dir=tmp_path_factory.mktemp("federation"))
    with server:
        queues.send_inputs(0, method="double", topic="other")
        queues.send_inputs(method="accelerator", topic="other")
        for _ in range(2):
            warm = queues.get_result("other", timeout=120)
            assert warm is not None
            assert warm.success
        yield server


@pytest.fixture
def queues(federation: TaskServer) -> Iterator[TaskQueues]:
    """The federation's queues; each test must leave them empty."""
    yield federation.queues
    assert federation.queues.wait_until_done(timeout=60), "a test left results behind"


def run_processes(pid: int, run_dir: Path) -> dict[int, psutil.Process]:
    """The processes of a run: its thinker's descendants, those that name its run directory
    (a worker pool, re-parented when its launcher exits) and theirs, and the thinker's guard."""
    found: dict[int, psutil.Process] = {}
    roots = [p for p in psutil.process_iter(["cmdline"]) if _names(p, str(run_dir), pid)]
    for root in roots:
        found[root.pid] = root
        for child in _children(root):
            found[child.pid] = child
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in _children(psutil.Process(pid)):
            found[child.pid] = child
    found.pop(pid, None)
    return found


def _names(process: psutil.Process, run_dir: str, pid: int) -> bool:
    words = process.info["cmdline"] or []
    guard = "colmena_fed.guard" in words and str(pid) in words
    return guard or any(run_dir in word for word in words)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def still_running(processes: dict[int, psutil.Process], within: float = 30.0) -> list[str]:
    """The command lines of ``processes`` still running after ``within`` seconds at most."""
    deadline = time.monotonic() + within
    alive = list(processes.values())
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    return [" ".join(p.cmdline()) for p in alive if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
