"""Values too large to travel inline, on a worker: judged cheaply, sent through a store.

A result, or an intermediate result, larger than its site's threshold goes to the site's
result store (ProxyStore), and only its proxy travels (`proxied_if_large`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from proxystore.store import get_or_create_store

if TYPE_CHECKING:
    from colmena_fed.data import ResultPolicy

#: Values never worth measuring for a store: they are small.
SMALL_TYPES = (int, float, bool, complex, type(None))


def small(value: Any, threshold: int) -> bool:
    """Whether ``value`` is surely under ``threshold`` bytes, judged without serializing it."""
    if isinstance(value, SMALL_TYPES):
        return True
    if isinstance(value, str):  # at most 4 bytes a character once encoded
        return 4 * len(value) < threshold
    if isinstance(value, (bytes, bytearray)):
        return len(value) < threshold
    size = getattr(value, "nbytes", None)
    return isinstance(size, int) and size < threshold


def proxied_if_large(value: Any, results: ResultPolicy) -> tuple[Any, float | None, int | None]:
    """``value``, or its proxy if it is over the threshold: (what to send, seconds, bytes).

    The seconds and bytes are those of putting it in the store (None if it was not put).
    """
    if small(value, results.threshold):
        return value, None, None
    started = time.perf_counter()
    store = get_or_create_store(results.store)
    data = store.serializer(value)
    if len(data) <= results.threshold:
        return value, None, None
    proxy: Any = store.proxy_from_key(store.connector.put(data))
    return proxy, time.perf_counter() - started, len(data)
