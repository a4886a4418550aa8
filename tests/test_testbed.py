"""The local Globus Compute stand-in: its command line, and campaigns surviving its restarts."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ENDPOINTS, RunningTestbed, colmena_fed, federation_config
from sample_methods import double, nap, size

from colmena_fed import Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.backends.globus import GlobusBackend, ServiceClients
from colmena_fed.testbed.service import HOST, PORT
from colmena_fed.testbed.token import read_token

FAULTS = f"http://{HOST}:{PORT}/testbed/faults"


def test_status_shows_each_endpoint_online_and_the_sites_yaml_uses_them(
    testbed: RunningTestbed,
) -> None:
    deadline = time.monotonic() + 60
    expected = {"local-cpu": 2, "local-gpu": 1, "local-mpi": 1}
    while True:  # workers connect after the endpoint's first heartbeat
        shown = colmena_fed("testbed", "status", "--dir", str(testbed.directory), "--json")
        assert shown.returncode == 0, shown.stderr
        endpoints = json.loads(shown.stdout)["endpoints"]
        workers = {name: e["workers"] for name, e in endpoints.items()}
        if workers == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {name: e["status"] for name, e in endpoints.items()} == {
        "local-cpu": "online",
        "local-gpu": "online",
        "local-mpi": "online",
    }
    assert endpoints["local-cpu"]["workers"] == 2
    assert endpoints["local-gpu"]["workers"] == 1
    sites = SitesConfig.from_yaml(testbed.state["sites"])
    assert sites.globus.service == "testbed"
    assert {n: str(s.endpoint) for n, s in sites.sites.items()} == testbed.endpoints
    assert {n: s.resources for n, s in sites.sites.items()} == {
        "local-cpu": {"cpu": 2},
        "local-gpu": {"gpu": 1},
        "local-mpi": {"nodes": 1},
    }
    assert sites.sites["local-mpi"].nodes_per_block == 1
    table = colmena_fed("testbed", "status", "--dir", str(testbed.directory))
    assert testbed.endpoints["local-gpu"] in table.stdout


def test_a_second_testbed_in_the_same_directory_is_refused(testbed: RunningTestbed) -> None:
    cpu = str(ENDPOINTS / "local-cpu.yaml")
    again = colmena_fed("testbed", "up", "--dir", str(testbed.directory), "--endpoints", cpu)
    assert again.returncode != 0
    assert "a testbed is already up" in again.stderr


def test_status_and_down_without_a_testbed_say_so(tmp_path: Path) -> None:
    shown = colmena_fed("testbed", "status", "--dir", str(tmp_path))
    assert shown.returncode != 0
    assert f"no testbed is up in {tmp_path}" in shown.stderr
    down = colmena_fed("testbed", "down", "--dir", str(tmp_path))
    assert down.returncode == 0
    assert "no testbed is up" in down.stdout


def test_a_restart_of_the_service_mid_run_loses_no_task(
    testbed: RunningTestbed, tmp_path: Path
) -> None:
    queues = TaskQueues()
    server = TaskServer(queues, federation_config(testbed=testbed), [nap], run_dir=tmp_path)
    service = testbed.current()["service_pid"]
    with server:
        sent = [queues.send_inputs(0.1, method="nap") for _ in range(40)]
        results: list[Result] = []
        while len(results) < 10:
            result = queues.get_result(timeout=120)
            assert result is not None
            results.append(result)
        os.kill(service, signal.SIGKILL)
        while len(results) < len(sent):
            result = queues.get_result(timeout=120)
            assert result is not None, f"{len(results)} of {len(sent)} results arrived"
            results.append(result)
    assert Counter(r.task_id for r in results) == Counter(sent)
    assert all(r.success for r in results), [r.failure for r in results if not r.success]
    deadline = time.monotonic() + 30
    while testbed.current()["service_pid"] in (service, None):
        assert time.monotonic() < deadline, "the testbed did not restart its service"
        time.sleep(0.5)


def inject(testbed: RunningTestbed, route: str, status: int, times: int) -> None:
    """Make the testbed service answer the next ``times`` requests to ``route`` with ``status``."""
    body = json.dumps({"route": route, "status": status, "times": times}).encode()
    token = read_token(testbed.directory)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    request = urllib.request.Request(FAULTS, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_a_status_poll_is_tried_once_and_a_service_blip_keeps_the_last_report(
    testbed: RunningTestbed, tmp_path: Path
) -> None:
    """A poll that retried through an outage would hold the client, and the report, back.

    A failed poll after a good one keeps that report, with its time: the task server's
    staleness limit, not one failed request, decides when the site's tasks are re-placed.
    """
    config = federation_config(testbed=testbed)
    backend = GlobusBackend("cpu-site", config.sites["cpu-site"], ServiceClients(config.globus))
    backend.start(tmp_path, lambda status: None)
    try:
        inject(testbed, "endpoint_status", 503, times=1)
        during = backend.status()
        after = backend.status()
        inject(testbed, "endpoint_status", 503, times=1)
        kept = backend.status()
    finally:
        backend.shutdown()
    assert not during.online
    assert "503" in during.detail
    assert after.online, after.detail
    assert kept.online
    assert kept.updated == after.updated
    assert "503" in kept.detail


def test_a_refused_batch_halves_the_batch_size_once_and_its_tasks_are_retried(
    testbed: RunningTestbed, tmp_path: Path
) -> None:
    queues = TaskQueues()
    config = federation_config(cpu_slots=8, testbed=testbed)
    with TaskServer(queues, config, [double], run_dir=tmp_path) as server:
        queues.send_inputs(1, method="double")
        assert queues.get_result(timeout=120) is not None
        inject(testbed, "submit", 413, times=1)  # the service refuses the next batch as too large
        sent = [queues.send_inputs(i, method="double") for i in range(8)]
        results = [queues.get_result(timeout=120) for _ in sent]
        batch_size = server.backends["cpu-site"]._batch_size  # type: ignore[attr-defined]
    assert all(r is not None and r.success for r in results)
    assert any(r is not None and r.retries for r in results)
    assert batch_size == config.sites["cpu-site"].batch_size // 2


@pytest.fixture
def doubling(testbed: RunningTestbed, tmp_path: Path) -> Iterator[TaskQueues]:
    """The queues of a task server over the testbed's sites, warmed by one task of 'double'."""
    queues = TaskQueues()
    with TaskServer(queues, federation_config(testbed=testbed), [double], run_dir=tmp_path):
        queues.send_inputs(1, method="double")
        warm = queues.get_result(timeout=120)
        assert warm is not None
        assert warm.value == 2
        yield queues


