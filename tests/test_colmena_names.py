"""colmena_fed.colmena holds every public name of Colmena 0.7.2 with Colmena's signature.

Colmena is installed next to colmena-fed (a dev dependency) for this comparison only: a name
or a parameter Colmena has and colmena-fed lacks fails here, unless it is listed below with
the reason it has no meaning in colmena-fed (each reason is in docs/from-colmena.md too).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import colmena
import pytest
from colmena.models.results import ResourceRequirements as ColmenaResourceRequirements
from colmena.models.results import Result as ColmenaResult
from colmena.queue.python import PipeQueues as ColmenaPipeQueues
from colmena.thinker import BaseThinker as ColmenaThinker
from colmena.thinker.resources import ReallocatorThread as ColmenaReallocator
from colmena.thinker.resources import ResourceCounter as ColmenaCounter
from pydantic import BaseModel

from colmena_fed.colmena.models.results import ResourceRequirements, Result
from colmena_fed.colmena.queue.python import PipeQueues
from colmena_fed.colmena.thinker import BaseThinker
from colmena_fed.colmena.thinker.resources import ReallocatorThread, ResourceCounter

#: Colmena names (module, or module.name) with no counterpart here, and why.
ABSENT = {
    "colmena.proxy": "ProxyStore plumbing of Colmena's queues: the data plane does it",
    "colmena.models.ExecutableTask": "in Colmena's __all__, but Colmena 0.7.2 defines none",
    "colmena.queue.base.QueueRole": "roles: the thinker and the task server share one process",
    "colmena.task_server.base.convert_to_colmena_method": "the task server's own conversion",
}

#: Members of Colmena's classes with no counterpart here, and why.
ABSENT_MEMBERS = {
    "PipeQueues.get_task": "server side: requests go to the task server in-process",
    "PipeQueues.send_result": "server side: the dispatcher delivers results",
    "PipeQueues.set_role": "roles: the thinker and the task server share one process",
    "Result.serialize": "the dispatcher and the worker move the record's data",
    "Result.deserialize": "the dispatcher and the worker move the record's data",
    "Result.set_result": "the worker sets the value",
    "Result.from_args_and_kwargs": "records are made by send_inputs",
    "Result.mark_compute_ended": "the worker stamps the record",
    "Result.mark_compute_started": "the worker stamps the record",
    "Result.mark_input_received": "the task server stamps the record",
    "Result.mark_result_received": "the queues stamp the record",
    "Result.mark_result_sent": "the worker stamps the record",
    "Result.mark_start_task_submission": "the dispatcher stamps the record",
    "Result.mark_task_received": "the dispatcher stamps the record",
    "Result.message_sizes": "sizes are measured for what goes through a store (data)",
    "Result.proxystore_config": "the data plane records the stores used (stores, data)",
    "Result.proxystore_name": "the data plane records the stores used (stores, data)",
    "Result.proxystore_threshold": "the sites YAML's data: threshold_bytes",
    "Result.serialization_method": "records stay in the thinker's process",
}

#: Callables whose parameters colmena-fed takes by keyword only, where Colmena's documented
#: use passes them by keyword too (``@task_submitter(task_type=...)``).
KEYWORD_ONLY_HERE = {"agent", "result_processor", "task_submitter", "event_responder"}


def colmena_modules() -> Iterator[str]:
    """Colmena's modules, tests left out."""
    yield "colmena"
    for info in pkgutil.walk_packages(colmena.__path__, "colmena."):
        if ".tests" not in info.name:
            yield info.name


def public_names(module: ModuleType) -> set[str]:
    """Its ``__all__``, else the classes and functions it (or, for a package, a submodule of
    it) defines."""
    if hasattr(module, "__all__"):
        return set(module.__all__)
    home = module.__name__
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == home or value.__module__.startswith(f"{home}."))
    }


@pytest.mark.parametrize("name", list(colmena_modules()))
def test_every_public_name_of_colmena_is_here(name: str) -> None:
    if name in ABSENT:
        return
    module = importlib.import_module(name)
    wanted = {n for n in public_names(module) if f"{name}.{n}" not in ABSENT}
    if not wanted:
        return
    ours = importlib.import_module(name.replace("colmena", "colmena_fed.colmena", 1))
    missing = sorted(n for n in wanted if not hasattr(ours, n))
    assert not missing, f"colmena_fed.colmena{name[len('colmena') :]} lacks {missing}"


