"""Colmena's ``colmena.queue``: the queues between thinker and task server."""

from colmena_fed.colmena.queue.base import ColmenaQueues
from colmena_fed.colmena.queue.python import PipeQueues

__all__ = ["ColmenaQueues", "PipeQueues"]
