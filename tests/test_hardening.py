"""Bad input, methods that go wrong on the worker, and what a run keeps private (issue 17)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import ENDPOINTS, RedisServer, free_port
from proxystore.store import Store
from sample_methods import double, open_socket, size

from colmena_fed import SitesConfig, TaskQueues, TaskServer
from colmena_fed.endpoints.validate import validate
from colmena_fed.errors import ConfigError
from colmena_fed.stores import connector
from colmena_fed.testbed.service import HOST, PORT
from colmena_fed.testbed.token import read_token

SIM_SITES = {"cpu": {"sim": {"workers": {"cpu": 2}}, "resources": {"cpu": 2}}}


def sim_sites() -> SitesConfig:
    return SitesConfig.from_dict({"sites": SIM_SITES})


def stores(specs: dict[str, Any]) -> dict[str, Any]:
    """The data stores a sites YAML with these ``stores:`` declares."""
    return dict(SitesConfig.from_dict({"sites": SIM_SITES, "data": {"stores": specs}}).data.stores)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"topic": ["a", "b"]}, r"topic=\['a', 'b'\]: a topic is one name"),
        ({"input_kwargs": [1, 2]}, r"input_kwargs=\[1, 2\]: keyword inputs are a dict"),
        ({"resources": 5}, r"resources=5: pass a slot kind"),
        ({"priority": True}, r"priority=True: pass an integer"),
        ({"priority": "5"}, r"priority='5': pass an integer"),
        ({"max_retries": True}, r"max_retries=True: pass an integer"),
    ],
    ids=["topic", "input_kwargs", "resources", "priority-bool", "priority-str", "max_retries"],
)
def test_send_inputs_names_the_argument_it_cannot_take(given: dict[str, Any], message: str) -> None:
    queues = TaskQueues()
    with pytest.raises(TypeError, match=message):
        queues.send_inputs(1, method="double", **given)
    assert queues.active_count == 0


def test_a_sites_yaml_that_is_not_utf8_names_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_bytes(b"sites:\n  caf\xe9:\n    sim: {}\n")
    with pytest.raises(ConfigError, match=rf"{path}: line 2: the sites YAML is not UTF-8"):
        SitesConfig.from_yaml(path)
    endpoint = tmp_path / "endpoint.yaml"
    endpoint.write_bytes(b"engine:\n  type: GlobusComputeEngine  # \xff\n")
    (problem,) = validate(endpoint, {})
    assert "line 2: the endpoint YAML is not UTF-8" in str(problem)


def test_a_capacity_watcher_may_add_a_watcher() -> None:
    told: list[tuple[str, int]] = []
    with TaskServer(TaskQueues(), sim_sites(), [double]) as server:

        def outer(slots: int) -> None:
            told.append(("outer", slots))
            if len(told) == 1:
                server.watch_capacity("cpu", lambda n: told.append(("inner", n)))

        watcher = threading.Thread(target=server.watch_capacity, args=("cpu", outer))
        watcher.start()
        watcher.join(30)
        assert not watcher.is_alive()
    assert told == [("outer", 2), ("inner", 2)]


def test_a_return_value_that_cannot_be_sent_back_is_one_user_failure(tmp_path: Path) -> None:
    sites = {"cpu-site": {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 1}}}
    queues = TaskQueues()
    with TaskServer(queues, SitesConfig.from_dict({"sites": sites}), [open_socket, double]):
        queues.send_inputs(free_port(), method="open_socket")
        failed = queues.get_result(timeout=120)
        queues.send_inputs(3, method="double")
        after = queues.get_result(timeout=120)
    assert failed.failure is not None
    assert failed.failure.kind == "user"
    assert "method 'open_socket' returned a socket.socket" in failed.failure.message
    assert len(failed.attempts) == 1, "a method's fault is not retried"
    assert after.value == 6, "the site was not blamed"


def test_a_method_whose_globals_cannot_be_pickled_is_named_at_start() -> None:
    import socket

    namespace: dict[str, Any] = {"__name__": "__main__", "conn": socket.socket()}
    exec("def talk(x):\n    return conn.fileno() + x\n", namespace)  # a script's function
    server = TaskServer(TaskQueues(), sim_sites(), [namespace["talk"]])
    with pytest.raises(TypeError, match=r"method 'talk' cannot be sent to the sites: .*socket"):
        server.start()
    namespace["conn"].close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_store_keeps_its_objects_to_its_user(tmp_path: Path) -> None:
    specs = stores({"shared": {"kind": "file", "path": str(tmp_path / "objects")}})
    with Store("private-file", connector("shared", specs)) as store:
        key = store.put(b"a result")
        assert store.get(key) == b"a result"
    directory = tmp_path / "objects"
    assert mode(directory) == 0o700
    assert {mode(p) for p in directory.iterdir()} == {0o600}


def test_a_redis_store_logs_in_with_a_password_kept_out_of_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-for-this-test"
    server = RedisServer(password=secret)
    try:
        spec = {"kind": "redis", "port": server.port, "password_env": "CF_TEST_REDIS_PASSWORD"}
        by_env = stores({"r": spec})
        with pytest.raises(ConfigError, match="'CF_TEST_REDIS_PASSWORD', which is not set"):
            connector("r", by_env)
        monkeypatch.setenv("CF_TEST_REDIS_PASSWORD", secret)
        with Store("private-redis", connector("r", by_env)) as store:
            key = store.put([1, 2, 3])
            assert store.get(key) == [1, 2, 3]
            assert secret not in repr(store.config())
        password_file = tmp_path / "redis.password"
        password_file.write_text(secret + "\n")
        password_file.chmod(0o644)
        file_spec = {"kind": "redis", "port": server.port, "password_file": str(password_file)}
        by_file = stores({"f": file_spec})
        with pytest.raises(ConfigError, match=r"may be read by others .*chmod 600"):
            connector("f", by_file)
        password_file.chmod(0o600)
        redis_store = connector("f", by_file)
        key = redis_store.put(b"x")
        assert redis_store.get(key) == b"x"
    finally:
        server.stop()


def test_testbed_state_is_private(testbed: Any) -> None:
    directory = Path(testbed.directory)
    assert mode(directory) == 0o700
    assert mode(directory / "service.sqlite") == 0o600


def test_run_files_are_private(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with TaskServer(TaskQueues(), sim_sites(), [double], run_dir=run_dir):
        pass
    assert mode(run_dir) == 0o700
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files
    assert {mode(p) for p in files} == {0o600}, {str(p): oct(mode(p)) for p in files}
    assert not [p for p in run_dir.rglob("*") if p.is_dir() and mode(p) & 0o077]


def test_sites_yaml_with_both_password_sources_is_refused() -> None:
    spec = {"kind": "redis", "password_env": "A", "password_file": "/x"}
    with pytest.raises(ConfigError, match="password_env or password_file, not both"):
        stores({"r": spec})


def test_the_testbed_answers_only_requests_with_its_token(testbed: Any) -> None:
    directory = Path(testbed.directory)
    assert mode(directory / "token") == 0o600
    for token in (None, "not-the-token", read_token(directory)):
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        status = http_status("GET", "/v2/get_amqp_result_connection_url", headers)
        assert status == (200 if token == read_token(directory) else 401)
    assert http_status("POST", "/v3/endpoints", {}) == 401


def http_status(method: str, route: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{HOST}:{PORT}{route}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


#: Run as another user: print, per path, whether it could be read; then ask the testbed for
#: its broker URL without a token.
PROBE = """
import sys, urllib.request, urllib.error
for path in sys.argv[2:]:
    try:
        open(path, 'rb').read(1)
        print('read', path)
    except OSError:
        print('denied', path)
