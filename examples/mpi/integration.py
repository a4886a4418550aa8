"""MPI: build a small MPI program on the MPI site, run it at several resolutions on 2 ranks.

``integrate.c`` beside this file integrates 4 / (1 + x^2) over [0, 1] (which is pi) with its
ranks sharing the intervals and an MPI_Allreduce adding their parts. The campaign builds it
with mpicc where it will run (a `ShellMethod` on the MPI site), then runs it as an `MPIMethod`
on 2 ranks at finer and finer resolutions, while the CPU site checks each answer against pi
(a Python method). The sites are in ``sites.yaml`` beside this file (Debian's ``mpich``
provides mpicc and mpiexec)::

    colmena-fed run examples/mpi/integration.py:make_thinker --sites examples/mpi/sites.yaml

It is resumable like any campaign: a resumed run does not build the program again, and runs
only the resolutions whose results the dead thinker had not taken.
"""

from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path

from colmena_fed import (
    BaseThinker,
    Method,
    MPIMethod,
    Result,
    ShellMethod,
    TaskQueues,
    agent,
    result_processor,
)
from colmena_fed.methods import MethodLike
from colmena_fed.shell import ShellOutput

SOURCE = Path(__file__).resolve().parent / "integrate.c"

#: Where the program is built (a shared filesystem, on a real machine).
BINARY = Path(tempfile.gettempdir()) / "colmena-fed-examples" / "integrate"

#: 2 ranks on 1 node: what the local MPI site has.
TWO_RANKS = {"num_nodes": 1, "ranks_per_node": 2}


def rank_values(run_dir: Path, output: ShellOutput) -> list[float]:
    """What each rank printed: the total the allreduce gave it."""
    return [float(line.rsplit(": ", 1)[1]) for line in output.stdout.splitlines()]


def error(values: list[float]) -> float:
    """How far the ranks' answer is from pi (they must agree)."""
    if len(set(values)) != 1:
        raise ValueError(f"the ranks disagree: {values}")
    return abs(values[0] - math.pi)


class Integration(BaseThinker):
    """Builds the program, then runs it at each resolution and checks each answer."""

    def __init__(
        self, queues: TaskQueues, resolutions: tuple[int, ...] = (10, 1000, 100000)
    ) -> None:
        """Run the program once per number of intervals in ``resolutions``."""
        super().__init__(queues)
        self.resolutions = resolutions
        self.errors: dict[int, float] = {}
        self.lock = threading.Lock()

    @agent(startup=True)
    def build_then_run(self) -> None:
        """Build the program (once per campaign), then send a run per resolution."""
        resumed = self.queues.resumed
        if resumed is None or not resumed.count(method="build"):
            BINARY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.queues.send_inputs(
                method="build", topic="build", input_kwargs={"source": SOURCE, "out": BINARY}
            )
            built = self.queues.get_result(topic="build")
            if built is None or not built.success:
                self.logger.error("building the program failed: %s", built and built.failure)
                self.done.set()
                return
        if resumed is not None and resumed.count(method="integrate"):
            return  # the dead thinker sent them: the resumed run carries them on
        for intervals in self.resolutions:
            self.queues.send_inputs(
                method="integrate",
                topic="integrate",
                input_kwargs={"program": BINARY, "intervals": intervals},
            )

    @result_processor(topic="integrate")
    def check(self, result: Result) -> None:
        """A run finished: have the CPU site compare its answer with pi."""
        if not result.success:
            self.logger.error("a run failed: %s", result.failure)
            self.done.set()
            return
        if result.replayed:  # its check was sent before the thinker died
            return
        assert result.shell is not None
        self.logger.info("ran %s", result.shell.command)
        self.queues.send_inputs(
            result.value, method="error", topic="error", task_info=result.kwargs
        )

    @result_processor(topic="error")
    def record(self, result: Result) -> None:
        """Keep each resolution's error; the campaign ends with the last."""
        with self.lock:
            self.errors[result.task_info["intervals"]] = result.value
            if len(self.errors) == len(self.resolutions):
                self.done.set()

    def run(self) -> None:
        """Run the campaign, then print what it found."""
        super().run()
        for intervals, gap in sorted(self.errors.items()):
            print(f"{intervals:>8} intervals on 2 ranks: |pi - answer| = {gap:.2e}")


def make_thinker(queues: TaskQueues) -> tuple[BaseThinker, list[MethodLike]]:
    """The campaign for ``colmena-fed run``: the thinker and its methods."""
    for topic in ("build", "integrate", "error"):
        queues.add_topic(topic)
    methods: list[MethodLike] = [
        # Built where it runs: on the MPI site (one node, no launcher: a plain command).
        ShellMethod(
            "mpicc -O2 -o {out} {source}",
            "build",
            slot="nodes",
            specification={"num_nodes": 1, "ranks_per_node": 1},
        ),
        MPIMethod(
            "{program} {intervals}", "integrate", specification=TWO_RANKS, postprocess=rank_values
        ),
        Method(error),
    ]
    return Integration(queues), methods
