"""Intermediate results: streaming methods, their channels, exactly once and in order."""

from __future__ import annotations

import pickle
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import ENDPOINTS, RedisServer, RunningTestbed, colmena_fed
from sample_methods import count_up, double, emit_squares, emit_unmarked

from colmena_fed import (
    ConfigError,
    Method,
    PythonGeneratorMethod,
    Result,
    SitesConfig,
    TaskQueues,
    TaskServer,
)
from colmena_fed.journal import DELIVERIES_NAME, FILE_NAME, Journal, RunIdentity, read
from colmena_fed.methods import MethodLike
from colmena_fed.models import Attempt


@pytest.fixture
def channel_redis() -> Any:
    """A redis-server for the channel."""
    server = RedisServer()
    yield server
    server.stop()


def one_site(
    site: dict[str, Any], port: int, extra: dict[str, Any] | None = None, **data: Any
) -> SitesConfig:
    """One site named cpu-site, streaming through channel 'stream' on the Redis at ``port``.

    ``data`` joins the ``data:`` section, ``extra`` the top level.
    """
    channel = {"kind": "redis", "port": port, "timeout_s": 1, "lost_after_s": 2}
    config: dict[str, Any] = {"sites": {"cpu-site": {"resources": {"cpu": 2}, **site}}}
    config["data"] = {"channels": {"stream": channel}, **data}
    config["scheduler"] = {"status_period": 0.5}
    return SitesConfig.from_dict({**config, **(extra or {})})


def by_task(queues: TaskQueues, timeout: float = 120) -> dict[str, list[Result]]:
    """Every result until no task is active, grouped by task in the order they came."""
    results: dict[str, list[Result]] = defaultdict(list)
    while queues.active_count:
        result = queues.get_result(timeout=timeout)
        if result.sequence is not None:
            assert queues.active_count > 0  # an intermediate result leaves its task active
        results[result.task_id].append(result)
    return results


def sequences(results: list[Result]) -> list[int | None]:
    return [result.sequence for result in results]


@pytest.mark.parametrize("backend", ["local", "globus"])
def test_intermediate_results_reach_the_thinker_in_order_before_the_final_one(
    tmp_path: Path, channel_redis: RedisServer, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "globus":
        bed: RunningTestbed = request.getfixturevalue("testbed")
        site: dict[str, Any] = {"endpoint": bed.endpoints["local-cpu"]}
        extra = {"globus": bed.globus}
    else:
        site, extra = {"local": str(ENDPOINTS / "local-cpu.yaml")}, {}
    store = {"files": {"kind": "file", "path": str(tmp_path / "store")}}
    config = one_site(site, channel_redis.port, extra, stores=store, threshold_bytes=1000)
    queues = TaskQueues()
    methods: list[MethodLike] = [
        count_up,
        Method(emit_squares, streams=True),
        PythonGeneratorMethod(count_up, "streamed", streaming_queue=queues),
        PythonGeneratorMethod(count_up, "collected", store_return_value=True),
        emit_unmarked,
    ]
    run_dir = tmp_path / "run"
    with TaskServer(queues, config, methods, run_dir=run_dir):
        # Values of 3000 bytes: through the store.
        large = queues.send_inputs(4, input_kwargs={"size": 3000}, method="count_up")
        squares = queues.send_inputs(3, method="emit_squares")
        streamed = queues.send_inputs(2, method="streamed")
        collected = queues.send_inputs(3, method="collected")
        unmarked = queues.send_inputs(method="emit_unmarked")
        results = by_task(queues)
    assert sequences(results[large]) == [0, 1, 2, 3, None]
    assert [r.value for r in results[large][:4]] == [bytes([i]) * 3000 for i in range(4)]
    assert [r.complete for r in results[large]] == [False] * 4 + [True]
    final = results[large][-1]
    assert (final.value, final.intermediates, final.success) == ("counted 4", 4, True)
    assert [r.value for r in results[squares]] == [0, 1, 4, 3]
    assert [r.value for r in results[streamed]] == [0, 1, None]  # Colmena: no return value
    assert [r.value for r in results[collected]] == [([0, 1, 2], "counted 3")]
    (refused,) = results[unmarked]
    assert refused.failure is not None
    assert refused.failure.kind == "user"
    assert "Method(function, streams=True)" in refused.failure.message
    rows = [row for row in read(run_dir / FILE_NAME).events if row[1] == "intermediate"]
    assert len(rows) == 4 + 3 + 2
    delivered = (run_dir / DELIVERIES_NAME).read_text()
    assert f"{large}/3 " in delivered


def test_a_streaming_task_runs_only_where_a_channel_reaches_simulated(
    channel_redis: RedisServer,
) -> None:
    near = {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}, "channels": ["stream"]}
    far = {"sim": {"workers": {"cpu": 4}, "speed": 4}, "resources": {"cpu": 4}, "channels": []}
    channel = {"kind": "redis", "port": channel_redis.port}
    config = SitesConfig.from_dict(
        {
            "sites": {"near": near, "far": far},
            "data": {"channels": {"stream": channel}},
            "sim": {"intermediates": {"count_up": 3}},
        }
    )
    queues = TaskQueues()
    with TaskServer(queues, config, [count_up, double]) as server:
        assert server.world is not None
        streaming = [queues.send_inputs(3, method="count_up") for _ in range(3)]
        plain = [queues.send_inputs(i, method="double") for i in range(8)]
        server.world.run()
        results = by_task(queues)
    for task_id in streaming:
        assert [r.value for r in results[task_id][:3]] == [0, 1, 2]  # the sequence numbers
        assert sequences(results[task_id]) == [0, 1, 2, None]
        assert results[task_id][-1].site == "near"
        assert results[task_id][-1].intermediates == 3
    assert "far" in {results[task_id][-1].site for task_id in plain}  # preferred, when it may


