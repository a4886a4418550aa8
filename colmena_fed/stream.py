"""Intermediate results, on the worker's side: what a streaming method sends while it runs.

A streaming method is a generator (each value it yields is sent) or a function that calls
`emit`. Each value goes to the site's channel (a Redis stream named for the run) with the
task's id, the attempt and a sequence number (0, 1, ...): `emit` queues it, and a sender thread
appends what is queued in one round trip while the method goes on; the method's result is
reported only once the channel has every value. A value too large to travel inline goes through
the site's result store, as a large result does, and the channel carries its proxy. The
thinker's side (`colmena_fed.channels`) reads the stream in order.

A channel that cannot be reached within its ``timeout_s`` raises `ChannelUnreachable` in the
method; the task server reads that as a site failure (the task is run again, elsewhere if need
be), never as the method's fault.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dill
import redis

from colmena_fed.connectors import redis_client
from colmena_fed.large import proxied_if_large

if TYPE_CHECKING:
    from colmena_fed.data import ResultPolicy

#: The exception type of a report whose method could not reach its channel.
CHANNEL_UNREACHABLE = "ChannelUnreachable"

#: Seconds between two tries to reach a channel that did not answer.
RETRY_S = 0.2
#: Values a streaming task may have queued for its channel before `emit` waits.
MAX_QUEUED = 10_000


class ChannelUnreachable(Exception):
    """The site's channel did not take an intermediate result within its timeout."""


@dataclass(frozen=True)
class StreamTarget:
    """Where a site's workers send intermediate results: one channel, and the run's stream."""

    channel: str
    hostname: str
    port: int
    password_env: str | None
    password_file: str | None
    tls: bool
    timeout_s: float
    #: The run's Redis stream (its key).
    key: str
    #: How a value too large to travel inline goes through the site's result store.
    results: ResultPolicy | None = None

    def client(self) -> redis.Redis:
        """A new client of the channel's Redis server."""
        return redis_client(
            self.hostname,
            self.port,
            self.password_env,
            self.password_file,
            tls=self.tls,
            timeout_s=self.timeout_s,
        )

    def where(self) -> str:
        """The channel, in words, for messages."""
        return f"channel {self.channel!r} (redis {self.hostname}:{self.port})"


#: This worker process's client of each channel, made on first use.
_clients: dict[tuple[str, int, str | None, str | None, bool], redis.Redis] = {}


class TaskStream:
    """One attempt of one task, streaming: sends each value with the next sequence number.

    `send` queues a value and returns; a sender thread appends what is queued to the channel
    in one round trip (a pipeline), in order, while the method goes on. `finish` waits until
    the channel has every value. A channel that fails is raised by the next `send`, or by
    `finish`, as `ChannelUnreachable`.
    """

    def __init__(self, target: StreamTarget, task_id: str, attempt: int) -> None:
        """Stream for attempt ``attempt`` of task ``task_id`` to ``target``."""
        self.target, self.task_id, self.attempt = target, task_id, attempt
        #: Values sent so far (the next one's sequence number).
        self.sent = 0
        self._client: redis.Redis | None = None
        self._queued: list[dict[str, Any]] = []
        self._in_transit = 0
        self._finishing = False
        self._failure: ChannelUnreachable | None = None
        self._changed = threading.Condition()
        self._sender: threading.Thread | None = None

    def send(self, value: Any) -> None:
        """Queue ``value`` for the channel (waiting while `MAX_QUEUED` are queued already)."""
        if self._failure is not None:
            raise self._failure
        if (
            self._client is None
        ):  # made in the method's call: a password it cannot read is its error
            self._client = _client(self.target)
        fields = {
            "t": self.task_id,
            "a": self.attempt,
            "s": self.sent,
            "w": repr(time.time()),
            "v": _serialized(value, self.target.results),
        }
        with self._changed:
            while len(self._queued) >= MAX_QUEUED and self._failure is None:
                self._changed.wait()
            if self._failure is not None:
                raise self._failure
            self._queued.append(fields)
            self.sent += 1
            self._changed.notify_all()
        if self._sender is None:
            name = f"colmena-fed-stream-{self.task_id}"
            self._sender = threading.Thread(target=self._send_queued, name=name, daemon=True)
            self._sender.start()

    def finish(self) -> None:
        """Return once the channel has every value sent; raises `ChannelUnreachable` if not."""
        with self._changed:
            self._finishing = True
            self._changed.notify_all()
            while (self._queued or self._in_transit) and self._failure is None:
                self._changed.wait()
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        if self._failure is not None:
            raise self._failure

    def _send_queued(self) -> None:
        assert self._client is not None
        changed = self._changed
        while True:
            with changed:
                while not self._queued and not self._finishing:
                    changed.wait()
                if not self._queued:
                    return
                batch, self._queued = self._queued, []
                self._in_transit = len(batch)
                changed.notify_all()
            try:
                self._append(self._client, batch)
            except ChannelUnreachable as exc:
                with changed:
                    self._failure, self._in_transit = exc, 0
                    changed.notify_all()
                return
            with changed:
                self._in_transit = 0
                changed.notify_all()

    def _append(self, client: redis.Redis, batch: list[dict[str, Any]]) -> None:
        """XADD each of ``batch`` in one round trip, trying again until the timeout."""
        target = self.target
        deadline = time.monotonic() + target.timeout_s
        while True:
            try:
                pipe = client.pipeline(transaction=False)
                for fields in batch:
                    pipe.xadd(target.key, fields)  # type: ignore[arg-type]
                pipe.execute()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise ChannelUnreachable(
                        f"{target.where()} did not take intermediate result "
                        f"{batch[0]['s']} of task {self.task_id} within {target.timeout_s} s "
                        f"({exc})"
                    ) from exc
                time.sleep(RETRY_S)


def _client(target: StreamTarget) -> redis.Redis:
    """This worker process's client of ``target``'s Redis server."""
    key = (target.hostname, target.port, target.password_env, target.password_file, target.tls)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = target.client()
    return client


_current = threading.local()


def emit(value: Any) -> None:
    """Send ``value`` to the thinker now, as an intermediate result of the running task.

    Call it inside a streaming method (``Method(fn, streams=True)``) while it runs on a site.
    The thinker gets it on the task's topic as a `Result` with ``complete`` False and its
    ``sequence`` number; the method's return value comes last, as the final result.

    Raises:
        RuntimeError: Not inside a streaming task.
        ChannelUnreachable: The site's channel did not take an earlier value within its
            timeout.
    """
    stream: TaskStream | None = getattr(_current, "stream", None)
    if stream is None:
        raise RuntimeError(
            "emit() sends an intermediate result of a streaming task: call it inside a method "
            "made with Method(function, streams=True) (generators stream by themselves), "
            "while it runs on a site"
        )
    stream.send(value)


def streaming_into(stream: TaskStream | None) -> None:
    """Make ``stream`` the one `emit` sends to in this thread (None: no stream)."""
    _current.stream = stream


def drain(values: Generator[Any, None, Any]) -> Any:
    """Send every value a generator yields; its return value."""
    try:
        while True:
            emit(next(values))
    except StopIteration as stop:
        return stop.value


def _serialized(value: Any, results: ResultPolicy | None) -> bytes:
    """``value`` as it travels: pickled (dill if pickle cannot), or its proxy if it is large."""
    if results is not None:
        value = proxied_if_large(value, results)[0]
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return bytes(dill.dumps(value))
