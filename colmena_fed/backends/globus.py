"""The ``globus`` backend: a Globus Compute endpoint reached through the Globus Compute SDK.

Each site submits through its own ``globus_compute_sdk.Executor`` (functions registered once
per run, tasks batched) and reads its endpoint's status with ``Client.get_endpoint_status``.
The task server polls that within Globus Compute's rate limit. Every site of a run submits into
the run's own task group, so the SDK's result watcher for it (one per task group and process) is
the run's alone, and the task server stops it when it stops.

The SDK's Executor stops for good after a failed submission (an HTTP error, an expired login,
a batch over the size limit) and cancels whatever it still held. The site then builds a new one
and reuses the function ids. The tasks hit come back as site failures, so the scheduler retries
them or fails them by its rules, and none is lost.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import globus_sdk
from globus_compute_sdk import Client, Executor
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk import executor as sdk_executor
from globus_compute_sdk.sdk.auth.globus_app import get_globus_app

from colmena_fed.backends import (
    PAYLOAD_LIMIT_BYTES,
    OutcomeCallback,
    SiteStatus,
    StatusCallback,
    last_line,
)
from colmena_fed.backends.reattach import Claim, reattach
from colmena_fed.backends.serializer import FastSerializer
from colmena_fed.errors import ConfigError, SiteError
from colmena_fed.large import small
from colmena_fed.methods import Method
from colmena_fed.models import Result
from colmena_fed.sites import GlobusConfig, SiteConfig
from colmena_fed.testbed.token import read_token
from colmena_fed.worker import WorkerReport, read_report

#: Inputs surely under this size are not measured (they cannot crowd a batch).
_SMALL_BYTES = 64_000

#: HTTP statuses that mean the service itself is unwell (worth a retry elsewhere or later).
_SERVICE_UNWELL = frozenset({500, 502, 503, 504})

#: Serializes inputs as the site's client does, to measure them before they are sent.
_SIZER = FastSerializer()

#: Seconds a status poll may wait for the service's answer.
STATUS_TIMEOUT_S = 10.0


def make_client(config: GlobusConfig, *, retries: bool = True) -> Client:
    """A Globus Compute client for the service ``config`` names.

    ``cloud`` uses the user's existing Globus login, or a service account from
    ``GLOBUS_COMPUTE_CLIENT_ID``/``GLOBUS_COMPUTE_CLIENT_SECRET``; it refuses to start an
    interactive login from inside a campaign. ``testbed`` talks to the local stand-in with the
    token it keeps in its directory. Without ``retries`` each request is tried once, with a
    short timeout. Task inputs are serialized by `FastSerializer`.
    """
    if config.service == "testbed":
        client = Client(
            local_compute_services=True,
            authorizer=globus_sdk.AccessTokenAuthorizer(read_token(config.testbed_dir)),
            do_version_check=False,
        )
    else:
        try:
            app = get_globus_app()
        except ValueError as exc:  # one of the two service-account variables only
            raise ConfigError(f"globus: {exc}") from exc
        client = Client(app=app, do_version_check=False)
        if isinstance(app, globus_sdk.UserApp) and app.login_required():
            raise ConfigError(
                "globus: not logged in to Globus Compute on this machine; run "
                "'globus-compute-endpoint login' once, or set GLOBUS_COMPUTE_CLIENT_ID and "
                "GLOBUS_COMPUTE_CLIENT_SECRET for a service account"
            )
    client.fx_serializer = FastSerializer()
    return client if retries else _without_retries(client)


def _without_retries(client: Client) -> Client:
    """One attempt per request and `STATUS_TIMEOUT_S` to answer it (the SDK is pinned)."""
    web = client._compute_web_client
    for api in (web.v2, web.v3):
        api.retry_config.max_retries = 0
        api.transport.http_timeout = STATUS_TIMEOUT_S
    return client


class ServiceClients:
    """A run's Globus Compute clients (made when a globus site first needs them), task group.

    ``tasks`` registers functions and submits, with the SDK's retries. ``status`` polls
    endpoint status with a single attempt: a poll is repeated a period later anyway, and the
    SDK serializes each client's requests, so a poll retrying through an outage (15 s and more
    with the SDK's back-off) would hold submissions back, and a status report with it.
    """

    def __init__(self, config: GlobusConfig, task_group: uuid.UUID | None = None) -> None:
        """Clients for the service ``config`` names; tasks go into ``task_group`` (or a new one)."""
        self.config = config
        self.task_group = task_group or uuid.uuid4()
        #: The run's globus sites, by name (each registers itself when it starts).
        self.sites: dict[str, GlobusBackend] = {}
        self._reloader: Executor | None = None

    def reattach(self, claims: Sequence[Claim], known: Collection[str]) -> None:
        """Claim the outcomes of tasks a resumed run's thinker left in flight at globus sites.

        One ``reload_tasks`` of the run's task group finds them (see
        `colmena_fed.backends.reattach`); the Executor that reloaded them stops with the run.
        """
        self._reloader = Executor(client=self.tasks, task_group_id=self.task_group)
        reattach(self._reloader, claims, known, self.sites)

    @functools.cached_property
    def tasks(self) -> Client:
        """The client for registering functions and submitting tasks."""
        return make_client(self.config)

    @functools.cached_property
    def status(self) -> Client:
        """The client for status polls: one attempt each, `STATUS_TIMEOUT_S` at most."""
        return make_client(self.config, retries=False)

    def stop(self) -> None:
        """Stop the SDK's result watcher of the run's task group, without waiting for it.

        Its sites' Executors are stopped by then. The SDK's own shutdown of a watcher waits
        for its thread, and when the service has gone that thread sleeps between reconnection
        attempts (up to 10 s each, tracebacks logged): instead it is asked to stop, forgets what
        it still watches, and its (daemon) thread ends on its own. This reaches into the
        watcher (pinned SDK version; see pyproject.toml).
        """
        if self._reloader is not None:
            self._reloader.shutdown(wait=False, cancel_futures=True)
            self._reloader = None
        watcher = sdk_executor._RESULT_WATCHERS.pop(self.task_group, None)
        if watcher is None:
            return
        with watcher._new_futures_lock:
            watcher._closed = True
            watcher._open_futures.clear()
            watcher._open_futures_empty.set()
        watcher._time_to_stop = True


class GlobusBackend:
    """A site that is a Globus Compute endpoint, reached through the Globus Compute service."""

    polled = True
    outlives_thinker = True

    def __init__(self, name: str, config: SiteConfig, clients: ServiceClients) -> None:
        """Prepare the site ``name``; ``clients`` are shared by the run's sites."""
        assert config.endpoint is not None
        self.name = name
        self.endpoint_id = str(config.endpoint)
        self.config = config
        self._clients = clients
        self._client: Client | None = None
        self._status_client: Client | None = None
        self._executor: Executor | None = None
        self._function_ids: dict[str, str] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self._batch_size = config.batch_size
        # What every task of the site carries (a task's own values are merged over them).
        self._spec = dict(config.resource_specification) or None
        self._endpoint_config = dict(config.user_endpoint_config) or None
        #: Tasks handed to an Executor and not yet settled: its future -> (Executor, delivery).
        #: A task's outcome is handed over by whoever takes it out of here, so exactly once.
        self._sent: dict[Future[Any], tuple[Executor, OutcomeCallback]] = {}
        #: Tasks sent whose Globus Compute id the task server has not yet been told: our ids.
        self._unacknowledged: dict[Future[Any], str] = {}
        self._started: float | None = None  # the endpoint's start time, from its status
        self._last_online: SiteStatus | None = None  # its last online report
        self._refused: BaseException | None = None  # the last 413, which halved the batch size
        self._lock = threading.Lock()

    def start(self, run_dir: Path, on_status: StatusCallback) -> None:
        """Connect to the service; the endpoint's state is read by polling `status`."""
        self._client = self._clients.tasks
        self._status_client = self._clients.status
        self._executor = self._new_executor()
        self._clients.sites[self.name] = self

    def _new_executor(self) -> Executor:
        """An Executor for this site, knowing the functions already registered."""
        executor = Executor(
            endpoint_id=self.endpoint_id,
            client=self._client,
            task_group_id=self._clients.task_group,
            batch_size=self._batch_size,
            user_endpoint_config=self.config.user_endpoint_config or None,
            resource_specification=self.config.resource_specification or None,
            api_burst_limit=8,
            api_burst_window_s=1,
        )
        for method, function_id in self._function_ids.items():
            executor.register_function(self._functions[method], function_id=function_id)
        return executor

    def register(self, method: Method, function: Callable[..., Any]) -> None:
        """Register ``function`` with the service once for this run."""
        assert self._executor is not None, "start the site before registering methods"
        try:
            function_id = self._executor.register_function(function)
        except globus_sdk.GlobusAPIError as exc:
            message = f"cannot register {method.name}: {_api_message(exc)}"
            raise SiteError(self.name, _code(exc), message) from exc
        except globus_sdk.NetworkError as exc:
            message = f"cannot register {method.name}: {_unreachable(self._client, exc)}"
            raise SiteError(self.name, "Unreachable", message) from exc
        self._functions[method.name] = function
        self._function_ids[method.name] = function_id

    def submit(self, task: Result, on_done: OutcomeCallback) -> None:
        """Hand the task to the site's Executor, which batches it to the service."""
        refused, size = self._check_inputs(task)
        if refused is not None:
            on_done(refused)
            return
        unsent: list[OutcomeCallback] = []
        try:
            with self._lock:
                future = self._send(task, size, on_done, unsent)
        finally:
            self._fail_unsent(unsent)  # outside the lock: a failed task may be re-sent at once
        if future is None:
            on_done(SiteError(self.name, "NotStarted", "the site is not started"))
        else:
            future.add_done_callback(self._settle)

    def _send(
        self,
        task: Result,
        size: int | None,
        on_done: OutcomeCallback,
        unsent: list[OutcomeCallback],
    ) -> Future[Any] | None:
        """Submit to the Executor (a new one if the last stopped); the caller holds the lock.

        Returns the task's future, None if the site is not started; adds to ``unsent`` the
        tasks a stopped Executor left behind.
        """
        executor = self._executor
        if executor is None:
            return None
        if executor._stopped:  # a failed submission stopped it: start afresh
            unsent.extend(self._take_unsent())
            executor = self._executor = self._new_executor()
        if size is not None:  # a batch, whole, must stay under the limit
            fit = max(1, PAYLOAD_LIMIT_BYTES * 9 // 10 // max(1, size))
            self._batch_size = executor.batch_size = min(executor.batch_size, fit)
        requested = task.resources
        spec, endpoint_config = self._spec, self._endpoint_config
        if requested.specification:
            spec = {**(spec or {}), **requested.specification}
        if requested.endpoint_config:
            endpoint_config = {**(endpoint_config or {}), **requested.endpoint_config}
        executor.resource_specification = spec
        executor.user_endpoint_config = endpoint_config
        future = executor.submit_to_registered_function(
            self._function_ids[task.method],
            (task.task_id, len(task.attempts), task.walltime, *task.args),
            dict(task.kwargs),
        )
        self._sent[future] = (executor, on_done)
        self._unacknowledged[future] = task.task_id
        return future

    def _settle(self, future: Future[Any]) -> None:
        """The SDK resolved a task's future: hand its outcome over (once)."""
        with self._lock:
            sent = self._sent.pop(future, None)
        if sent is not None:
            sent[1](self.outcome(future))

    def _take_unsent(self) -> list[OutcomeCallback]:
        """Take the tasks a stopped Executor will never send; the caller holds the lock.

        When one submission fails, the SDK fails its tasks and stops, but the tasks it had
        already taken for other submissions (other resource specifications) are left pending
        for ever: the caller fails them.
        """
        unsent = []
        for future, (executor, on_done) in list(self._sent.items()):
            sent = getattr(future, "task_id", None) is not None
            if executor._stopped and not sent and not future.done():
                del self._sent[future]
                unsent.append(on_done)
        return unsent

    def _fail_unsent(self, unsent: list[OutcomeCallback]) -> None:
        message = "not sent: the Executor stopped after another submission failed"
        for on_done in unsent:
            on_done(SiteError(self.name, "NotSent", message))

    def _check_inputs(self, task: Result) -> tuple[SiteError | None, int | None]:
        """Refuse inputs that cannot be serialized, or are too large to send.

        Checked before the Executor sees them: it would fail the whole batch they travel in.
        Also returns their size when it is large enough to matter for the size of a batch.
        """
        values = [*task.args, *task.kwargs.values()]
        if all(small(value, _SMALL_BYTES) for value in values):
            return None, None
        where = f"task {task.task_id} ({task.method})"
        try:
            size = len(_SIZER.serialize((task.args, dict(task.kwargs))))
        except Exception as exc:
            message = f"cannot serialize the inputs of {where}: {exc}"
            return SiteError(self.name, "SerializationError", message, kind="rejected"), None
        if size <= PAYLOAD_LIMIT_BYTES:
            return None, size
        message = (
            f"the inputs of {where} are {size / 1e6:.1f} MB once serialized, over Globus "
            f"Compute's {PAYLOAD_LIMIT_BYTES / 2**20:.0f} MiB limit; configure a data store "
            "('data: stores:' in the sites YAML) so that large inputs travel through it"
        )
        return SiteError(self.name, "PayloadTooLarge", message, kind="rejected"), None

    def outcome(self, future: Future[Any]) -> WorkerReport | SiteError:
        """What a settled future of this site means: the worker's report, or a site failure."""
        try:
            return read_report(future.result())
        except CancelledError:
            return SiteError(self.name, "Cancelled", "the submission was cancelled")
        except TaskExecutionFailed as exc:
            text = last_line(exc.remote_data)
            code = "MaxResultSizeExceeded" if "MaxResultSizeExceeded" in text else "TaskFailed"
            if code == "MaxResultSizeExceeded":
                text += (
                    "; configure a data store ('data: stores:' in the sites YAML, reachable "
                    "from this site) so that large results travel through it"
                )
                return SiteError(self.name, code, text, kind="rejected")
            return SiteError(self.name, code, text)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status == 413:
                with self._lock:  # the batch was too large: send smaller ones from now on
                    # Every future of the refused batch carries the one exception: halve once.
                    if exc is not self._refused:
                        self._refused = exc
                        self._batch_size = max(1, self._batch_size // 2)
            return SiteError(self.name, _code(exc), _api_message(exc))
        except Exception as exc:
            return SiteError(self.name, type(exc).__name__, str(exc) or repr(exc))

    def status(self) -> SiteStatus:
        """The endpoint's status as the service reports it, with the tasks it took since."""
        with self._lock:
            unsent = self._take_unsent()
            acknowledged = self._acknowledged()
        self._fail_unsent(unsent)
        status = self._status()
        return replace(status, acknowledged=acknowledged) if acknowledged else status

    def _acknowledged(self) -> tuple[tuple[str, str], ...]:
        """Tasks the service took since the last call, with their ids; the caller holds the lock."""
        taken = []
        for future, task_id in list(self._unacknowledged.items()):
            remote = getattr(future, "task_id", None)
            if remote is not None:
                taken.append((task_id, str(remote)))
            if remote is not None or future.done():
                del self._unacknowledged[future]
        return tuple(taken)

    def _status(self) -> SiteStatus:
        client = self._status_client
        if client is None:
            return SiteStatus(online=False, detail="not started")
        try:
            answer = client.get_endpoint_status(self.endpoint_id)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status in _SERVICE_UNWELL or exc.http_status == 429:
                return self._last_known(_api_message(exc))
            return SiteStatus(online=False, detail=_api_message(exc))
        except globus_sdk.NetworkError as exc:
            return self._last_known(f"no status: {_unreachable(client, exc)}")
        except Exception as exc:
            return SiteStatus(online=False, detail=f"no status: {exc}")
        self._last_online = None
        details = answer.get("details") or {}
        if answer.get("status") != "online":
            return SiteStatus(online=False, detail=f"endpoint {answer.get('status')}", raw=details)
        started, self._started = self._started, details.get("start_unix", self._started)
        if started is not None and self._started != started:
            # An endpoint acknowledges tasks when it receives them: those it held when it went
            # down are gone, and only this report tells. Offline once, so they are re-placed.
            return SiteStatus(
                online=False, detail="the endpoint restarted; the tasks it held were lost"
            )
        self._last_online = SiteStatus.from_report(details)
        return self._last_online

    def _last_known(self, detail: str) -> SiteStatus:
        """While the service cannot answer: the endpoint's last online report, or offline.

        The report keeps its time, so the task server's staleness limit decides when the site
        stops counting as online; a blip of the service does not re-place its tasks.
        """
        if self._last_online is None:
            return SiteStatus(online=False, detail=detail)
        return replace(self._last_online, detail=detail)

    def shutdown(self) -> None:
        """Stop the Executor; the tasks still out are the task server's to end."""
        with self._lock:  # what is no longer in _sent is never handed over
            executor, self._executor = self._executor, None
            self._sent, self._unacknowledged = {}, {}
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _unreachable(client: Client | None, exc: Exception) -> str:
    """Why the service could not be reached, with the testbed hint where it applies."""
    address = getattr(client, "web_service_address", "the Globus Compute service")
    message = f"cannot reach {address} ({exc})"
    if "localhost" in str(address):
        message += "; is the testbed up? ('colmena-fed testbed up')"
    return message


def _code(exc: globus_sdk.GlobusAPIError) -> str:
    return str(exc.code) if exc.code and exc.code != "Error" else f"HTTP{exc.http_status}"


def _api_message(exc: globus_sdk.GlobusAPIError) -> str:
    """What the service said, with what the user can do about the usual causes."""
    status = exc.http_status
    text = f"Globus Compute answered {status}: {exc.message or exc.code}"
    if status == 401:
        return text + " (login expired: run 'globus-compute-endpoint login' again)"
    if status == 429:
        return text + " (rate limited: raise scheduler.status_period or batch_size)"
    if status == 413:
        return text + " (submission over 10 MB: lower the site's batch_size or use a data store)"
    if status in _SERVICE_UNWELL:
        return text + " (the service is unwell)"
    return text
