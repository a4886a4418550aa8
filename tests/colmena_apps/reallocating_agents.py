"""Agents sharing slots, written as a Colmena 0.7 application (tests port it to colmena-fed).

A task submitter keeps the ``simulate`` pool's slots busy; halfway through the budget a
result sets the ``retrain`` event, whose responder borrows one slot for a training task
(``train`` pool, gathered from ``simulate``) and gives it back when the training returns.
"""

import json
from threading import Event, Lock

from colmena.models import Result
from colmena.queue.python import PipeQueues
from colmena.task_server import ParslTaskServer
from colmena.thinker import (
    BaseThinker,
    ResourceCounter,
    event_responder,
    result_processor,
    task_submitter,
)
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor


def simulate(x: float) -> float:
    """A measurement that takes a moment."""
    import time

    time.sleep(0.2)
    return x * x


def train(values: list[float]) -> float:
    """A 'model': the mean of the measurements so far."""
    return sum(values) / len(values)


class Steering(BaseThinker):
    """Simulations on two slots; a training borrows one of them halfway."""

    def __init__(self, queues: PipeQueues, budget: int) -> None:
        super().__init__(queues, ResourceCounter(2, ["simulate", "train"]))
        self.rec.reallocate(None, "simulate", 2)
        self.budget = budget
        self.sent = 0
        self.values: list[float] = []
        self.models: list[float] = []
        self.slots_while_training: list[int] = []
        self.retrain = Event()
        self.lock = Lock()

    @task_submitter(task_type="simulate", n_slots=1)
    def submit(self) -> None:
        """Send one simulation per free slot, until the budget is spent (its slots then stay
        taken: the training borrowed its slot before)."""
        if self.sent < self.budget:
            self.queues.send_inputs(float(self.sent), method="simulate", topic="simulate")
            self.sent += 1

    @result_processor(topic="simulate")
    def record(self, result: Result) -> None:
        """Keep the value, free the slot, and ask for a training halfway."""
        self.rec.release("simulate", 1)
        with self.lock:
            self.values.append(result.value)
            if len(self.values) == self.budget // 2:
                self.retrain.set()
            self._stop_when_finished()

    @event_responder(
        event_name="retrain",
        reallocate_resources=True,
        gather_from="simulate",
        gather_to="train",
        disperse_to="simulate",
        max_slots=1,
    )
    def retrain_model(self) -> None:
        """Train on a borrowed slot and wait for the model."""
        self.rec.acquire("train", 1)
        self.slots_while_training.append(self.rec.allocated_slots("train"))
        with self.lock:
            values = list(self.values)
        self.queues.send_inputs(values, method="train", topic="train")
        result = self.queues.get_result(topic="train")
        self.rec.release("train", 1)
        with self.lock:
            self.models.append(result.value)
            self._stop_when_finished()

    def _stop_when_finished(self) -> None:
        if len(self.values) == self.budget and self.models:
            self.done.set()


if __name__ == "__main__":
    queues = PipeQueues(topics=["simulate", "train"])
    config = Config(executors=[ThreadPoolExecutor(label="cpu"), ThreadPoolExecutor(label="gpu")])
    methods = [(simulate, {"executors": ["cpu"]}), (train, {"executors": ["gpu"]})]
    doer = ParslTaskServer(methods, queues, config)
    thinker = Steering(queues, budget=6)
    try:
        doer.start()
        thinker.start()
        thinker.join()
    finally:
        queues.send_kill_signal()
    doer.join()
    summary = {
        "values": sorted(thinker.values),
        "models": len(thinker.models),
        "slots_while_training": thinker.slots_while_training,
        "simulate_slots_after": thinker.rec.allocated_slots("simulate"),
        "train_slots_after": thinker.rec.allocated_slots("train"),
    }
    with open("summary.json", "w") as fp:
        json.dump(summary, fp)
