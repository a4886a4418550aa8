"""What runs on a worker for a shell or MPI method: fill the command in, run it, keep its output.

A `ShellProgram` is the function a `colmena_fed.ShellMethod` registers. On the worker it makes
a directory for the task, runs the method's Python ``preprocess`` there (which may write input
files and returns the command's fields), runs the command with bash in that directory, and
hands the return code and the last lines of stdout and stderr to ``postprocess``, whose return
value is the task's value. An MPI program's command is prefixed with ``PARSL_MPI_PREFIX``,
which a ``GlobusMPIEngine`` worker sets for each task from its resource specification (the
launcher, ranks and hosts: ``mpiexec -n 4 -ppn 2 -hosts a,b`` or ``srun ...``), as Globus
Compute's ``MPIFunction`` does; the record shows the command as launched.

The command runs in a session of its own, so that a task stopped at its walltime takes its
whole process tree (the MPI launcher and its ranks) with it. This module is imported by
workers: beyond the standard library, it imports only pydantic's field annotations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import ConfigDict, Field

#: The exception type of a task whose command exited with a non-zero return code.
SHELL_FAILED = "ShellCommandFailed"

#: Lines of stderr a failed task's message quotes.
QUOTED_LINES = 10

#: Seconds a command stopped at its walltime has between SIGTERM and SIGKILL.
TERM_GRACE_S = 3.0


@dataclasses.dataclass(slots=True)
class ShellOutput:
    """What a shell or MPI method's command did: the task record's ``shell`` field."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    command: Annotated[str, Field(description="The command line run, as bash was given it.")]
    returncode: Annotated[int, Field(description="Its exit status (0: success).")]
    stdout: Annotated[str, Field(description="The last lines of its standard output.")]
    stderr: Annotated[str, Field(description="The last lines of its standard error.")]


class ShellOutcome(NamedTuple):
    """What a `ShellProgram` returns: the value for the task, and the command's output.

    The worker's wrapper splits it, so the output travels beside the value (never inside a
    proxied large value) and a failed command becomes a failed task.
    """

    value: Any
    output: ShellOutput


#: What a method's ``preprocess`` is called with (the task's directory, then its inputs) and
#: returns: the fields to fill the command template with (None: the task's keyword inputs).
Preprocess = Callable[..., Mapping[str, Any] | None]

#: What a method's ``postprocess`` is called with (the task's directory and the command's
#: output) and returns: the task's value.
Postprocess = Callable[[Path, ShellOutput], Any]


