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
from typing import Any


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
    """

    function: Callable[..., Any]
    slot: str = "cpu"
    name: str = field(default="")
    max_retries: int = 2
    walltime: float | None = None
    streams: bool | None = None

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


MethodLike = Method | Callable[..., Any] | tuple[Callable[..., Any], Mapping[str, Any]]


def as_method(item: MethodLike) -> Method:
    """One method as a task server is given it: a `Method`, a function, or Colmena's pair."""
    if isinstance(item, Method):
        return item
    if isinstance(item, tuple):
        return _from_colmena_pair(item)
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
        return Method(function)
    labels = [executors] if isinstance(executors, str) else list(executors)
    if len(labels) != 1:
        raise ValueError(
            f"method {name}: executors={executors!r}; a method needs one slot kind here "
            "(a site may offer several): name one, e.g. {'executors': ['gpu']}"
        )
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
