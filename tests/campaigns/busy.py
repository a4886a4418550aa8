"""A campaign that keeps its sites busy until it is stopped (for tests/test_thinker_exit.py)."""

from __future__ import annotations

from sample_methods import nap

from colmena_fed import BaseThinker, Result, TaskQueues, agent, result_processor
from colmena_fed.methods import MethodLike


class Busy(BaseThinker):
    """Sends naps, and would wait for results for ever."""

    @agent(startup=True)
    def seed(self) -> None:
        for _ in range(4):
            self.queues.send_inputs(10, method="nap")  # short: the tasks run on at a globus site
        self.logger.info("all tasks sent")

    @result_processor(topic="default")
    def receive(self, result: Result) -> None:
        self.logger.info("result of %s", result.task_id)


def make_busy(queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    return Busy(queues), [nap]
