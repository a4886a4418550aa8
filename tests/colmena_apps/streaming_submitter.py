"""A task-submitter campaign, written as a Colmena 0.7 application (tests port it).

A startup agent seeds a queue of candidates; a task submitter sends one per free slot and
ends the thinker as soon as the whole budget is sent; the result processor still receives
every result in flight after that (Colmena drains them before the thinker stops).
"""

import json
from queue import Queue

import numpy as np
from colmena.models import Result
from colmena.queue.python import PipeQueues
from colmena.task_server import ParslTaskServer
from colmena.thinker import BaseThinker, ResourceCounter, agent, result_processor, task_submitter
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor


def score(x: np.ndarray) -> np.ndarray:
    """An array result: the candidate's squares, after a moment."""
    import time

    time.sleep(0.3)
    return np.square(x)


class Streamer(BaseThinker):
    """Keep ``n_parallel`` tasks running until ``budget`` are sent; record every result."""

    def __init__(self, queues: PipeQueues, budget: int, n_parallel: int) -> None:
        super().__init__(queues, ResourceCounter(n_parallel, ["score"]))
        self.rec.reallocate(None, "score", n_parallel)
        self.budget = budget
        self.candidates: Queue[np.ndarray] = Queue()
        self.sent = 0
        self.results: list[dict] = []

    @agent(startup=True)
    def seed(self) -> None:
        """Fill the queue of candidates (returning does not end the thinker)."""
        for x in np.random.default_rng(2).random((self.budget, 2)):
            self.candidates.put(x)

    @task_submitter(task_type="score", n_slots=1)
    def submit(self) -> None:
        """Send the next candidate; the last one ends the thinker."""
        candidate = self.candidates.get()
        self.queues.send_inputs(candidate, method="score", task_info={"n": self.sent})
        self.sent += 1
        if self.sent == self.budget:
            self.done.set()

    @result_processor
    def record(self, result: Result) -> None:
        """Record the result and free its slot."""
        self.rec.release("score", 1)
        x, value = result.args[0], result.value
        assert np.allclose(value, np.square(x)), result.failure_info
        self.results.append(json.loads(result.json(exclude={"inputs", "value"})))


if __name__ == "__main__":
    queues = PipeQueues()
    config = Config(executors=[ThreadPoolExecutor(max_threads=2)])
    doer = ParslTaskServer([score], queues, config)
    thinker = Streamer(queues, budget=6, n_parallel=2)
    try:
        doer.start()
        thinker.start()
        thinker.join()
    finally:
        queues.send_kill_signal()
    doer.join()
    with open("summary.json", "w") as fp:
        json.dump({"results": thinker.results, "active": queues.active_count}, fp)
