"""Active learning on a federation: simulations on the CPU site, surrogate training on the GPU site.

The campaign looks for the minimum of an expensive function (a stand-in for a simulation: the
3-D Hartmann function, plus a short sleep for its cost). A Gaussian-process surrogate is
retrained on every new batch of results, on a `gpu` slot; the thinker then ranks a pool of
random candidates by the surrogate's lower confidence bound and simulates the most promising.
Training keeps state warm on the GPU worker (`colmena_fed.warm`, key ``SURROGATE``): each
retrain also tries the kernel hyperparameters the last one kept there, and is sent with
``warm=SURROGATE`` so that it goes back to the worker that holds them.

Run it with::

    colmena-fed run examples/active_learning/campaign.py:make_thinker --sites examples/sites.yaml

It is resumable: if its thinker dies, ``colmena-fed run ... --run-dir RUN --resume`` carries
on. The results the dead thinker had are replayed first (``result.replayed``): they rebuild
the measurements and the surrogate without spending slots or asking for a retrain; the tasks
it had sent and not seen come back as new results, so their slots are held for them at start.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from colmena_fed import (
    BaseThinker,
    Method,
    ResourceCounter,
    Result,
    TaskQueues,
    agent,
    event_responder,
    result_processor,
    task_submitter,
    warm,
)
from colmena_fed.methods import MethodLike

HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
HARTMANN_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
KNOWN_MINIMUM = -3.86278
#: The warm key of the surrogate's training state on its worker.
SURROGATE = "hartmann-gp"


def simulate(x: list[float], cost_s: float = 0.2) -> float:
    """The expensive experiment: the 3-D Hartmann function at ``x`` (in [0, 1]^3)."""
    time.sleep(cost_s)
    point = np.asarray(x)
    inner = np.sum(HARTMANN_A * (point - HARTMANN_P) ** 2, axis=1)
    return float(-np.sum(HARTMANN_ALPHA * np.exp(-inner)))


def train(points: list[list[float]], values: list[float]) -> Any:
    """Fit a Gaussian-process surrogate of the simulation to what was measured so far.

    The worker keeps the best kernel hyperparameters fitted so far (under `SURROGATE`): a
    retrain on a worker that holds them also starts the optimizer there, and keeps whichever
    fit explains the data better (a cold worker fits from the default kernel alone).
    """
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import Matern, WhiteKernel

    data = np.asarray(points), np.asarray(values)
    default = Matern(length_scale=[0.2] * 3, nu=2.5) + WhiteKernel(1e-4)
    model = GaussianProcessRegressor(kernel=default, normalize_y=True, n_restarts_optimizer=2)
    model.fit(*data)
    state: dict[str, Any] = warm(SURROGATE, dict)
    if "kernel" in state:
        again = GaussianProcessRegressor(kernel=state["kernel"], normalize_y=True).fit(*data)
        if again.log_marginal_likelihood_value_ > model.log_marginal_likelihood_value_:
            model = again
    state["kernel"] = model.kernel_
    return model


class ActiveLearner(BaseThinker):
    """Keeps the CPU site busy with simulations chosen by a surrogate trained on the GPU site."""

    def __init__(
        self,
        queues: TaskQueues,
        *,
        budget: int = 48,
        initial: int = 8,
        retrain_every: int = 6,
        parallel_simulations: int = 2,
        seed: int = 1,
    ) -> None:
        """Spend ``budget`` simulations, ``parallel_simulations`` at a time."""
        self.slots = ResourceCounter(parallel_simulations, ["simulate"])
        self.slots.reallocate(None, "simulate", parallel_simulations)
        super().__init__(queues, self.slots)
        self.budget = budget
        self.initial = initial
        self.retrain_every = retrain_every
        self.rng = np.random.default_rng(seed)
        self.candidates: queue.Queue[list[float]] = queue.Queue()
        self.points: list[list[float]] = []
        self.values: list[float] = []
        self.submitted = 0
        self.since_training = 0
        self.trainings: list[Result] = []
        self.training_in_flight = False
        self.lock = threading.Lock()
        self.retrain = threading.Event()

    def run(self) -> None:
        """Run the campaign, first carrying over what a resumed run's dead thinker had sent."""
        resumed = self.queues.resumed
        if resumed is not None:
            self.submitted = resumed.count(method="simulate")
            waiting = [task for task in resumed.outstanding if task.method == "simulate"]
            # Their results release a slot each, as those of the tasks sent now do.
            self.slots.acquire("simulate", min(len(waiting), self.slots.total_slots))
            self.training_in_flight = any(t.method == "train" for t in resumed.outstanding)
        super().run()

    @agent(startup=True)
    def seed_candidates(self) -> None:
        """Start from random points until the first surrogate exists."""
        for point in self.rng.random((self.initial, 3)):
            self.candidates.put(point.tolist())

    @task_submitter(task_type="simulate")
    def submit_simulation(self) -> None:
        """Send the next candidate to a CPU slot (called once per free simulation slot)."""
        while not self.done.is_set():
            if self.submitted >= self.budget:
                self.slots.release("simulate", 1)
                return
            try:
                point = self.candidates.get(timeout=0.1)
            except queue.Empty:
                continue
            self.queues.send_inputs(point, method="simulate", topic="simulate")
            self.submitted += 1
            return

    @result_processor(topic="simulate")
    def record_simulation(self, result: Result) -> None:
        """Store the measurement; ask for a retrain once enough new data came in."""
        if not result.replayed:  # a replayed one's slot was the dead thinker's
            self.slots.release("simulate", 1)
        if not result.success:
            self.logger.warning("simulation failed: %s", result.failure)
            return
        with self.lock:
            self.points.append(result.args[0])
            self.values.append(result.value)
            self.since_training += not result.replayed
            if self.since_training >= self.retrain_every and not self.training_in_flight:
                self.retrain.set()
            if len(self.values) >= self.budget:
                self.done.set()

    @event_responder(event_name="retrain")
    def start_training(self) -> None:
        """Retrain the surrogate on everything measured so far, on a `gpu` slot."""
        with self.lock:
            self.since_training = 0
            self.training_in_flight = True
            points, values = list(self.points), list(self.values)
        self.queues.send_inputs(points, values, method="train", topic="train", warm=SURROGATE)

    @result_processor(topic="train")
    def use_surrogate(self, result: Result) -> None:
        """Replace the candidate queue with the surrogate's most promising points."""
        with self.lock:
            self.training_in_flight &= result.replayed  # a replay is not the one in flight
        if not result.success:
            self.logger.warning("training failed: %s", result.failure)
            return
        self.trainings.append(result)
        if result.value is None:  # replayed, its model came through a store and is gone
            return
        pool = self.rng.random((2000, 3))
        mean, std = result.value.predict(pool, return_std=True)
        ranked = pool[np.argsort(mean - 1.5 * std)][: self.retrain_every]
        while not self.candidates.empty():
            self.candidates.get_nowait()
        for point in ranked:
            self.candidates.put(point.tolist())

    def report(self) -> str:
        """What the campaign found, and where its training ran."""
        best = int(np.argmin(self.values))
        lines = [
            f"simulations: {len(self.values)}; best value {self.values[best]:.4f} at "
            f"x = {np.round(self.points[best], 3).tolist()} "
            f"(known minimum {KNOWN_MINIMUM:.4f}, gap {self.values[best] - KNOWN_MINIMUM:.4f})",
            f"surrogate trainings: {len(self.trainings)}",
        ]
        for result in self.trainings:
            worker = result.worker
            start = "warm" if result.warm is not None and result.warm.hit else "cold"
            lines.append(
                f"  trained on {len(result.args[1])} points on site {result.site} "
                f"(accelerator {worker.accelerator if worker else None}) "
                f"in {result.run_time or 0:.2f} s, from a {start} start"
            )
        return "\n".join(lines)


class ReportingLearner(ActiveLearner):
    """The learner, printing its report when the campaign ends."""

    def run(self) -> None:
        """Run the campaign, then print what it found."""
        try:
            super().run()
        finally:
            if self.values:
                print(self.report())


def make_thinker(queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    """Factory for ``colmena-fed run``: the thinker and the methods it uses."""
    queues.add_topic("simulate")
    queues.add_topic("train")
    return ReportingLearner(queues), [simulate, Method(train, slot="gpu")]
