"""Large inputs and results through real ProxyStore stores (a directory, a Redis server)."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from uuid import uuid4

import pytest
import redis
import yaml
from conftest import ENDPOINTS, RedisServer, free_port
from proxystore.proxy import Proxy
from sample_methods import reverse, size

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.data import DataPlane
from colmena_fed.errors import ConfigError
from colmena_fed.stores import DataConfig

MB = 1_000_000


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A redis-server of our own on 127.0.0.1, shared by the module's tests."""
    server = RedisServer()
    yield server.port
    server.stop()


class Peers(NamedTuple):
    """Two ProxyStore endpoints, each in its own ProxyStore home as if on its own machine."""

    spec: dict[str, Any]
    thinker_home: Path
    site_home: Path

    def stored(self, *homes: Path) -> int:
        """Objects held by the endpoints of ``homes`` (default both; they persist to SQLite)."""
        count = 0
        for home in homes or (self.thinker_home, self.site_home):
            for database in home.glob("*/blobs.db"):
                with sqlite3.connect(database) as db:
                    count += db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
        return count


@pytest.fixture(scope="module")
def proxystore_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """A ProxyStore relay and two endpoints registered with it, relay auth off, on 127.0.0.1.

    The thinker's process finds one endpoint (``thinker_home``), a site's workers the other
    (``site_home``), so every object crosses from peer to peer through the relay.
    """
    bin_dir = Path(sys.executable).parent
    relay_port = free_port()
    logs = open(tmp_path_factory.mktemp("logs") / "proxystore.log", "w")  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [bin_dir / "proxystore-relay", "--host", "127.0.0.1", "--port", str(relay_port)],
            stdout=logs,
            stderr=subprocess.STDOUT,
        )
    ]
    uuids, homes = [], []
    for name in ("thinker-ep", "site-ep"):
        home = tmp_path_factory.mktemp(name)
        env = {**os.environ, "PROXYSTORE_HOME": str(home)}
        port = free_port()
        configure = [str(bin_dir / "proxystore-endpoint"), "configure", name, "--persist"]
        configure += ["--host", "127.0.0.1", "--port", str(port), "--no-relay-auth"]
        configure += ["--relay-address", f"ws://127.0.0.1:{relay_port}"]
        subprocess.run(configure, check=True, env=env, capture_output=True)
        found = re.search(r'^uuid = "(.+)"', (home / name / "config.toml").read_text(), re.M)
        assert found is not None
        processes.append(
            subprocess.Popen(
                [bin_dir / "proxystore-endpoint", "start", name, "--no-detach"],
                stdout=logs,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        uuids.append(found.group(1))
        homes.append(home)
    yield Peers({"kind": "endpoint", "endpoints": uuids}, homes[0], homes[1])
    for process in reversed(processes):
        process.terminate()
        process.wait(timeout=30)
    logs.close()


def site_home_endpoint_yaml(peers: Peers, tmp_path: Path) -> Path:
    """local-cpu.yaml whose workers find the site's ProxyStore endpoint, not the thinker's."""
    config = yaml.safe_load((ENDPOINTS / "local-cpu.yaml").read_text())
    config["engine"]["provider"]["worker_init"] = f"export PROXYSTORE_HOME={peers.site_home}"
    path = tmp_path / "site-cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stores(kind: str, tmp_path: Path, redis_port: int) -> dict[str, Any]:
    if kind == "file":
        return {"files": {"kind": "file", "path": str(tmp_path / "store")}}
    return {"cache": {"kind": "redis", "port": redis_port}}


def site(**extra: Any) -> dict[str, Any]:
    return {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 2}, **extra}


def take(queues: TaskQueues) -> Result:
    result = queues.get_result(timeout=180)
    assert result is not None
    return result


@pytest.mark.parametrize("kind", ["file", "redis", "endpoint"])
def test_50_mb_in_and_out_through_a_store_leave_it_empty(
    kind: str,
    tmp_path: Path,
    redis_port: int,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hpc = site()
    if kind == "endpoint":
        peers: Peers = request.getfixturevalue("proxystore_peers")
        monkeypatch.setenv("PROXYSTORE_HOME", str(peers.thinker_home))
        hpc["local"] = str(site_home_endpoint_yaml(peers, tmp_path))
        spec = {"peers": peers.spec}
    else:
        spec = stores(kind, tmp_path, redis_port)
    config = SitesConfig.from_dict(
        {"sites": {"hpc": hpc}, "data": {"threshold_bytes": MB, "stores": spec}}
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
    else:
        assert peers.stored() == 0


def test_a_kept_result_stays_at_the_site_endpoint_until_released_and_feeds_later_tasks(
    tmp_path: Path, proxystore_peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = proxystore_peers
    monkeypatch.setenv("PROXYSTORE_HOME", str(peers.thinker_home))
    config = SitesConfig.from_dict(
        {
            "sites": {"hpc": site(local=str(site_home_endpoint_yaml(peers, tmp_path)))},
            "data": {"threshold_bytes": MB, "stores": {"peers": peers.spec}},
        }
    )
    queues = TaskQueues()
    payload = b"k" * (3 * MB)
    with TaskServer(queues, config, [reverse, size], run_dir=tmp_path / "run") as server:
        assert server.data is not None
        queues.send_inputs(payload, method="reverse", keep_result=True)
        kept = take(queues)
        assert kept.success, kept.failure
        assert type(kept.value) is Proxy
        assert kept.data.resolve_result_s is None  # delivered unresolved
        # The worker put the result through the site's endpoint; the thinker's input is gone.
        server.data.flush()
        assert peers.stored(peers.site_home) == 1
        assert peers.stored(peers.thinker_home) == 0
        queues.send_inputs(kept.value, method="size")
        reused = take(queues)
        assert reused.value == 3 * MB
        assert reused.stores == ["peers"]
        assert peers.stored(peers.site_home) == 1  # still there for more tasks
        assert kept.value == payload[::-1]  # resolved on the thinker, from the other peer
        server.data.release(kept.value)
        assert peers.stored() == 0


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


def test_a_multi_store_steers_objects_by_size_and_by_tags(tmp_path: Path, redis_port: int) -> None:
    config = DataConfig.model_validate(
        {
            "threshold_bytes": 100_000,
            "topic_tags": {"models": ["model"]},
            "stores": {
                "tiered": {
                    "kind": "multi",
                    "members": [
                        {"store": "cache", "max_size_bytes": MB, "priority": 1},
                        {"store": "files", "tags": ["model"]},
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

    def files() -> int:
        return len([p for p in store_dir.iterdir() if p.suffix != ".ready"])

    try:
        task = Result(method="m", args=(b"s" * 200_000, b"l" * (2 * MB), 7))
        data.proxy_inputs(task)
        assert task.stores == ["tiered"]
        assert (cache.dbsize(), files()) == (1, 1)
        data.release_inputs(task)
        data.flush()
        assert task.args == (b"s" * 200_000, b"l" * (2 * MB), 7)
        assert (cache.dbsize(), files()) == (0, 0)
        # A small object with the tag 'model' goes where that tag is accepted, not by size.
        tagged = Result(method="m", topic="models", args=(b"w" * 200_000,))
        data.proxy_inputs(tagged)
        assert (cache.dbsize(), files()) == (0, 1)
        data.release_inputs(tagged)
        data.flush()
        model = data.share(b"w" * 200_000, tags=["model"])
        assert (cache.dbsize(), files()) == (0, 1)
        data.release(model)
        assert not any(store_dir.iterdir())
    finally:
        data.close()


def test_a_globus_store_needs_two_collections_and_a_globus_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = {"endpoint_path": "/proxystore", "local_path": str(tmp_path), "host_regex": ".*"}
    spec: dict[str, Any] = {"kind": "globus", "collections": [{"uuid": str(uuid4()), **collection}]}
    with pytest.raises(ConfigError, match="data store 'transfer', field 'collections': List"):
        SitesConfig.from_dict({"sites": {"hpc": site()}, "data": {"stores": {"transfer": spec}}})
    spec["collections"].append({"uuid": str(uuid4()), **collection})
    config = SitesConfig.from_dict(
        {"sites": {"hpc": site()}, "data": {"stores": {"transfer": spec}}}
    )
    monkeypatch.setenv("PROXYSTORE_HOME", str(tmp_path / "no-login"))
    monkeypatch.delenv("PROXYSTORE_GLOBUS_CLIENT_ID", raising=False)
    monkeypatch.delenv("PROXYSTORE_GLOBUS_CLIENT_SECRET", raising=False)
    queues = TaskQueues()
    server = TaskServer(queues, config, [size], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"store 'transfer' \(globus\): this machine has no"):
        server.start()


def test_a_multi_store_member_must_be_another_plain_store() -> None:
    spec = {"kind": "multi", "members": [{"store": "nowhere"}]}
    with pytest.raises(ValueError, match="member 'nowhere' must name a file, redis, endpoint or"):
        DataConfig.model_validate({"stores": {"tiered": spec}})
