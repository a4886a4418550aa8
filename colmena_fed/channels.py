"""Intermediate results, on the thinker's side: reading each channel's stream of the run.

One `ChannelReader` thread per channel reads the run's Redis stream in order, a batch at a
time (``XREAD BLOCK``), and hands each batch to the dispatcher, which journals it and puts each
value on its task's topic; only then does the reader trim what it read from the stream. A
thinker that dies between the two reads those entries again when its run resumes, from the
position its journal recorded, and the dispatcher drops what it had already taken: each
intermediate result reaches the thinker once.

A channel that stops answering is tried again every `RETRY_S` until it answers or the reader
stops; what its workers had appended waits in the stream meanwhile (a Redis that lost them
loses them: the dispatcher then sees a finished task short of its intermediate results, and
runs it again once the channel's ``lost_after_s`` has passed).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import dill
import redis

from colmena_fed.stream import StreamTarget

logger = logging.getLogger(__name__)

#: Seconds one read waits for new entries (how soon a stopping reader notices).
BLOCK_S = 0.2
#: Entries read at most in one batch.
BATCH = 1000
#: Seconds between two tries to reach a channel that did not answer.
RETRY_S = 0.5
#: Seconds a channel's stream of a run that stopped without finishing stays in its Redis.
KEEP_S = 7 * 24 * 3600


class Intermediate(NamedTuple):
    """One intermediate result as it came off a channel."""

    task_id: str
    attempt: int
    sequence: int
    #: When the worker sent it (its clock).
    sent: float
    #: The value as it travelled (pickled), for the journal.
    data: bytes
    #: The value, unpickled; None if it could not be (``error`` says why).
    value: Any
    error: str | None


#: Takes a batch off a channel: the channel, its entries, and the stream position after them.
#: Returns once the batch is journaled (the reader then trims it from the stream).
BatchSink = Callable[[str, list[Intermediate], str], None]


def stream_key(task_group: str) -> str:
    """The Redis stream of a run's intermediate results (the run's task group names it)."""
    return f"colmena-fed:{task_group}:intermediates"


class ChannelReader:
    """Reads one channel's stream of the run and hands each batch to ``sink``."""

    def __init__(
        self,
        target: StreamTarget,
        sink: BatchSink,
        on_idle: Callable[[], None],
        position: str = "0-0",
    ) -> None:
        """Read ``target``'s stream from after ``position`` (a resumed run's journaled one).

        ``sink`` takes each batch; ``on_idle`` is called before each read (at least every
        `BLOCK_S`, or `RETRY_S` while the channel does not answer).
        """
        self.target = target
        self.position = position
        self._sink = sink
        self._on_idle = on_idle
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    def connect(self) -> None:
        """Make the channel's client (it connects on first use).

        Raises `ConfigError` if the channel's password cannot be read here.
        """
        self._client = self.target.client()

    def start(self) -> None:
        """Start reading, after `connect` (a thread of its own; an unanswering channel waits)."""
        name = f"colmena-fed-channel-{self.target.channel}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, *, finished: bool) -> None:
        """Stop reading; a ``finished`` run's stream is deleted, another's kept `KEEP_S`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._client is None:
            return
        try:
            if finished:
                self._client.delete(self.target.key)
            else:
                self._client.expire(self.target.key, KEEP_S)
        except redis.RedisError as exc:
            logger.warning("%s: could not tidy the run's stream: %s", self.target.where(), exc)
        self._client.close()
        self._client = None

    def _run(self) -> None:
        assert self._client is not None
        client, key = self._client, self.target.key
        block_ms = int(BLOCK_S * 1000)
        unreachable = False
        while not self._stopping.is_set():
            self._on_idle()
            try:
                reply: Any = client.xread({key: self.position}, count=BATCH, block=block_ms)
                if unreachable:
                    logger.warning("%s answers again", self.target.where())
                    unreachable = False
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not unreachable:
                    logger.warning(
                        "%s does not answer (%s); trying again every %s s",
                        self.target.where(),
                        exc,
                        RETRY_S,
                    )
                    unreachable = True
                self._stopping.wait(RETRY_S)
                continue
            except Exception:  # this thread must outlive any one bad read
                logger.exception("reading %s failed; reading again", self.target.where())
                self._stopping.wait(RETRY_S)
                continue
            if not reply:
                continue
            entries = reply[0][1]
            last = entries[-1][0].decode()
            try:
                self._sink(self.target.channel, [_decoded(i, f) for i, f in entries], last)
            except Exception:
                logger.exception("taking a batch off %s failed", self.target.where())
            self.position = last
            with contextlib.suppress(redis.RedisError):  # if not now, with a later batch
                client.xtrim(key, minid=last)  # journaled: the stream may forget them


def _decoded(entry_id: bytes, fields: dict[bytes, bytes]) -> Intermediate:
    data = fields[b"v"]
    value, error = None, None
    try:
        value = pickle.loads(data)
    except Exception:
        try:
            value = dill.loads(data)
        except Exception as exc:
            error = f"the value could not be read here ({type(exc).__name__}: {exc})"
    return Intermediate(
        fields[b"t"].decode(),
        int(fields[b"a"]),
        int(fields[b"s"]),
        float(fields[b"w"]),
        data,
        value,
        error,
    )