@dataclasses.dataclass(frozen=True)
class ShellProgram:
    """A command template run on a worker for each task (see the module's docstring).

    Attributes:
        name: The method's name, for messages.
        command: A template in Python's ``str.format`` syntax: ``{steps}`` is a field of the
            task (its keyword inputs, or what ``preprocess`` returns), ``{0}`` its first
            positional input, ``{run_dir}`` the task's directory. Each value is quoted for
            the shell (a list or tuple becomes several quoted words).
        mpi: Prefix the command with the MPI launcher of the task's resource specification.
        preprocess: Called as ``preprocess(run_dir, *args, **kwargs)`` before the command.
        postprocess: Called as ``postprocess(run_dir, output)`` after a command that succeeded;
            without it the task's value is the command's stdout.
        output_lines: Lines of stdout and of stderr kept (the last ones).
        keep_run_dir: Leave the task's directory in place (its path is ``{run_dir}``)
            instead of removing it after the task.
    """

    name: str
    command: str
    mpi: bool = False
    preprocess: Preprocess | None = None
    postprocess: Postprocess | None = None
    output_lines: int = 1000
    keep_run_dir: bool = False

    def __post_init__(self) -> None:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.command) if f is not None]
        except ValueError as exc:
            raise ValueError(f"method {self.name!r}: command template: {exc}") from exc
        if not self.command.strip():
            raise ValueError(f"method {self.name!r}: the command is empty")
        if any(field == "" for field in fields):
            raise ValueError(
                f"method {self.name!r}: command template {self.command!r} has an empty field "
                "'{}'; name the field ({steps}) or number it ({0})"
            )
        if self.output_lines < 1:
            raise ValueError(f"method {self.name!r}: output_lines must be >= 1")

    @property
    def __name__(self) -> str:
        """The method's name (what a registered function is called)."""
        return self.name

    def __call__(self, *args: Any, **kwargs: Any) -> ShellOutcome:
        """Run the command for one task; a non-zero exit is a failed outcome, not an error."""
        run_dir = task_directory(self.name)
        try:
            fields = self._fields(run_dir, args, kwargs)
            command = _filled(self.name, self.command, args, {**fields, "run_dir": run_dir})
            if self.mpi:
                command = f"{mpi_prefix(self.name)} {command}"
            output = run_command(command, run_dir, self.output_lines)
            if output.returncode != 0 or self.postprocess is None:
                return ShellOutcome(output.stdout if output.returncode == 0 else None, output)
            return ShellOutcome(self.postprocess(run_dir, output), output)
        finally:
            if not self.keep_run_dir:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _fields(
        self, run_dir: Path, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Mapping[str, Any]:
        if self.preprocess is None:
            return kwargs
        fields = self.preprocess(run_dir, *args, **kwargs)
        if fields is None:
            return kwargs
        if not isinstance(fields, Mapping):
            raise TypeError(
                f"the preprocess of method {self.name!r} returned a {type(fields).__name__}; "
                "it returns the command's fields as a dict (or None: the task's keyword inputs)"
            )
        return fields


def failure_message(name: str, output: ShellOutput) -> str:
    """What a task whose command failed reports: the exit status and the end of stderr."""
    tail = output.stderr.rstrip().splitlines()[-QUOTED_LINES:]
    quoted = "\n".join(tail) if tail else "(nothing on stderr)"
    return (
        f"method {name!r}: command exited with status {output.returncode}: {output.command}\n"
        f"last lines of stderr:\n{quoted}"
    )


def _filled(name: str, template: str, args: tuple[Any, ...], fields: Mapping[str, Any]) -> str:
    quoted = {key: _quoted(value) for key, value in fields.items()}
    try:
        return template.format(*(_quoted(value) for value in args), **quoted)
    except KeyError as exc:
        given = ", ".join(sorted(fields)) or "none"
        raise KeyError(
            f"the command of method {name!r} needs the field {exc.args[0]!r}, which the task "
            f"did not give (fields: {given}; give it as a keyword input, or from preprocess)"
        ) from None
    except IndexError:
        raise IndexError(
            f"the command of method {name!r} names more positional inputs than the task's "
            f"{len(args)}"
        ) from None


def _quoted(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(shlex.quote(str(item)) for item in value)
    return shlex.quote(str(value))


def run_command(
    command: str,
    run_dir: Path,
    lines: int,
    stdin: str | None = None,
    names: tuple[str, str] = ("stdout", "stderr"),
) -> ShellOutput:
    """Run ``command`` with bash in ``run_dir``; stop its whole session if interrupted.

    Its output goes to the files ``names`` in ``run_dir``; the last ``lines`` lines of each
    are kept. ``stdin`` is its standard input (None: nothing).
    """
    stdout_path, stderr_path = run_dir / names[0], run_dir / names[1]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            ["/bin/bash", "-c", command],
            cwd=run_dir,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            if stdin is not None:
                process.communicate(stdin.encode())
            returncode = process.wait()
        except BaseException:  # the walltime's interrupt, or the worker stopping
            _stop_session(process)
            raise
    return ShellOutput(command, returncode, _tail(stdout_path, lines), _tail(stderr_path, lines))


def task_directory(name: str) -> Path:
    """A new directory for one task of method ``name``: in the task's sandbox, if it has one.

    Otherwise in the worker's working directory, which an HPC endpoint keeps on a filesystem
    every node of a block shares.
    """
    base = os.environ.get("GC_TASK_SANDBOX_DIR") or os.getcwd()
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


def mpi_prefix(name: str) -> str:
    """The launch prefix Parsl composed for this task's nodes and ranks (MPI sites only)."""
    prefix = os.environ.get("PARSL_MPI_PREFIX")
    if not prefix:
        raise RuntimeError(
            f"method {name!r} is an MPI program, but this worker was given no MPI launch "
            "prefix: its site does not run a GlobusMPIEngine"
        )
    return prefix


def _stop_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's session (launcher, ranks), then SIGKILL what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(TERM_GRACE_S)
        os.killpg(process.pid, signal.SIGKILL)  # ranks the launcher left behind
    process.wait()


def _tail(path: Path, lines: int) -> str:
    with path.open("rb") as handle:
        kept = handle.readlines()[-lines:]
    return b"".join(kept).decode(errors="replace")
