"""Methods: the task functions a task server can run, and what each needs from a site.

A task server takes them as `Method`, as bare functions, or as Colmena gives them to its
``ParslTaskServer``: ``(function, {'executors': ['gpu']})`` pairs, where the one executor
label names the slot kind, and `PythonMethod` objects.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from colmena_fed.mpi import specification_problem
from colmena_fed.shell import Postprocess, Preprocess, ShellProgram


@dataclass(frozen=True)
class Method:
    """A task function, the slot kind it needs, and how often a site failure is retried.

    Attributes:
        function: The function workers run.
        slot: Kind of slot the method needs ('cpu', 'gpu' or a kind a site declares).
        name: Name tasks use in ``send_inputs(method=...)``; the function's name by default.
        max_retries: Times a task is re-sent after a site fails it (worker or manager lost,
            endpoint error, site offline); exceptions raised by the function are never
            retried. A task can override it with ``send_inputs(..., max_retries=...)``.
        walltime: Seconds a call may run on its worker (None: no limit); past it the call is
            interrupted, its worker replaced if it does not return, and the task ends as a
            ``timeout`` failure. A task can override it with ``send_inputs(walltime=...)``.
        streams: Whether the method sends intermediate results while it runs: each value a
            generator yields, or each `colmena_fed.emit` call. None: True for a generator
            function. A streaming method runs only on sites that reach a channel.
        specification: The Globus Compute resource specification of its tasks (``num_nodes``,
            ``ranks_per_node`` or ``num_ranks``, ``launcher_options``): such a task runs only
            on an MPI site (a ``GlobusMPIEngine``), on that many whole nodes. A task's own
            ``send_inputs(resources={"specification": {...}})`` is merged over it.
    """

    function: Callable[..., Any]
    slot: str = "cpu"
    name: str = field(default="")
    max_retries: int = 2
    walltime: float | None = None
    streams: bool | None = None
    specification: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise TypeError(f"Method needs a callable, got {self.function!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.walltime is not None and not self.walltime > 0:
            raise ValueError(f"walltime must be > 0 seconds (or None), got {self.walltime}")
        if not self.name:
            object.__setattr__(self, "name", self.function.__name__)
        if self.streams is None:
            object.__setattr__(self, "streams", inspect.isgeneratorfunction(self.function))
        if self.specification is not None:
            problem = specification_problem(self.specification)
            if problem is not None:
                raise ValueError(f"method {self.name!r}, resource specification: {problem}")
            object.__setattr__(self, "specification", dict(self.specification) or None)


class ShellMethod(Method):
    """A method that runs a program: a command template filled in with each task's inputs.

    The command runs with bash on the worker, in a directory of its own for the task (see
    `colmena_fed.shell.ShellProgram` for the template's syntax). The task's value is what
    ``postprocess(run_dir, output)`` returns (without it: the command's stdout), and its
    record's ``shell`` holds the command, its exit status and the last ``output_lines`` lines
    of its stdout and stderr. A non-zero exit status fails the task (a ``user`` failure whose
    message quotes the end of stderr); past its ``walltime`` the command's whole process tree
    is stopped.
    """

    def __init__(
        self,
        command: str,
        name: str,
        *,
        slot: str = "cpu",
        specification: Mapping[str, Any] | None = None,
        walltime: float | None = None,
        max_retries: int = 2,
        preprocess: Preprocess | None = None,
        postprocess: Postprocess | None = None,
        output_lines: int = 1000,
        keep_run_dir: bool = False,
        mpi: bool = False,
    ) -> None:
        """Run ``command`` for each task of the method ``name``.

        ``preprocess(run_dir, *args, **kwargs)`` runs first, in the task's directory, and
        returns the command's fields (None: the task's keyword inputs); ``mpi`` prefixes the
        command with the MPI launcher Parsl composes for the task's resource specification.
        """
        program = ShellProgram(
            name, command, mpi, preprocess, postprocess, output_lines, keep_run_dir
        )
        super().__init__(
            program,
            slot=slot,
            name=name,
            max_retries=max_retries,
            walltime=walltime,
            streams=False,
            specification=specification,
        )

    @property
    def program(self) -> ShellProgram:
        """What the method's workers run."""
        assert isinstance(self.function, ShellProgram)
        return self.function


class MPIMethod(ShellMethod):
    """An MPI program: a `ShellMethod` launched by the MPI site's launcher on whole nodes.

    Its tasks need a ``num_nodes`` and a rank count (``ranks_per_node`` or ``num_ranks``) in
    their resource ``specification``, from the method or each task, and run only on sites
    whose engine is a ``GlobusMPIEngine`` with blocks of at least that many nodes. Its slot
    kind is ``nodes`` unless told otherwise: a site offering ``resources: {nodes: 4}`` runs
    tasks needing up to 4 nodes in all at once.
    """

    def __init__(
        self,
        command: str,
        name: str,
        *,
        slot: str = "nodes",
        specification: Mapping[str, Any] | None = None,
        walltime: float | None = None,
        max_retries: int = 2,
        preprocess: Preprocess | None = None,
        postprocess: Postprocess | None = None,
        output_lines: int = 1000,
        keep_run_dir: bool = False,
    ) -> None:
        """Launch ``command`` on the nodes of each task of the method ``name``."""
        super().__init__(
            command,
            name,
            slot=slot,
            specification=specification,
            walltime=walltime,
            max_retries=max_retries,
            preprocess=preprocess,
            postprocess=postprocess,
            output_lines=output_lines,
            keep_run_dir=keep_run_dir,
            mpi=True,
        )


class PythonMethod(Method):
    """Colmena's ``PythonMethod(function, name=None)``: a `Method` for a 'cpu' slot."""

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        """Wrap ``function``, named ``name`` (default: the function's name)."""
        super().__init__(function, name=name or "")


class PythonGeneratorMethod(Method):
    """Colmena's ``PythonGeneratorMethod``: a generator function, for a 'cpu' slot.

    With a ``streaming_queue`` (any value but None: the values travel through the site's
    channel, not through the queues given), each value the generator yields reaches the
    thinker as an intermediate result, and the final result's value is the generator's return
    value if ``store_return_value``, else None. Without one, nothing streams: the final value
    is the list of the values yielded, or ``(values, return value)`` if ``store_return_value``.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        store_return_value: bool = False,
        streaming_queue: Any = None,
    ) -> None:
        """Wrap the generator function ``function`` as Colmena does."""
        streams = streaming_queue is not None
        run = functools.partial(_streamed if streams else _collected, function, store_return_value)
        super().__init__(run, name=name or function.__name__, streams=streams)
        object.__setattr__(self, "store_return_value", store_return_value)
        object.__setattr__(self, "streaming_queue", streaming_queue)


def _streamed(
    function: Callable[..., Generator[Any, None, Any]], keep: bool, *args: Any, **kwargs: Any
) -> Generator[Any, None, Any]:
    """What a streaming `PythonGeneratorMethod` runs: the generator, its return value if kept."""
    value = yield from function(*args, **kwargs)
    return value if keep else None


def _collected(
    function: Callable[..., Generator[Any, None, Any]], keep: bool, *args: Any, **kwargs: Any
) -> Any:
    """What a `PythonGeneratorMethod` without a streaming queue runs: every value, collected."""
    values = []
    generator = function(*args, **kwargs)
    while True:
        try:
            values.append(next(generator))
        except StopIteration as stop:
            return (values, stop.value) if keep else values


@runtime_checkable
class MethodSource(Protocol):
    """An object that makes its own `Method` (Colmena's ``ExecutableMethod`` does)."""

    def as_method(self, slot: str | None = None) -> Method:
        """The method, needing a ``slot`` slot (None: its own choice)."""


MethodLike = (
    Method | MethodSource | Callable[..., Any] | tuple[Callable[..., Any], Mapping[str, Any]]
)


def as_method(item: MethodLike) -> Method:
    """One method as a task server is given it: a `Method`, a function, or Colmena's pair."""
    if isinstance(item, Method):
        return item
    if isinstance(item, tuple):
        return _from_colmena_pair(item)
    if isinstance(item, MethodSource):
        return item.as_method()
    return Method(item)


def _from_colmena_pair(pair: tuple[Any, ...]) -> Method:
    """``(function, {'executors': [label]})``, as Colmena's ParslTaskServer takes a method."""
    if len(pair) != 2 or not isinstance(pair[1], Mapping):
        raise TypeError(f"a method pair is (function, {{'executors': [...]}}), got {pair!r}")
    function, options = pair
    name = getattr(function, "__name__", repr(function))
    unknown = set(options) - {"executors"}
    if unknown:
        raise ValueError(
            f"method {name}: options {sorted(unknown)} have no meaning here; only 'executors' "
            "(the slot kind the method needs) is read; give retries with "
            "Method(function, max_retries=...)"
        )
    executors = options.get("executors", "all")
    if executors == "all":
        return function.as_method() if isinstance(function, MethodSource) else Method(function)
    labels = [executors] if isinstance(executors, str) else list(executors)
    if len(labels) != 1:
        raise ValueError(
            f"method {name}: executors={executors!r}; a method needs one slot kind here "
            "(a site may offer several): name one, e.g. {'executors': ['gpu']}"
        )
    if isinstance(function, MethodSource):
        return function.as_method(labels[0])
    return Method(function, slot=labels[0])


def as_methods(methods: Iterable[MethodLike]) -> dict[str, Method]:
    """Index methods by name; a bare function needs a 'cpu' slot. Duplicate names are an error."""
    indexed: dict[str, Method] = {}
    for item in methods:
        method = as_method(item)
        if method.name in indexed:
            raise ValueError(
                f"two methods are named {method.name!r}; give one another name with "
                f"Method(function, name=...)"
            )
        indexed[method.name] = method
    return indexed
