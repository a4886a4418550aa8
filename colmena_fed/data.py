"""The data plane: ProxyStore stores named in the sites YAML, and what travels through them.

Inputs above a size threshold leave the thinker as proxies (~1 KB each) instead of inline, so
no task meets Globus Compute's payload limit; the worker resolves them before the method runs
(`colmena_fed.worker`), and proxies a large result the same way. A task whose inputs sit in a
store runs only on sites that reach that store. Input objects live until the task finally ends
(retries included); a result object until the thinker takes the result; whatever a campaign
put is gone from the stores when its task server stops.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

from proxystore.connectors.endpoint import EndpointConnector
from proxystore.connectors.file import FileConnector
from proxystore.connectors.multi import MultiConnector, Policy
from proxystore.connectors.redis import RedisConnector
from proxystore.proxy import Proxy, extract
from proxystore.store import Store
from proxystore.store.config import StoreConfig
from proxystore.store.utils import get_key
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from colmena_fed.models import Result
from colmena_fed.worker import small, store_name

#: Globus Compute refuses a serialized result over 10 MiB, and its serializer inflates raw bytes
#: ~1.35x: a result larger than this goes through a store whatever the threshold.
RESULT_LIMIT_BYTES = 7_000_000


class FileStoreSpec(BaseModel):
    """A store on a file system every site using it can read (ProxyStore's FileConnector)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["file"] = Field(description="'file': a directory on a shared file system.")
    path: Path = Field(description="The directory; relative paths are relative to the YAML.")


class RedisStoreSpec(BaseModel):
    """A Redis server every site using it can reach (ProxyStore's RedisConnector)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["redis"] = Field(description="'redis': a Redis server.")
    hostname: str = Field(default="127.0.0.1", description="Host name of the Redis server.")
    port: PositiveInt = Field(default=6379, description="Port of the Redis server.")


class EndpointStoreSpec(BaseModel):
    """ProxyStore endpoints, peer to peer through a relay (ProxyStore's EndpointConnector).

    Each machine runs a ``proxystore-endpoint``; a process uses the one on its own machine,
    which fetches objects from the others through the relay.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["endpoint"] = Field(description="'endpoint': ProxyStore endpoints.")
    endpoints: list[UUID] = Field(
        min_length=1, description="UUIDs of the ProxyStore endpoints that make up the store."
    )
    proxystore_dir: Path | None = Field(
        default=None,
        description=(
            "Where the endpoints' configurations are ($PROXYSTORE_HOME); None: ProxyStore's "
            "default."
        ),
    )


class MultiMember(BaseModel):
    """One store of a `multi` store, and which objects it takes (ProxyStore's ``Policy``)."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="Name of another store under 'data: stores:'.")
    priority: int = Field(default=0, description="Higher wins when several stores qualify.")
    min_size_bytes: NonNegativeInt = Field(default=0, description="Smallest object it takes.")
    max_size_bytes: PositiveInt | None = Field(
        default=None, description="Largest object it takes; None: no limit."
    )
    host_pattern: list[str] | None = Field(
        default=None, description="Regular expressions of the host names it may be used on."
    )


class MultiStoreSpec(BaseModel):
    """Several stores behind one, each object going to the first that qualifies (MultiConnector).

    For example small objects to Redis and large ones to a shared file system.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["multi"] = Field(description="'multi': a store made of other stores.")
    members: list[MultiMember] = Field(min_length=1, description="The stores and their policies.")


AnyStoreSpec = FileStoreSpec | RedisStoreSpec | EndpointStoreSpec | MultiStoreSpec
StoreSpec = Annotated[AnyStoreSpec, Field(discriminator="kind")]

#: The store kinds a sites YAML may name.
STORE_KINDS = ("file", "redis", "endpoint", "multi")


class DataConfig(BaseModel):
    """The ``data:`` section of the sites YAML."""

    model_config = ConfigDict(extra="forbid")

    threshold_bytes: PositiveInt = Field(
        default=1_000_000,
        description="Inputs and results larger than this (serialized) travel through a store.",
    )
    topic_thresholds: dict[str, PositiveInt] = Field(
        default_factory=dict, description="Thresholds for the inputs of given topics."
    )
    locality: bool = Field(
        default=False,
        description=(
            "Among sites otherwise equal for a task, prefer one whose own store (the first in "
            "its 'stores' list) holds the task's inputs."
        ),
    )
    stores: dict[str, StoreSpec] = Field(
        default_factory=dict,
        description=(
            "Stores by name. Inputs go to the first one listed; each site sends its large "
            "results to the first store in its own 'stores' list."
        ),
    )

    @model_validator(mode="after")
    def _members_exist(self) -> DataConfig:
        for name, spec in self.stores.items():
            if not isinstance(spec, MultiStoreSpec):
                continue
            for member in spec.members:
                other = self.stores.get(member.store)
                if other is None or isinstance(other, MultiStoreSpec):
                    raise ValueError(
                        f"data store {name!r}: member {member.store!r} must name a file, redis "
                        f"or endpoint store under 'data: stores:'"
                    )
        return self


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

    def start(self) -> None:
        """Connect to every store."""
        for name, spec in self.config.stores.items():
            self.stores[name] = Store(name, self._connector(spec), register=True)

    def _connector(self, spec: AnyStoreSpec) -> Any:
        """A new ProxyStore connector for ``spec``."""
        if isinstance(spec, FileStoreSpec):
            return FileConnector(str(spec.path), clear=False)
        if isinstance(spec, RedisStoreSpec):
            return RedisConnector(spec.hostname, spec.port)
        if isinstance(spec, EndpointStoreSpec):
            home = None if spec.proxystore_dir is None else str(spec.proxystore_dir)
            return EndpointConnector([str(u) for u in spec.endpoints], home)
        members = {}
        for member in spec.members:
            policy = Policy(
                priority=member.priority,
                min_size_bytes=member.min_size_bytes,
                max_size_bytes=member.max_size_bytes or sys.maxsize,
                host_pattern=member.host_pattern,
            )
            members[member.store] = (self._connector(self.config.stores[member.store]), policy)
        return MultiConnector(members)

    def share(self, obj: Any, store: str | None = None) -> Proxy[Any]:
        """Put ``obj`` once (e.g. a model) and return a proxy any number of tasks can take.

        Pass the proxy as an input: it travels as itself, and each task runs only on sites
        that reach its store. It stays until `release` (or until the task server stops).
        """
        name = store or next(iter(self.stores), None)
        if name is None or name not in self.stores:
            known = ", ".join(self.stores) or "none"
            raise ValueError(f"no data store named {name!r} to share an object in; stores: {known}")
        target = self.stores[name]
        key = target.put(obj)
        proxy: Proxy[Any] = target.proxy_from_key(key)
        with self._lock:
            self._shared[key] = target
        return proxy

    def release(self, proxy: Proxy[Any]) -> None:
        """Evict an object put with `share` (tasks already sent with it must have ended)."""
        key = get_key(proxy)
        with self._lock:
            store = self._shared.pop(key, None)
        if store is None:
            raise ValueError("this proxy was not made by share(), or was released already")
        store.evict(key)

    def close(self) -> None:
        """Evict what unfinished tasks and unreleased shares left, and disconnect."""
        with self._lock:
            left = [key for keys in self._inputs.values() for key in keys]
            left += [(store, key) for key, store in self._shared.items()]
            results = list(self._results.values())
            self._inputs.clear()
            self._shared.clear()
            self._originals.clear()
            self._results.clear()
        for proxy in results:  # results the thinker never took
            self.discard(proxy)
        for store, key in left:
            store.evict(key)
        for store in self.stores.values():
            store.close()
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
            key = store.connector.put(data)
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

    def evict_inputs(self, task: Result) -> None:
        """The task ended for good: its input objects can go (the record keeps the originals)."""
        with self._lock:
            keys = self._inputs.pop(task.task_id, [])
            originals = self._originals.pop(task.task_id, None)
        if originals is not None:
            task.args, task.kwargs = originals
        for store, key in keys:
            store.evict(key)

    def note_result(self, task: Result) -> None:
        """Remember a proxied result that reached the thinker side, until it is delivered."""
        if type(task.value) is Proxy:
            with self._lock:
                self._results[task.task_id] = task.value

    def discard(self, value: Any) -> None:
        """Evict the object behind a proxied result nobody will take (e.g. a late outcome)."""
        if type(value) is Proxy:
            store = self.stores.get(store_name(value))
            if store is not None:
                store.evict(get_key(value))

    def resolve_result(self, task: Result) -> None:
        """Turn a proxied result into its object (on delivery), then evict it from its store."""
        value = task.value
        if type(value) is not Proxy:
            return
        with self._lock:
            self._results.pop(task.task_id, None)
        started = time.perf_counter()
        try:
            task.value = extract(value)
        except Exception as exc:
            task.value = None
            task.fail("system", type(exc).__name__, f"cannot resolve the result proxy: {exc}")
            return
        task.data.resolve_result_s = time.perf_counter() - started
        store = self.stores.get(store_name(value))
        if store is not None:
            store.evict(get_key(value))
