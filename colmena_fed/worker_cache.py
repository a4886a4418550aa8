"""State a method keeps on its worker between tasks: ``colmena_fed.warm(key, loader)``.

A model that takes seconds to load should be loaded once per worker, not once per task. Inside
a method, ``model = warm("surrogate-v3", lambda: load("v3.pt"))`` returns the object the worker
already holds under that key, or calls the loader, keeps what it returns and returns it. A
worker is one process of a site's engine, living across tasks until its block ends, so the
state lives as long as the worker and no longer; a new worker starts cold, and a different key
is a different object (a miss).

Each site bounds what its workers keep (``warm: {max_items, max_bytes}`` in the sites YAML,
sent with each task): past either bound the least recently used objects are dropped. Every
task reports which keys it found warm, how long each load took and which keys its worker holds
afterwards; the task server learns from that where each key is warm
(`colmena_fed.warmth`), and the `Result` carries it as ``result.warm``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class CacheBounds(NamedTuple):
    """How much a site's workers keep warm: objects, and bytes of those whose size is known."""

    max_items: int = 2
    max_bytes: int | None = None


#: One use of the cache in a task: the key, whether it was warm, the seconds its load took.
Use = tuple[str, bool, float]

#: What a task reports: its uses in order, then the keys its worker holds afterwards.
WarmReport = tuple[tuple[Use, ...], tuple[str, ...]]


class _Entry(NamedTuple):
    value: Any
    nbytes: int


class WarmCache:
    """The objects one worker process keeps, least recently used first."""

    def __init__(self, bounds: CacheBounds) -> None:
        """An empty cache within ``bounds``."""
        self.bounds = bounds
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._mine = threading.local()  # the keys this thread's loaders are loading

    def get(self, key: str, loader: Callable[[], T], nbytes: int | None) -> tuple[T, Use]:
        """The object under ``key`` (loaded by ``loader`` on a miss) and how it was found.

        Two threads asking for one key at once load it once; a loader that raises leaves
        nothing behind.

        Raises:
            RuntimeError: ``loader`` itself asked for ``key`` (it would wait on itself).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry.value, (key, True, 0.0)
            loading = self._loading.setdefault(key, threading.Lock())
        mine: set[str] | None = getattr(self._mine, "keys", None)
        if mine is None:
            mine = self._mine.keys = set()
        if key in mine:
            raise RuntimeError(f"warm({key!r}): its loader asked for {key!r} again")
        with loading:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:  # another thread loaded it meanwhile
                    self._entries.move_to_end(key)
                    return entry.value, (key, True, 0.0)
            started = time.perf_counter()
            mine.add(key)
            try:
                value = loader()
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            finally:
                mine.discard(key)
            load_s = time.perf_counter() - started
            size = nbytes if nbytes is not None else _known_size(value)
            with self._lock:  # kept before the key stops loading: no thread loads it twice
                self._entries[key] = _Entry(value, size)
                self._bytes += size
                self._loading.pop(key, None)
                self._evict(keep=key)
        return value, (key, False, load_s)

    def resize(self, bounds: CacheBounds) -> None:
        """Hold to ``bounds`` from now on, dropping what is over them."""
        with self._lock:
            self.bounds = bounds
            self._evict(keep=None)

    def held(self) -> tuple[str, ...]:
        """The keys held now, least recently used first."""
        with self._lock:
            return tuple(self._entries)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _evict(self, keep: str | None) -> None:
        """Drop the least recently used objects past the bounds (never ``keep``)."""
        max_items, max_bytes = self.bounds
        for key in list(self._entries):
            over_items = len(self._entries) > max_items
            over_bytes = max_bytes is not None and self._bytes > max_bytes
            if not (over_items or over_bytes):
                return
            if key != keep:
                self._bytes -= self._entries.pop(key).nbytes


def _known_size(value: Any) -> int:
    """Bytes of an object that says (a numpy array's ``nbytes``); 0 if it does not."""
    size = getattr(value, "nbytes", None)
    return size if isinstance(size, int) else 0


#: This worker process's cache.
_cache = WarmCache(CacheBounds())
#: The uses of the task running in each thread (None: not inside a task).
_task = threading.local()


def warm(key: str, loader: Callable[[], T], *, nbytes: int | None = None) -> T:
    """The object this worker keeps under ``key``; on a miss, ``loader()``, kept for later tasks.

    Call it inside a method: ``model = warm(f"surrogate-{version}", lambda: load(version))``.
    Give the task the same key when sending it (``send_inputs(..., warm=key)``) so the task
    server sends it where the key is warm. ``nbytes`` is the object's size, for the site's
    ``max_bytes`` bound (a numpy array's own ``nbytes`` is read if not given; other objects
    count only towards ``max_items``). Outside a task it caches in the calling process.

    Raises:
        TypeError: ``key`` is not a non-empty string, or ``loader`` is not callable.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"warm(key, loader): the key must be a non-empty string, got {key!r}")
    if not callable(loader):
        raise TypeError(f"warm({key!r}, loader): loader must be callable, got {loader!r}")
    value, use = _cache.get(key, loader, nbytes)
    uses: list[Use] | None = getattr(_task, "uses", None)
    if uses is not None:
        uses.append(use)
    return value


def begin_task(bounds: CacheBounds | None) -> None:
    """A task starts in this thread: count its uses, and hold the cache to its site's bounds."""
    if bounds is not None and bounds != _cache.bounds:
        _cache.resize(bounds)
    _task.uses = []


def end_task() -> WarmReport | None:
    """The task's uses and the keys held now (None: it used none and nothing is held)."""
    uses: list[Use] = getattr(_task, "uses", None) or []
    _task.uses = None
    held = _cache.held()
    if not uses and not held:
        return None
    return tuple(uses), held


__all__ = ["CacheBounds", "WarmCache", "warm"]
