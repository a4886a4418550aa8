"""Colmena's ``colmena.queue.python``.

Colmena's pipes carry requests to a task server in another process; colmena-fed's task
server runs in the thinker's process, so `PipeQueues` is `TaskQueues` itself.
"""

from colmena_fed.queues import TaskQueues as PipeQueues

__all__ = ["PipeQueues"]
