"""Colmena's ``colmena.thinker``."""

from colmena_fed.resources import ReallocatorThread, ResourceCounter
from colmena_fed.thinker import (
    BaseThinker,
    agent,
    event_responder,
    result_processor,
    task_submitter,
)

__all__ = [
    "BaseThinker",
    "ReallocatorThread",
    "ResourceCounter",
    "agent",
    "event_responder",
    "result_processor",
    "task_submitter",
]