def test_a_channel_killed_mid_stream_delivers_nothing_twice(
    tmp_path: Path, channel_redis: RedisServer
) -> None:
    config = one_site({"local": str(ENDPOINTS / "local-cpu.yaml")}, channel_redis.port)
    queues = TaskQueues()
    with TaskServer(queues, config, [Method(count_up, max_retries=2)], run_dir=tmp_path / "r"):
        # Killed and back at once: the task recovers (the stream of a retry, if the restarted
        # Redis lost values, is taken from where the thinker was).
        recovers = queues.send_inputs(20, 0.1, method="count_up")
        first = [queues.get_result(timeout=60) for _ in range(5)]
        channel_redis.process.kill()
        channel_redis.process.wait()
        time.sleep(0.3)
        restarted = RedisServer(port=channel_redis.port)
        rest = by_task(queues)[recovers]
        # Killed for good: the task ends as a failure naming the channel, after its retries.
        fails = queues.send_inputs(20, 0.1, max_retries=1, method="count_up")
        early = [queues.get_result(timeout=60) for _ in range(3)]
        restarted.process.kill()
        failed = by_task(queues)[fails]
        restarted.stop()
    assert sequences(first + rest) == [*range(20), None]
    assert first[0].task_id == recovers
    assert rest[-1].value == "counted 20"
    streamed = sequences(early + failed)
    assert streamed[-1] is None
    assert streamed[:-1] == list(range(len(streamed) - 1))
    failure = failed[-1].failure
    assert failure is not None
    assert failure.kind == "system"
    assert f"channel 'stream' (redis 127.0.0.1:{channel_redis.port})" in failure.message
    assert "after 2 attempts" in failure.message


def test_a_resumed_run_neither_loses_nor_repeats_intermediate_results(
    tmp_path: Path, channel_redis: RedisServer
) -> None:
    run_dir = tmp_path / "run"
    task_group = str(uuid.uuid4())
    journal = Journal.create(run_dir, RunIdentity({"cpu-site": "local"}, ["count_up"]), task_group)
    task = Result(method="count_up", args=(6,), streams=True, slot="cpu", site="cpu-site")
    now = time.time()
    journal.submitted(task)
    journal.dispatched(task, "cpu-site", 1, now)
    task.attempts.append(Attempt(site="cpu-site", dispatched=now))
    for sequence in range(3):  # three came back; the thinker took only the first
        record = task.model_copy(update={"sequence": sequence, "value": sequence})
        journal.intermediate(record, pickle.dumps(sequence), now)
    journal.commit()
    journal.delivered(f"{task.task_id}/0", now)
    journal.close()  # the thinker died here, the task in flight at the local site

    config = one_site({"local": str(ENDPOINTS / "local-cpu.yaml")}, channel_redis.port)
    queues = TaskQueues()
    with TaskServer(queues, config, [count_up], run_dir=run_dir, resume=True):
        (results,) = by_task(queues).values()
    assert [(r.sequence, r.replayed) for r in results] == [
        (0, True),  # replayed, for the thinker to rebuild from
        (1, False),
        (2, False),
        (3, False),  # the task ran again: its values 0-2 were dropped as repeats
        (4, False),
        (5, False),
        (None, False),
    ]
    assert [r.value for r in results] == [0, 1, 2, 3, 4, 5, "counted 6"]
    assert len(results[-1].attempts) == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"sites": {"cpu": {"channels": ["nope"]}}},
            "site 'cpu', field 'channels': no channel named 'nope'",
        ),
        ({"channel": {"kind": "kafka"}}, "channel 'stream', field 'kind'"),
        ({"sites": {"cpu": {"channels": []}}}, "method 'count_up' streams intermediate results"),
    ],
)
def test_a_channel_no_site_can_use_is_one_clear_error(
    change: dict[str, Any], expected: str
) -> None:
    site: dict[str, Any] = {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}}
    site.update(change.get("sites", {}).get("cpu", {}))
    channel = change.get("channel", {"kind": "redis"})
    data = {"sites": {"cpu": site}, "data": {"channels": {"stream": channel}}}
    with pytest.raises(ConfigError, match=expected):
        TaskServer(TaskQueues(), SitesConfig.from_dict(data), [count_up])


def test_the_streaming_example_scores_candidates_as_they_stream_in(
    tmp_path: Path, channel_redis: RedisServer
) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "streaming"
    text = (example / "sites.yaml").read_text()
    text = text.replace("port: 6379", f"port: {channel_redis.port}")
    text = text.replace("../../endpoints", str(ENDPOINTS))
    sites = tmp_path / "sites.yaml"
    sites.write_text(text)
    run = colmena_fed(
        "run",
        f"{example / 'search.py'}:make_thinker",
        "--sites",
        str(sites),
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert run.returncode == 0, run.stderr
    assert "24 candidates scored as they streamed in" in run.stdout
    rows = [row for row in read(tmp_path / "run" / FILE_NAME).events if row[1] == "intermediate"]
    assert [(row[3], row[5]) for row in rows] == [("gpu-site", str(i)) for i in range(6)]
