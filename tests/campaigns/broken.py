"""Campaign factories that go wrong in the ways a user's might (for tests/test_cli.py)."""

from __future__ import annotations

from colmena_fed import BaseThinker, Result, TaskQueues, agent, result_processor
from colmena_fed.methods import MethodLike


def square(x: int) -> int:
    return x * x


class RaisingThinker(BaseThinker):
    """Sends one task, then fails on its result."""

    @agent(startup=True)
    def send(self) -> None:
        self.queues.send_inputs(3, method="square", topic="default")

    @result_processor(topic="default")
    def receive(self, result: Result) -> None:
        raise RuntimeError(f"cannot handle the value {result.value}")


def make_raising(queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    return RaisingThinker(queues), [square]


def make_nothing(queues: TaskQueues) -> None:
    return None
