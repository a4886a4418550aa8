"""Large inputs and results through real ProxyStore stores (a directory, a Redis server)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import ENDPOINTS
from sample_methods import reverse, size

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.data import DataConfig, DataPlane

MB = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A redis-server of our own on 127.0.0.1, with nothing saved to disk."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (scripts/setup.sh installs it)"
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield port
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def proxystore_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A ProxyStore relay and one endpoint registered with it, relay auth off, on 127.0.0.1.

    Yields the store spec of the sites YAML for it.
    """
    home = tmp_path_factory.mktemp("proxystore-home")
    env = {**os.environ, "PROXYSTORE_HOME": str(home)}
    bin_dir = Path(sys.executable).parent
    relay_port, endpoint_port = free_port(), free_port()
    logs = open(home / "processes.log", "w")  # noqa: SIM115 (closed at teardown)
    relay = subprocess.Popen(
        [bin_dir / "proxystore-relay", "--host", "127.0.0.1", "--port", str(relay_port)],
        stdout=logs,
        stderr=subprocess.STDOUT,
        env=env,
    )
    configure = [str(bin_dir / "proxystore-endpoint"), "configure", "ep1", "--host", "127.0.0.1"]
    configure += ["--port", str(endpoint_port), "--relay-address", f"ws://127.0.0.1:{relay_port}"]
    subprocess.run([*configure, "--no-relay-auth"], check=True, env=env, capture_output=True)
    uuid = re.search(r'^uuid = "(.+)"', (home / "ep1" / "config.toml").read_text(), re.M)
    assert uuid is not None
    endpoint = subprocess.Popen(
        [bin_dir / "proxystore-endpoint", "start", "ep1", "--no-detach"],
        stdout=logs,
        stderr=subprocess.STDOUT,
        env=env,
    )
    spec = {"kind": "endpoint", "endpoints": [uuid.group(1)], "proxystore_dir": str(home)}
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", endpoint_port), timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    yield spec
    for process in (endpoint, relay):
        process.terminate()
        process.wait(timeout=30)
    logs.close()


def stores(
    kind: str, tmp_path: Path, redis_port: int, endpoint: dict[str, Any] | None = None
) -> dict[str, Any]:
    if kind == "file":
        return {"files": {"kind": "file", "path": str(tmp_path / "store")}}
    if kind == "endpoint":
        assert endpoint is not None
        return {"peers": endpoint}
    return {"cache": {"kind": "redis", "port": redis_port}}


def site(**extra: Any) -> dict[str, Any]:
    return {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 2}, **extra}


def take(queues: TaskQueues) -> Result:
    result = queues.get_result(timeout=180)
    assert result is not None
    return result


