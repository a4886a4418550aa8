"""Site backends: how the task server reaches one Globus Compute endpoint.

Every backend speaks the same small protocol (`SiteBackend`); the task server never knows
which one it holds. ``local`` runs an endpoint YAML's engine in-process; ``sim`` models a site
in virtual time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from colmena_fed import clock
from colmena_fed.errors import SiteError
from colmena_fed.methods import Method
from colmena_fed.models import Result
from colmena_fed.sites import SiteConfig
from colmena_fed.worker import WorkerReport

if TYPE_CHECKING:
    from colmena_fed.backends.globus import ServiceClients
    from colmena_fed.backends.sim import SimWorld

#: Globus Compute's limit on one submission (a whole batch included).
PAYLOAD_LIMIT_BYTES = 10 * 2**20

#: What a backend hands back for one task: the worker's report, or why the site failed it.
Outcome = WorkerReport | SiteError
OutcomeCallback = Callable[[Outcome], None]


@dataclass(frozen=True)
class SiteStatus:
    """A snapshot of one site's live state, as its endpoint reports it."""

    online: bool
    detail: str = ""
    workers: int | None = None
    idle_workers: int | None = None
    pending_tasks: int | None = None
    outstanding_tasks: int | None = None
    managers: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    updated: float = field(default_factory=clock.now)
    #: Tasks the site's service took since the last report: (colmena-fed id, its own id).
    acknowledged: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> SiteStatus:
        """An online site, read from an engine's status report (its ``global_state``)."""
        return cls(
            online=True,
            workers=report.get("total_workers"),
            idle_workers=report.get("idle_workers"),
            pending_tasks=report.get("pending_tasks"),
            outstanding_tasks=report.get("outstanding_tasks"),
            managers=report.get("managers"),
            raw=report,
        )


StatusCallback = Callable[["SiteStatus"], None]


class SiteBackend(Protocol):
    """What the task server needs from a site.

    ``polled`` says whether the task server should poll `status`; a backend that is not polled
    reports every change of its state through the ``on_status`` callback given to `start`.
    ``outlives_thinker`` says whether the tasks it was sent run on when the thinker dies (a
    resumed run claims them), or die with it (a resumed run sends them again).
    """

    name: str
    endpoint_id: str
    polled: bool
    outlives_thinker: bool

    def start(self, run_dir: Path, on_status: StatusCallback) -> None:
        """Start or connect to the endpoint; raise `ConfigError` if its YAML is wrong."""

    def register(self, method: Method, function: Callable[..., Any]) -> None:
        """Make ``function`` (``method`` wrapped by `pack_method`) callable on the site."""

    def submit(self, task: Result, on_done: OutcomeCallback) -> None:
        """Send one task; ``on_done`` is called exactly once, from any thread."""

    def status(self) -> SiteStatus:
        """The site's live state (never raises: an unreachable site is offline)."""

    def shutdown(self) -> None:
        """Stop what `start` started; leaves no worker process behind."""


def last_line(text: str) -> str:
    """The most telling line of a remote traceback: its last one with words in it."""
    lines = [line.strip() for line in str(text).splitlines() if any(c.isalnum() for c in line)]
    return lines[-1] if lines else "unknown error"


def make_backend(
    name: str,
    config: SiteConfig,
    world: SimWorld | None = None,
    clients: ServiceClients | None = None,
) -> SiteBackend:
    """The backend that serves ``config``.

    A `sim` site joins ``world``; a `globus` site uses ``clients`` (one pair per task server).
    """
    if config.local is not None:
        from colmena_fed.backends.local import LocalBackend

        return LocalBackend(
            name, config.local, config.user_endpoint_config, config.resource_specification
        )
    if config.sim is not None:
        from colmena_fed.backends.sim import SimBackend

        assert world is not None, "a sim site needs the SimWorld of its federation"
        return SimBackend(name, config.sim, world)
    from colmena_fed.backends.globus import GlobusBackend

    assert clients is not None, "a globus site needs the task server's clients"
    return GlobusBackend(name, config, clients)
