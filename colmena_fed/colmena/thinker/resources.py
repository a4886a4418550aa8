"""Colmena's ``colmena.thinker.resources``."""

from colmena_fed.resources import ReallocatorThread, ResourceCounter

__all__ = ["ReallocatorThread", "ResourceCounter"]
