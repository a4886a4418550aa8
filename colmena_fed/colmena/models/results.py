"""Colmena's ``colmena.models.results``: colmena-fed's `Result` and Colmena's views of it."""

from colmena_fed.compat import (
    ColmenaTimestamps as Timestamps,
)
from colmena_fed.compat import (
    FailureInformation,
    ResourceRequirements,
    SerializationMethod,
    TimeSpans,
    WorkerInformation,
)
from colmena_fed.models import Result

__all__ = [
    "FailureInformation",
    "ResourceRequirements",
    "Result",
    "SerializationMethod",
    "TimeSpans",
    "Timestamps",
    "WorkerInformation",
]
