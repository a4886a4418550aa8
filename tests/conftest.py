"""Fixtures: a real two-site federation (CPU and GPU endpoint engines), shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sample_methods import accelerator, add, blob, die, double, fail, nap

from colmena_fed import Method, SitesConfig, TaskQueues, TaskServer
from colmena_fed.methods import MethodLike

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS = REPO / "endpoints"
TOPICS = ["simulate", "train", "other"]


def federation_config(cpu_slots: int = 2, gpu_slots: int = 1) -> SitesConfig:
    """The two local sites of examples/sites.yaml, with the given slots."""
    return SitesConfig.from_dict(
        {
            "sites": {
                "cpu-site": {
                    "local": str(ENDPOINTS / "local-cpu.yaml"),
                    "resources": {"cpu": cpu_slots},
                },
                "gpu-site": {
                    "local": str(ENDPOINTS / "local-gpu.yaml"),
                    "resources": {"gpu": gpu_slots},
                },
            },
            "scheduler": {"status_period": 0.5},
        }
    )


METHODS: list[MethodLike] = [
    blob,
    double,
    add,
    die,
    fail,
    nap,
    Method(nap, slot="gpu", name="gpu_nap"),
    Method(accelerator, slot="gpu"),
]


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskServer]:
    """One task server over a CPU site (2 slots) and a GPU site (1 slot), started once."""
    queues = TaskQueues(topics=TOPICS)
    server = TaskServer(
        queues, federation_config(), METHODS, run_dir=tmp_path_factory.mktemp("federation")
    )
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