def members(cls: type) -> set[str]:
    """Public attributes of a class that are its own (not Thread's or BaseModel's)."""
    base = next(b for b in (BaseModel, threading.Thread, object) if issubclass(cls, b))
    own = {n for n in dir(cls) if not n.startswith("_") and n not in dir(base)}
    if issubclass(cls, BaseModel):
        own |= set(cls.model_fields)
    return own


PAIRS: list[tuple[str, type, type]] = [
    ("PipeQueues", ColmenaPipeQueues, PipeQueues),
    ("BaseThinker", ColmenaThinker, BaseThinker),
    ("ResourceCounter", ColmenaCounter, ResourceCounter),
    ("ReallocatorThread", ColmenaReallocator, ReallocatorThread),
    ("ResourceRequirements", ColmenaResourceRequirements, ResourceRequirements),
    ("Result", ColmenaResult, Result),
]


@pytest.mark.parametrize(("label", "theirs", "ours"), PAIRS, ids=[p[0] for p in PAIRS])
def test_every_member_of_colmena_classes_is_here(label: str, theirs: type, ours: type) -> None:
    missing = sorted(
        name
        for name in members(theirs)
        if f"{label}.{name}" not in ABSENT_MEMBERS
        and not hasattr(ours, name)
        and name not in getattr(ours, "model_fields", {})
    )
    assert not missing, f"{label} lacks {missing}"


def check_parameters(where: str, theirs: Callable[..., Any], ours: Callable[..., Any]) -> None:
    """Every parameter of ``theirs`` is one of ``ours``; positional ones at the same place."""
    mine = inspect.signature(ours).parameters
    order = list(mine)
    for index, (name, param) in enumerate(inspect.signature(theirs).parameters.items()):
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):  # their names are free
            assert any(p.kind is param.kind for p in mine.values()), f"{where}: {param}"
            continue
        assert name in mine, f"{where} lacks the parameter {name!r}"
        positional = param.kind is param.POSITIONAL_OR_KEYWORD
        if positional and where.rsplit(".", maxsplit=1)[-1] not in KEYWORD_ONLY_HERE:
            assert order.index(name) == index, f"{where}: {name!r} is not parameter {index}"


@pytest.mark.parametrize(("label", "theirs", "ours"), PAIRS, ids=[p[0] for p in PAIRS])
def test_colmena_methods_take_colmena_parameters(label: str, theirs: type, ours: type) -> None:
    if issubclass(theirs, BaseModel):  # fields, compared above
        return
    check_parameters(f"{label}.__init__", vars(theirs)["__init__"], vars(ours)["__init__"])
    for name in members(theirs):
        if f"{label}.{name}" in ABSENT_MEMBERS:
            continue
        mine, other = getattr(ours, name), getattr(theirs, name)
        if callable(other) and not isinstance(other, property):
            check_parameters(f"{label}.{name}", other, mine)


@pytest.mark.parametrize("name", sorted(KEYWORD_ONLY_HERE))
def test_thinker_decorators_take_colmena_options(name: str) -> None:
    import colmena.thinker as theirs

    import colmena_fed.colmena.thinker as ours

    check_parameters(name, getattr(theirs, name), getattr(ours, name))


#: Attributes Colmena's instances set in __init__ with no counterpart here, and why.
ABSENT_ATTRIBUTES = {
    "PipeQueues.proxystore_name": "refused at construction: the sites YAML's data: section",
    "PipeQueues.proxystore_threshold": "refused at construction: data: threshold_bytes",
    "PipeQueues.request_queue": "Colmena's pipe to its task server process",
    "PipeQueues.result_queues": "Colmena's pipes from its task server process",
    "PipeQueues.role": "roles: the thinker and the task server share one process",
}


def test_colmena_instances_have_colmenas_attributes() -> None:
    their_queues = ColmenaPipeQueues(["a"])
    built: dict[str, tuple[object, object]] = {
        "PipeQueues": (their_queues, PipeQueues(["a"])),
        "BaseThinker": (ColmenaThinker(their_queues), BaseThinker(PipeQueues())),
    }
    for label, (theirs, ours) in built.items():
        wanted = {n for n in vars(theirs) if not n.startswith("_")}
        wanted -= set(vars(threading.Thread()))
        missing = sorted(
            n for n in wanted if f"{label}.{n}" not in ABSENT_ATTRIBUTES and not hasattr(ours, n)
        )
        assert not missing, f"{label} instances lack {missing}"
