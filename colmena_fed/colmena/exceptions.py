"""Colmena's ``colmena.exceptions``."""

from colmena_fed.exceptions import KillSignalException, TimeoutException

__all__ = ["KillSignalException", "TimeoutException"]
