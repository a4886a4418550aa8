"""Colmena's ``colmena.queue.base``: `ColmenaQueues` is colmena-fed's `TaskQueues`."""

from colmena_fed.queues import TaskQueues as ColmenaQueues

__all__ = ["ColmenaQueues"]
