"""Streaming: a generator on the GPU site proposes candidates; the CPU site scores each at once.

A stand-in for a generative model that keeps sampling while it trains: `generate` (a
generator, so colmena-fed streams it) yields one batch of candidate points every so often; each
batch reaches the thinker as an intermediate result (``result.complete`` is False, and
``result.sequence`` numbers it) while the generator goes on. The thinker sends every candidate
of a batch to `score` on a CPU slot as soon as the batch arrives, and keeps the best score.
The generator's return value comes last, as its final result.

The intermediate results travel through the channel named in ``sites.yaml`` beside this file
(a Redis server on 127.0.0.1:6379: ``redis-server --port 6379 --save ''`` starts one). Run::

    colmena-fed run examples/streaming/search.py:make_thinker \
        --sites examples/streaming/sites.yaml

It is resumable like any campaign: a resumed run replays the batches and scores the dead
thinker had taken (``result.replayed``), and delivers those it had not, once each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import numpy as np

from colmena_fed import BaseThinker, Method, Result, TaskQueues, agent, result_processor
from colmena_fed.methods import MethodLike


def generate(
    batches: int, batch_size: int, seed: int, pause_s: float = 0.2
) -> Generator[list[list[float]], None, int]:
    """Yield ``batches`` batches of candidate points in [0, 1]^2 (a model sampling as it trains)."""
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        time.sleep(pause_s)  # the model trains a little more between batches
        yield rng.random((batch_size, 2)).tolist()
    return batches * batch_size


def score(point: list[float]) -> float:
    """The expensive evaluation of one candidate (a stand-in: distance to (0.3, 0.7))."""
    time.sleep(0.05)
    return float(np.hypot(point[0] - 0.3, point[1] - 0.7))


class StreamingSearch(BaseThinker):
    """Scores each candidate as soon as the generator streams its batch."""

    def __init__(self, queues: TaskQueues, *, batches: int = 6, batch_size: int = 4) -> None:
        """Ask for ``batches`` batches of ``batch_size`` candidates."""
        super().__init__(queues)
        self.batches, self.batch_size = batches, batch_size
        self.best: tuple[float, list[float]] | None = None
        self.scored = 0
        self.generated: int | None = None
        self.lock = threading.Lock()

    @agent(startup=True)
    def start_generator(self) -> None:
        """Start the generator once (a resumed run's dead thinker may have started it)."""
        resumed = self.queues.resumed
        if resumed is None or not resumed.count(method="generate"):
            self.queues.send_inputs(
                self.batches, self.batch_size, 1, method="generate", topic="generate"
            )

    @result_processor(topic="generate")
    def take_batch(self, result: Result) -> None:
        """A batch streamed in: score each candidate now; the final result ends the stream."""
        if not result.success:
            self.logger.error("the generator failed: %s", result.failure)
            self.done.set()
            return
        if result.complete:
            with self.lock:
                self.generated = result.value
                self._finish_if_done()
            return
        self.logger.info("batch %d streamed in: scoring it", result.sequence)
        if result.replayed:  # a replayed batch's candidates were sent before the thinker died
            return
        for point in result.value:
            self.queues.send_inputs(point, method="score", topic="score")

    @result_processor(topic="score")
    def take_score(self, result: Result) -> None:
        """Keep the best candidate."""
        with self.lock:
            self.scored += 1
            if result.success and (self.best is None or result.value < self.best[0]):
                self.best = (result.value, result.args[0])
            self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self.generated is not None and self.scored >= self.generated:
            self.done.set()

    def report(self) -> str:
        """What the campaign found, in words."""
        if self.best is None:
            return "no candidate was scored"
        value, point = self.best
        return (
            f"{self.scored} candidates scored as they streamed in; best {value:.4f} at "
            f"({point[0]:.3f}, {point[1]:.3f})"
        )

    def run(self) -> None:
        """Run the campaign, then print what it found."""
        super().run()
        print(self.report())


def make_thinker(queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    """The campaign for ``colmena-fed run``: the thinker and its methods."""
    for topic in ("generate", "score"):
        queues.add_topic(topic)
    return StreamingSearch(queues), [Method(generate, slot="gpu"), score]
