"""A campaign that can be killed and resumed (for tests/test_journal.py).

Its tasks note in $TALLY that they ran. It sends 3 tasks on topic ``held``, whose results it
takes only once the file $RELEASE exists, and 12 on ``default``; it notes every result it takes
in $RECEIVED (``i task_id replayed success``) and ends once it has all 15. A resumed run sends
nothing anew: the journal carries the tasks.
"""

from __future__ import annotations

import os

from sample_methods import tally

from colmena_fed import BaseThinker, Result, TaskQueues, agent, result_processor
from colmena_fed.methods import MethodLike

HELD, MAIN = 3, 12


class Resumable(BaseThinker):
    """Sends its tasks once; takes held results only when released."""

    @agent(startup=True)
    def seed(self) -> None:
        if self.queues.resumed is not None:
            self.logger.info("resumed with %d tasks", self.queues.resumed.count())
            return
        for i in range(HELD):
            self.queues.send_inputs(i, 0.2, os.environ["TALLY"], method="tally", topic="held")
        for i in range(HELD, HELD + MAIN):
            self.queues.send_inputs(i, 0.6, os.environ["TALLY"], method="tally")
        self.logger.info("all tasks sent")

    @agent(startup=True)
    def take_held(self) -> None:
        while not os.path.exists(os.environ["RELEASE"]):
            if self.done.wait(0.1):
                return
        for _ in range(HELD):
            result = self.queues.get_result("held", timeout=120)
            assert result is not None
            self.note(result)

    @result_processor(topic="default")
    def take(self, result: Result) -> None:
        self.note(result)

    def note(self, result: Result) -> None:
        with open(os.environ["RECEIVED"], "a") as file:
            file.write(f"{result.value} {result.task_id} {result.replayed} {result.success}\n")
        with open(os.environ["RECEIVED"]) as file:
            if len(file.readlines()) >= HELD + MAIN + self.replays():
                self.done.set()

    def replays(self) -> int:
        resumed = self.queues.resumed
        return 0 if resumed is None else len(resumed.delivered)


def make_resumable(queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    queues.add_topic("held")
    return Resumable(queues), [tally]