try:
    urllib.request.urlopen(sys.argv[1] + '/v2/get_amqp_result_connection_url', timeout=10)
    print('broker url given')
except urllib.error.HTTPError as exc:
    print('broker url refused', exc.code)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a second Unix user needs root")
def test_another_user_reads_no_run_file_no_store_object_and_no_broker_url(testbed: Any) -> None:
    shared = Path(tempfile.mkdtemp(prefix="cf-shared-", dir="/tmp"))
    user = f"cf{secrets.token_hex(4)}"
    try:
        shared.chmod(0o755)  # anyone may enter: only colmena-fed's own modes protect its files
        control = shared / "public.txt"
        control.write_text("anyone may read this")
        control.chmod(0o644)
        run_dir = shared / "run"
        with TaskServer(TaskQueues(), sim_sites(), [double], run_dir=run_dir):
            pass
        specs = stores({"shared": {"kind": "file", "path": str(shared / "objects")}})
        with Store("other-user-file", connector("shared", specs)) as store:
            store.put(b"a result")
        written = (*run_dir.rglob("*"), *(shared / "objects").rglob("*"))
        private = [p for p in written if p.is_file()]
        assert private
        subprocess.run(["useradd", "--no-create-home", user], check=True)
        uid = pwd.getpwnam(user).pw_uid
        probe = subprocess.run(
            [
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "/usr/bin/python3", "-c", PROBE, f"http://{HOST}:{PORT}", str(control),
                *map(str, private),
            ],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    finally:
        subprocess.run(["userdel", user], check=False, capture_output=True)
        shutil.rmtree(shared)
    lines = probe.stdout.splitlines()
    assert lines[0] == f"read {control}", probe.stdout
    assert lines[1:-1] == [f"denied {p}" for p in private]
    assert lines[-1] == "broker url refused 401"


def test_a_redis_store_that_stops_answering_fails_the_task_instead_of_blocking() -> None:
    server = RedisServer()
    try:
        store = {"kind": "redis", "port": server.port, "timeout_s": 1}
        sites = {"cpu": {**SIM_SITES["cpu"], "stores": ["cache"]}}
        data = {"stores": {"cache": store}, "threshold_bytes": 100}
        config = SitesConfig.from_dict({"sites": sites, "data": data})
        queues = TaskQueues()
        with TaskServer(queues, config, [size]) as running:
            server.process.send_signal(signal.SIGSTOP)  # alive, but answering nothing
            try:
                queues.send_inputs(b"x" * 1000, method="size")
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert running.world is not None
            running.world.run()
            result = queues.get_result(timeout=5)
        assert result.failure is not None
        assert "cannot put the inputs of task" in result.failure.message
        assert "Timeout" in result.failure.message
    finally:
        server.stop()


def test_a_local_site_whose_endpoint_yaml_has_an_error_is_refused_at_start(
    tmp_path: Path,
) -> None:
    endpoint = tmp_path / "misspelt.yaml"
    text = (ENDPOINTS / "local-cpu.yaml").read_text()
    endpoint.write_text(text.replace("strategy_period: 1", "strategy_perod: 1"))
    sites = {"cpu-site": {"local": str(endpoint), "resources": {"cpu": 1}}}
    queues = TaskQueues()
    queues.send_inputs(1, method="double")  # sent before start: it is kept, not lost
    server = TaskServer(queues, SitesConfig.from_dict({"sites": sites}), [double])
    with pytest.raises(
        ConfigError,
        match=rf"site 'cpu-site': {endpoint}: engine.job_status_kwargs.strategy_perod: error: "
        r"unknown key \(did you mean 'strategy_period'\?\)",
    ):
        server.start()
    assert queues.active_count == 1
