"""Colmena's ``colmena.task_server``: refused; colmena-fed's `TaskServer` replaces them all."""

from colmena_fed.colmena.task_server.parsl import ParslTaskServer

__all__ = ["ParslTaskServer"]
