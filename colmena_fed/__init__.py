"""colmena-fed: steer AI-in-the-loop campaigns across several Globus Compute sites."""

from colmena_fed.errors import ColmenaFedError, ConfigError, SiteError
from colmena_fed.methods import Method
from colmena_fed.models import (
    Attempt,
    FailureInfo,
    ResourceRequest,
    Result,
    Timestamps,
    WorkerInfo,
)
from colmena_fed.queues import TaskQueues
from colmena_fed.server import TaskServer
from colmena_fed.sites import SitesConfig
from colmena_fed.thinker import (
    BaseThinker,
    ResourceCounter,
    agent,
    event_responder,
    result_processor,
    task_submitter,
)

__all__ = [
    "Attempt",
    "BaseThinker",
    "ColmenaFedError",
    "ConfigError",
    "FailureInfo",
    "Method",
    "ResourceCounter",
    "ResourceRequest",
    "Result",
    "SiteError",
    "SitesConfig",
    "TaskQueues",
    "TaskServer",
    "Timestamps",
    "WorkerInfo",
    "agent",
    "event_responder",
    "result_processor",
    "task_submitter",
]
