"""Colmena's ``colmena.models``."""

from colmena_fed.colmena.models.results import (
    FailureInformation,
    ResourceRequirements,
    Result,
    SerializationMethod,
)

__all__ = ["FailureInformation", "ResourceRequirements", "Result", "SerializationMethod"]