@pytest.mark.parametrize("kind", ["file", "redis", "endpoint"])
def test_50_mb_in_and_out_through_a_store_leave_it_empty(
    kind: str, tmp_path: Path, redis_port: int, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue("proxystore_endpoint") if kind == "endpoint" else None
    spec = stores(kind, tmp_path, redis_port, endpoint)
    config = SitesConfig.from_dict(
        {"sites": {"hpc": site()}, "data": {"threshold_bytes": MB, "stores": spec}}
    )
    queues = TaskQueues()
    payload = bytes(range(256)) * (50 * MB // 256 + 1)  # just over 50 MB
    with TaskServer(queues, config, [reverse], run_dir=tmp_path / "run"):
        queues.send_inputs(payload, method="reverse", input_kwargs={})
        result = take(queues)
        assert result.success, result.failure
        assert type(result.value) is bytes
        assert result.value == payload[::-1]
        assert result.args == (payload,)  # the record keeps the input itself, not a dead proxy
        data = result.data
        assert data.input_bytes is not None
        assert data.input_bytes > 50 * MB
        assert data.result_bytes is not None
        assert data.result_bytes > 50 * MB
        for spent in (data.proxy_inputs_s, data.resolve_inputs_s, data.proxy_result_s):
            assert spent is not None
        assert data.resolve_result_s is not None
        assert result.stores == [next(iter(config.data.stores))]
    if kind == "file":
        assert not any((tmp_path / "store").iterdir())
    elif kind == "redis":
        assert redis.Redis(port=redis_port).dbsize() == 0
    # An endpoint lists no keys; the file and redis cases check that eviction empties a store.


def test_large_inputs_run_only_where_their_store_is_reachable(
    tmp_path: Path, redis_port: int
) -> None:
    config = SitesConfig.from_dict(
        {
            "sites": {"east": site(stores=["files"]), "west": site(stores=["cache"])},
            "data": {
                "threshold_bytes": MB,
                "stores": {**stores("file", tmp_path, 0), **stores("redis", tmp_path, redis_port)},
            },
            "scheduler": {"status_period": 0.5},
        }
    )
    queues = TaskQueues()
    with TaskServer(queues, config, [size], run_dir=tmp_path / "run"):
        for _ in range(4):
            queues.send_inputs(b"x" * (2 * MB), method="size")
            queues.send_inputs(b"x", method="size")
        pinned = queues.send_inputs(b"x" * (2 * MB), method="size", site="west")
        results = [take(queues) for _ in range(9)]
    by_id = {r.task_id: r for r in results}
    refused = by_id.pop(pinned)
    assert refused.failure is not None
    assert refused.failure.kind == "rejected"
    assert "store(s) files, which no site offering a 'cpu' slot reaches" in refused.failure.message
    large = [r for r in by_id.values() if r.value == 2 * MB]
    assert len(large) == 4
    assert {r.site for r in large} == {"east"}
    assert all(r.stores == ["files"] for r in large)
    assert not any((tmp_path / "store").iterdir())


def test_a_store_name_a_site_cannot_know_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="site 'east', field 'stores': no store named 'nfs'"):
        SitesConfig.from_dict(
            {
                "sites": {"east": site(stores=["nfs"])},
                "data": {"stores": stores("file", tmp_path, 0)},
            }
        )


def test_shared_objects_are_put_once_and_untaken_results_do_not_outlive_the_server(
    tmp_path: Path,
) -> None:
    config = SitesConfig.from_dict(
        {"sites": {"hpc": site()}, "data": {"stores": stores("file", tmp_path, 0)}}
    )
    queues = TaskQueues()
    store_dir = tmp_path / "store"
    with TaskServer(queues, config, [size, reverse], run_dir=tmp_path / "run") as server:
        assert server.data is not None
        model = server.data.share(b"m" * (5 * MB))
        for _ in range(3):
            queues.send_inputs(model, method="size")
        results = [take(queues) for _ in range(3)]
        assert [r.value for r in results] == [5 * MB] * 3
        assert all(r.stores == ["files"] for r in results)
        objects = [p for p in store_dir.iterdir() if p.suffix != ".ready"]
        assert len(objects) == 1  # put once, and still there for more tasks
        server.data.release(model)
        assert not any(store_dir.iterdir())
        with pytest.raises(ValueError, match="released already"):
            server.data.release(model)
        queues.send_inputs(b"r" * (2 * MB), method="reverse")
        while server.counts["hpc"].done < 4:  # the result came back, and nobody takes it
            time.sleep(0.05)
        assert any(store_dir.iterdir())
    assert not any(store_dir.iterdir())


def test_a_multi_store_puts_small_objects_in_one_member_and_large_in_another(
    tmp_path: Path, redis_port: int
) -> None:
    config = DataConfig.model_validate(
        {
            "threshold_bytes": 100_000,
            "stores": {
                "tiered": {
                    "kind": "multi",
                    "members": [
                        {"store": "cache", "max_size_bytes": MB, "priority": 1},
                        {"store": "files"},
                    ],
                },
                **stores("file", tmp_path, 0),
                **stores("redis", tmp_path, redis_port),
            },
        }
    )
    data = DataPlane(config, {"hpc": ["tiered"]})
    data.start()
    cache = redis.Redis(port=redis_port)
    store_dir = tmp_path / "store"
    try:
        task = Result(method="m", args=(b"s" * 200_000, b"l" * (2 * MB), 7))
        data.proxy_inputs(task)
        assert task.stores == ["tiered"]
        assert cache.dbsize() == 1
        assert len([p for p in store_dir.iterdir() if p.suffix != ".ready"]) == 1
        data.evict_inputs(task)
        assert task.args == (b"s" * 200_000, b"l" * (2 * MB), 7)
        assert cache.dbsize() == 0
        assert not any(store_dir.iterdir())
    finally:
        data.close()


def test_a_multi_store_member_must_be_another_plain_store() -> None:
    spec = {"kind": "multi", "members": [{"store": "nowhere"}]}
    with pytest.raises(ValueError, match="member 'nowhere' must name a file, redis or endpoint"):
        DataConfig.model_validate({"stores": {"tiered": spec}})
