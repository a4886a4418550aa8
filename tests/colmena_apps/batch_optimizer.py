"""A batch optimizer, written as a Colmena 0.7 application (tests port it to colmena-fed).

Each round sends a batch of points around the best so far, waits for the whole batch, logs
each record with ``result.json(exclude={'inputs'})`` and moves to the batch's best point.
"""

import json

import numpy as np
from colmena.models import Result
from colmena.queue.python import PipeQueues
from colmena.task_server import ParslTaskServer
from colmena.thinker import BaseThinker, agent
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor


def evaluate(x: np.ndarray) -> float:
    """Distance of ``x`` from the optimum at (0.5, 0.5, 0.5)."""
    return float(np.sum((x - 0.5) ** 2))


class BatchOptimizer(BaseThinker):
    """Rounds of batches: send a batch, wait for all of it, recenter on its best."""

    def __init__(self, queues: PipeQueues, batch_size: int, rounds: int, log: str) -> None:
        super().__init__(queues)
        self.batch_size = batch_size
        self.rounds = rounds
        self.log = log
        self.rng = np.random.default_rng(1)
        self.best: list[float] = []

    @agent
    def optimize(self) -> None:
        """Run every round, then record the best point (returning ends the thinker)."""
        center = np.full(3, 0.9)
        with open(self.log, "w") as fp:
            for _ in range(self.rounds):
                for _ in range(self.batch_size):
                    point = center + self.rng.normal(scale=0.1, size=3)
                    self.queues.send_inputs(point, method="evaluate", topic="simulate")
                batch: list[Result] = []
                while len(batch) < self.batch_size:
                    result = self.queues.get_result(topic="simulate")
                    assert result.success, result.failure_info
                    print(result.json(exclude={"inputs"}), file=fp)
                    batch.append(result)
                best = min(batch, key=lambda r: r.value)
                center = best.args[0]
                self.best.append(best.value)
                self.logger.info("round best %.4f after %.3f s", best.value, best.time.running)


if __name__ == "__main__":
    queues = PipeQueues(keep_inputs=True, topics=["simulate"])
    config = Config(executors=[ThreadPoolExecutor(max_threads=2)])
    doer = ParslTaskServer([evaluate], queues, config)
    thinker = BatchOptimizer(queues, batch_size=4, rounds=3, log="results.json")
    try:
        doer.start()
        thinker.start()
        thinker.join()
    finally:
        queues.send_kill_signal()
    doer.join()
    with open("summary.json", "w") as fp:
        json.dump({"best": thinker.best}, fp)
