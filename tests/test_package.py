"""The package's public names, and what importing its light parts pulls in."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import colmena_fed


@pytest.mark.parametrize("name", colmena_fed.__all__)
def test_each_public_name_is_the_object_its_module_defines(name: str) -> None:
    value = getattr(colmena_fed, name)
    assert value is getattr(importlib.import_module(value.__module__), name)
    assert name in dir(colmena_fed)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'TaskSever'"):
        _ = colmena_fed.TaskSever


@pytest.mark.parametrize("module", ["colmena_fed.worker", "colmena_fed.cli"])
def test_workers_and_the_command_line_do_not_import_the_task_server(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m in {HEAVY!r}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"


#: Modules a worker (which imports colmena_fed.worker once per process) and a quick command
#: such as ``colmena-fed testbed down`` should not pay for.
HEAVY = ("colmena_fed.server", "colmena_fed.backends.globus", "globus_compute_sdk")