def test_globus_errors_become_clear_reasons_and_the_tasks_are_retried(
    doubling: TaskQueues, testbed: RunningTestbed
) -> None:
    queues = doubling
    inject(testbed, "submit", 401, times=1)  # the login expired
    queues.send_inputs(2, method="double")
    expired = queues.get_result(timeout=120)
    assert expired is not None
    assert expired.success, expired.failure
    assert expired.value == 4
    assert expired.retries == 1
    reason = expired.attempts[0].reason
    assert reason is not None
    assert "Globus Compute answered 401" in reason
    assert "login expired" in reason
    inject(testbed, "submit", 429, times=1)  # rate limited: the SDK waits and sends again
    queues.send_inputs(3, method="double")
    limited = queues.get_result(timeout=120)
    assert limited is not None
    assert limited.value == 6
    assert limited.retries == 0


def test_tasks_held_back_by_a_failed_submission_are_sent_again(
    doubling: TaskQueues, testbed: RunningTestbed
) -> None:
    """A failed submission stops the SDK's Executor with tasks of other resource
    specifications still unsent: they come back and are sent again, none is lost."""
    queues = doubling
    inject(testbed, "submit", 401, times=1)
    specs = [None, {"priority": 1}] * 3
    sent = [
        queues.send_inputs(i, method="double", resources={"specification": spec})
        for i, spec in enumerate(specs)
    ]
    results = [queues.get_result(timeout=120) for _ in sent]
    assert all(r is not None and r.success for r in results), [r and r.failure for r in results]
    assert sorted(r.value for r in results if r is not None) == [2 * i for i in range(6)]
    reasons = [a.reason or "" for r in results if r is not None for a in r.attempts]
    assert any("401" in reason for reason in reasons)


def test_batches_of_large_inputs_stay_under_the_submission_limit(
    testbed: RunningTestbed, tmp_path: Path
) -> None:
    """Each input fits Globus Compute's 10 MB limit, a few together do not: the site sends
    them in batches small enough, so none is refused."""
    site = {"endpoint": testbed.endpoints["local-cpu"], "resources": {"cpu": 8}, "prefetch": 6}
    config = SitesConfig.from_dict({"sites": {"cpu": site}, "globus": testbed.globus})
    queues = TaskQueues()
    with TaskServer(queues, config, [size], run_dir=tmp_path):
        for _ in range(8):
            queues.send_inputs(b"x" * 3_000_000, method="size")
        results = [queues.get_result(timeout=120) for _ in range(8)]
    assert [r.value if r is not None else None for r in results] == [3_000_000] * 8
    assert all(r is not None and r.retries == 0 for r in results), [
        r.attempts for r in results if r is not None
    ]
