"""Colmena's ``colmena.queue.redis``: refused (the task server shares the thinker's process)."""

from colmena_fed.colmena import refused

RedisQueues = refused(
    "RedisQueues",
    "the task server runs in the thinker's process and reaches sites through Globus Compute, "
    "so there is no queue process to connect to: use TaskQueues(topics=[...]) (or PipeQueues); "
    "to move large objects through Redis, declare a redis store in the sites YAML's data: "
    "section (docs/data.md)",
)

__all__ = ["RedisQueues"]
