"""The data plane: ProxyStore stores named in the sites YAML, and what travels through them.

Inputs above a size threshold leave the thinker as proxies (~1 KB each) instead of inline, so
no task meets Globus Compute's payload limit; the worker resolves them before the method runs
(`colmena_fed.worker`), and proxies a large result the same way. A task whose inputs sit in a
store runs only on sites that reach that store. Input objects live until the task finally ends
(retries included); a result object until the thinker takes the result (or, kept with
``keep_result``, releases it); whatever a campaign put is gone from the stores when its task
server stops. Evictions run on a thread of the data plane's own, so a slow or unreachable store
never holds up dispatch or delivery; one that fails is logged, naming the store, and nothing
else is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from proxystore.connectors.multi import MultiConnector
from proxystore.proxy import Proxy, extract
from proxystore.store import Store
from proxystore.store.config import StoreConfig
from proxystore.store.utils import get_key

from colmena_fed.journal import delivery_key
from colmena_fed.large import small
from colmena_fed.models import Result
from colmena_fed.recovery import Recovery
from colmena_fed.stores import DataConfig, connector
from colmena_fed.worker import store_name

#: Globus Compute refuses a serialized result over 10 MiB, and its serializer inflates raw bytes
#: ~1.35x: a result larger than this goes through a store whatever the threshold.
RESULT_LIMIT_BYTES = 7_000_000

logger = logging.getLogger(__name__)

#: An object to evict: its store and key.
_Object = tuple[Store[Any], Any]


class ResultPolicy(NamedTuple):
    """What a worker needs to proxy a large result: the store, and from what size."""

    store: StoreConfig
    threshold: int


class DataPlane:
    """The stores of one task server, and the objects its tasks put in them."""

    def __init__(self, config: DataConfig, reach: Mapping[str, list[str]]) -> None:
        """Stores as ``config`` describes; ``reach`` lists the stores each site can read."""
        self.config = config
        self.reach = reach
        self.stores: dict[str, Store[Any]] = {}
        self._inputs: dict[str, list[tuple[Store[Any], Any]]] = {}
        self._shared: dict[Any, Store[Any]] = {}
        self._originals: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._results: dict[str, Proxy[Any]] = {}
        self._lock = threading.Lock()
        # Objects to evict; an Event is set when reached, None stops the evictor.
        self._evictions: queue.SimpleQueue[_Object | threading.Event | None] = queue.SimpleQueue()
        self._evictor: threading.Thread | None = None
        # Evictions held back, by store, since it failed one (evicted at close if possible).
        self._held_back: dict[str, list[_Object]] = {}

    def start(self) -> None:
        """Connect to every store, and start evicting in the background."""
        for name in self.config.stores:
            self.stores[name] = Store(name, connector(name, self.config.stores), register=True)
        self._evictor = threading.Thread(
            target=self._evict_queued, name="colmena-fed-evict", daemon=True
        )
        self._evictor.start()

    def share(self, obj: Any, store: str | None = None, tags: Collection[str] = ()) -> Proxy[Any]:
        """Put ``obj`` once (e.g. a model) and return a proxy any number of tasks can take.

        Pass the proxy as an input: it travels as itself, and each task runs only on sites
        that reach its store. It stays until `release` (or until the task server stops).
        ``tags`` steer it among the members of a `multi` store.
        """
        name = store or next(iter(self.stores), None)
        if name is None or name not in self.stores:
            known = ", ".join(self.stores) or "none"
            raise ValueError(f"no data store named {name!r} to share an object in; stores: {known}")
        target = self.stores[name]
        key = target.put(obj, **_tagged(target, tags))
        proxy: Proxy[Any] = target.proxy_from_key(key)
        with self._lock:
            self._shared[key] = target
        return proxy

    def release(self, proxy: Proxy[Any]) -> None:
        """Evict an object put with `share`, or a result kept with ``keep_result``.

        Tasks already sent with it must have ended.
        """
        key = get_key(proxy)
        with self._lock:
            store = self._shared.pop(key, None)
        if store is None:
            raise ValueError(
                "this proxy was not made by share() nor kept with keep_result, or was "
                "released already"
            )
        store.evict(key)

    def close(self) -> None:
        """Evict what is queued and what the run left, then disconnect from every store.

        What the run left: inputs of unfinished tasks, unreleased shares, results never taken.
        A store that fails is logged and the others are still emptied: this never raises.
        """
        if self._evictor is not None:
            self._evictions.put(None)
            self._evictor.join()
            self._evictor = None
        self._evict_queued(block=False)
        with self._lock:
            left: list[_Object | None] = [key for keys in self._inputs.values() for key in keys]
            left += [(store, key) for key, store in self._shared.items()]
            left += [self._located(proxy) for proxy in self._results.values()]
            self._inputs.clear()
            self._shared.clear()
            self._originals.clear()
            self._results.clear()
        for located in left:
            if located is not None:
                self._evict(*located)
        self._retry_held_back()
        for name, store in self.stores.items():
            try:
                store.close()
            except Exception as exc:
                logger.warning("could not close data store %r: %s", name, exc)
        self.stores.clear()

    def result_policy(self, site: str) -> ResultPolicy | None:
        """How ``site``'s workers proxy results: into the first store it reaches, if any."""
        names = self.reach.get(site, [])
        if not names:
            return None
        threshold = min(self.config.threshold_bytes, RESULT_LIMIT_BYTES)
        return ResultPolicy(self.stores[names[0]].config(), threshold)

    def proxy_inputs(self, task: Result) -> None:
        """Replace the task's large inputs by proxies in the first store (if there is one)."""
        if not self.stores:
            return
        name, store = next(iter(self.stores.items()))
        threshold = self.config.topic_thresholds.get(task.topic, self.config.threshold_bytes)
        tagged = _tagged(store, self.config.topic_tags.get(task.topic, ()))
        started = time.perf_counter()
        keys: list[tuple[Store[Any], Any]] = []
        used: set[str] = set()
        sizes = 0

        def maybe_proxy(value: Any) -> Any:
            nonlocal sizes
            if type(value) is Proxy:  # shared by the thinker: it travels as it is
                used.add(store_name(value))
                return value
            if small(value, threshold):
                return value
            data = store.serializer(value)
            if len(data) <= threshold:
                return value
            key = store.connector.put(data, **tagged)
            keys.append((store, key))
            used.add(name)
            sizes += len(data)
            return store.proxy_from_key(key)

        args = tuple(maybe_proxy(value) for value in task.args)
        kwargs = {key: maybe_proxy(value) for key, value in task.kwargs.items()}
        if used:
            task.stores = sorted(used)
        if keys:
            with self._lock:
                self._inputs[task.task_id] = keys
                if task.keep_inputs:  # the record gets them back when the task ends
                    self._originals[task.task_id] = (task.args, task.kwargs)
            task.args, task.kwargs = args, kwargs
            task.data.input_bytes = sizes
            task.data.proxy_inputs_s = time.perf_counter() - started

    def input_keys(self, task_id: str) -> list[tuple[str, Any]]:
        """The stores and keys of the objects put for a task's inputs (for the run journal)."""
        with self._lock:
            return [(store.name, key) for store, key in self._inputs.get(task_id, ())]

    def adopt(self, recovery: Recovery) -> None:
        """Take over the objects a run whose thinker died left in these stores.

        Inputs of the tasks that go on are kept (they are sent again as they were) and evicted
        when those end; inputs of tasks that ended, and results the thinker took, are evicted
        now (a replayed result that came through a store has no value then: ``None``). A
        result never taken stays until it is delivered.
        """
        with self._lock:
            for task_id, keys in recovery.live_inputs.items():
                known = [(self.stores[name], key) for name, key in keys if name in self.stores]
                if known:
                    self._inputs[task_id] = known
        for name, key in recovery.ended_inputs:
            if name in self.stores:
                self._evictions.put((self.stores[name], key))
        for result in recovery.delivered:
            located = self._located(result.value) if type(result.value) is Proxy else None
            if located is None:
                continue
            if result.keep_result:  # the thinker may still release it
                with self._lock:
                    self._shared[located[1]] = located[0]
            else:
                self._evictions.put(located)
                result.value = None

    def release_inputs(self, task: Result) -> None:
        """The task ended for good: its record gets its inputs back, their objects go.

        The objects are evicted in the background.
        """
        with self._lock:
            keys = self._inputs.pop(task.task_id, [])
            originals = self._originals.pop(task.task_id, None)
        if originals is not None:
            task.args, task.kwargs = originals
        for located in keys:
            self._evictions.put(located)

    def note_result(self, task: Result) -> None:
        """Remember a result proxied into one of these stores, until the thinker takes it.

        A proxy of another store (one a method made itself) is the thinker's own business.
        """
        if type(task.value) is Proxy and self._located(task.value) is not None:
            with self._lock:
                self._results[delivery_key(task)] = task.value

    def discard(self, value: Any) -> None:
        """Evict the object behind a proxied result nobody will take (e.g. a late outcome)."""
        if type(value) is Proxy:
            located = self._located(value)
            if located is not None:
                self._evictions.put(located)

    def resolve_result(self, task: Result) -> None:
        """Turn a result proxied into one of these stores into its object, as it is delivered.

        A task sent with ``keep_result`` keeps its proxy, and its object stays until `release`.
        Any other object leaves its store with `after_delivery`.
        """
        with self._lock:
            proxy = self._results.get(delivery_key(task))
            if proxy is not None and task.keep_result:
                del self._results[delivery_key(task)]
                located = self._located(proxy)
                if located is not None:
                    self._shared[located[1]] = located[0]
                return
        if proxy is None:
            return
        started = time.perf_counter()
        try:
            task.value = extract(proxy)
        except Exception as exc:
            task.value = None
            task.fail("system", type(exc).__name__, f"cannot resolve the result proxy: {exc}")
            return
        task.data.resolve_result_s = time.perf_counter() - started

    def after_delivery(self, task: Result) -> None:
        """The thinker has the result: evict its object (in the background)."""
        with self._lock:
            proxy = self._results.pop(delivery_key(task), None)
        located = None if proxy is None else self._located(proxy)
        if located is not None:
            self._evictions.put(located)

    def _located(self, proxy: Proxy[Any]) -> _Object | None:
        """The store (of these) and key of a proxy's object; None for a proxy of another store."""
        try:
            store = self.stores.get(store_name(proxy))
            return None if store is None else (store, get_key(proxy))
        except Exception:  # not made by a ProxyStore store at all
            return None

    def flush(self) -> None:
        """Return once every eviction queued so far is done."""
        if self._evictor is None:
            self._evict_queued(block=False)
            return
        reached = threading.Event()
        self._evictions.put(reached)
        reached.wait()

    def _evict_queued(self, block: bool = True) -> None:
        """Evict what is queued: until told to stop (``None``), or until the queue is empty."""
        while True:
            try:
                item = self._evictions.get(block=block)
            except queue.Empty:
                return
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            else:
                self._evict(*item)

    def _evict(self, store: Store[Any], key: Any) -> None:
        """Evict one object; after a store failed once, hold its evictions back until close.

        A store that cannot be reached can take seconds to say so, for every object.
        """
        held = self._held_back.get(store.name)
        if held is not None:
            held.append((store, key))
            return
        try:
            store.evict(key)
        except Exception as exc:
            self._held_back[store.name] = [(store, key)]
            logger.warning(
                "could not evict an object from data store %r: %s; its other objects of this "
                "run are evicted when the task server stops, if it can be reached by then",
                store.name,
                exc,
            )

    def _retry_held_back(self) -> None:
        """Try each store that failed once more; what it still refuses is left there (logged)."""
        held, self._held_back = self._held_back, {}
        for name, objects in held.items():
            for done, (store, key) in enumerate(objects):
                try:
                    store.evict(key)
                except Exception as exc:
                    logger.warning(
                        "left %d objects of this run in data store %r, which cannot be reached: %s",
                        len(objects) - done,
                        name,
                        exc,
                    )
                    break


def _tagged(store: Store[Any], tags: Collection[str]) -> dict[str, Any]:
    """The keyword arguments of a put that steer an object with ``tags`` in a multi store."""
    if tags and isinstance(store.connector, MultiConnector):
        return {"subset_tags": tags}
    return {}
