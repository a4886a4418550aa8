"""Colmena's ``colmena.models.methods``: Python methods, and `ExecutableMethod` for programs.

`ExecutableMethod` keeps Colmena's interface: a subclass gives the ``executable``, a
``preprocess(run_dir, args, kwargs)`` returning the command-line arguments and the standard
input, and a ``postprocess(run_dir)`` reading ``colmena.stdout`` (and any file the program
wrote) into the task's value. With ``mpi=True`` the program is launched on the task's nodes:
by ``mpi_command_string`` rendered with the task's resources if given, else by the launcher
the MPI site's engine composes (``mpiexec``, ``srun``, ...). Unlike in Colmena, a non-zero
exit status fails the task (a ``user`` failure quoting stderr), and the record's ``shell``
holds the command and its output.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colmena_fed.colmena import refused
from colmena_fed.compat import ResourceRequirements
from colmena_fed.methods import Method, PythonGeneratorMethod, PythonMethod
from colmena_fed.shell import ShellOutcome, mpi_prefix, run_command, task_directory

ColmenaMethod = refused(
    "ColmenaMethod",
    "a method is a Python function, given to the task server bare or as "
    "Method(function, slot='gpu', name=..., max_retries=...) (colmena_fed.Method)",
)


class ExecutableMethod:
    """Colmena's task that runs a program: subclass it with ``preprocess`` and ``postprocess``.

    Give an instance to the task server as Colmena does (alone, or as ``(instance,
    {'executors': [slot]})``): it needs a ``nodes`` slot (an MPI site) if ``mpi``, else a
    ``cpu`` slot. An MPI task's nodes and ranks come from its ``resources``
    (``ResourceRequirements(node_count=2, cpu_processes=4)``).
    """

    def __init__(
        self,
        executable: list[str],
        name: str | None = None,
        mpi: bool = False,
        mpi_command_string: str | None = None,
    ) -> None:
        """Run ``executable`` (plus the arguments ``preprocess`` returns) for each task."""
        self.name = name or executable[0]
        self.executable = list(executable)
        self.mpi = mpi
        self.mpi_command_string = mpi_command_string

    def render_mpi_launch(self, resources: ResourceRequirements) -> str:
        """The MPI launch command: ``mpi_command_string`` filled in with ``resources``."""
        assert self.mpi_command_string is not None
        fields = resources.model_dump()
        return self.mpi_command_string.format(total_ranks=resources.total_ranks, **fields)

    def preprocess(
        self, run_dir: Path, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[str], str | None]:
        """Prepare ``run_dir`` for the program; the arguments to give it and its stdin."""
        raise NotImplementedError()

    def postprocess(self, run_dir: Path) -> Any:
        """The task's value, read from ``run_dir`` (``colmena.stdout``, files written)."""
        raise NotImplementedError()

    def as_method(self, slot: str | None = None) -> Method:
        """The colmena-fed method that runs this program (``slot``: the kind it needs)."""
        kind = slot or ("nodes" if self.mpi else "cpu")
        return Method(ColmenaExecutable(self), slot=kind, name=self.name, streams=False)


@dataclass(frozen=True)
class ColmenaExecutable:
    """What a worker runs for an `ExecutableMethod`: its steps, in a directory of the task's."""

    method: ExecutableMethod

    @property
    def __name__(self) -> str:
        """The method's name."""
        return self.method.name

    def __call__(self, *args: Any, **kwargs: Any) -> ShellOutcome:
        """Preprocess, run the program, postprocess (a non-zero exit is a failed outcome)."""
        method = self.method
        run_dir = task_directory(method.name)
        try:
            arguments, stdin = method.preprocess(run_dir, args, kwargs)
            command = " ".join(shlex.quote(str(w)) for w in [*method.executable, *arguments])
            if method.mpi:
                command = f"{self._launcher()} {command}"
            names = ("colmena.stdout", "colmena.stderr")
            output = run_command(command, run_dir, 1000, stdin, names)
            if output.returncode != 0:
                return ShellOutcome(None, output)
            return ShellOutcome(method.postprocess(run_dir), output)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def _launcher(self) -> str:
        method = self.method
        if method.mpi_command_string is None:
            return mpi_prefix(method.name)
        # The MPI engine exports the task's resource specification as PARSL_<KEY>.
        resources = ResourceRequirements(
            node_count=int(float(os.environ.get("PARSL_NUM_NODES", "1"))),
            cpu_processes=int(float(os.environ.get("PARSL_RANKS_PER_NODE", "1"))),  # "2.0"
        )
        return method.render_mpi_launch(resources)


__all__ = ["ColmenaMethod", "ExecutableMethod", "PythonGeneratorMethod", "PythonMethod"]
