"""colmena-fed: steer AI-in-the-loop campaigns across several Globus Compute sites.

The public names are imported on first use: a worker that only needs `colmena_fed.worker`, or
a command such as ``colmena-fed testbed down``, does not pay for importing the task server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colmena_fed.compat import ResourceRequirements
    from colmena_fed.errors import ColmenaFedError, ConfigError, SiteError
    from colmena_fed.exceptions import KillSignalException, TimeoutException
    from colmena_fed.methods import (
        Method,
        MPIMethod,
        PythonGeneratorMethod,
        PythonMethod,
        ShellMethod,
    )
    from colmena_fed.models import (
        Attempt,
        FailureInfo,
        ResourceRequest,
        Result,
        Timestamps,
        WorkerInfo,
    )
    from colmena_fed.queues import TaskQueues
    from colmena_fed.resources import ReallocatorThread
    from colmena_fed.server import TaskServer
    from colmena_fed.shell import ShellOutput
    from colmena_fed.sites import SitesConfig
    from colmena_fed.stream import ChannelUnreachable, emit
    from colmena_fed.thinker import (
        BaseThinker,
        ResourceCounter,
        agent,
        event_responder,
        result_processor,
        task_submitter,
    )
    from colmena_fed.worker_cache import warm

#: The module that defines each public name.
_HOMES = {
    "ResourceRequirements": "compat",
    "ColmenaFedError": "errors",
    "ConfigError": "errors",
    "SiteError": "errors",
    "KillSignalException": "exceptions",
    "TimeoutException": "exceptions",
    "Method": "methods",
    "MPIMethod": "methods",
    "ShellMethod": "methods",
    "PythonGeneratorMethod": "methods",
    "PythonMethod": "methods",
    "Attempt": "models",
    "FailureInfo": "models",
    "ResourceRequest": "models",
    "Result": "models",
    "Timestamps": "models",
    "WorkerInfo": "models",
    "ShellOutput": "shell",
    "TaskQueues": "queues",
    "ReallocatorThread": "resources",
    "TaskServer": "server",
    "SitesConfig": "sites",
    "ChannelUnreachable": "stream",
    "emit": "stream",
    "BaseThinker": "thinker",
    "ResourceCounter": "thinker",
    "agent": "thinker",
    "event_responder": "thinker",
    "result_processor": "thinker",
    "task_submitter": "thinker",
    "warm": "worker_cache",
}

__all__ = [
    "Attempt",
    "BaseThinker",
    "ChannelUnreachable",
    "ColmenaFedError",
    "ConfigError",
    "FailureInfo",
    "KillSignalException",
    "MPIMethod",
    "Method",
    "PythonGeneratorMethod",
    "PythonMethod",
    "ReallocatorThread",
    "ResourceCounter",
    "ResourceRequest",
    "ResourceRequirements",
    "Result",
    "ShellMethod",
    "ShellOutput",
    "SiteError",
    "SitesConfig",
    "TaskQueues",
    "TaskServer",
    "TimeoutException",
    "Timestamps",
    "WorkerInfo",
    "agent",
    "emit",
    "event_responder",
    "result_processor",
    "task_submitter",
    "warm",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'colmena_fed' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"colmena_fed.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
