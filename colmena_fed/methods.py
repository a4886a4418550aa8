"""Methods: the task functions a task server can run, and what each needs from a site."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    """

    function: Callable[..., Any]
    slot: str = "cpu"
    name: str = field(default="")
    max_retries: int = 2

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise TypeError(f"Method needs a callable, got {self.function!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.name:
            object.__setattr__(self, "name", self.function.__name__)


MethodLike = Method | Callable[..., Any]


def as_methods(methods: Iterable[MethodLike]) -> dict[str, Method]:
    """Index methods by name; a bare function needs a 'cpu' slot. Duplicate names are an error."""
    indexed: dict[str, Method] = {}
    for item in methods:
        method = item if isinstance(item, Method) else Method(item)
        if method.name in indexed:
            raise ValueError(
                f"two methods are named {method.name!r}; give one another name with "
                f"Method(function, name=...)"
            )
        indexed[method.name] = method
    return indexed
