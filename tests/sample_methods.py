"""Task functions the tests run on real workers (importable there through PYTHONPATH)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Generator
from pathlib import Path

from proxystore.factory import SimpleFactory
from proxystore.proxy import Proxy

from colmena_fed import emit, warm


def double(x: int) -> int:
    return 2 * x


def add(x: int, y: int = 0) -> int:
    return x + y


def fail(message: str) -> None:
    raise ValueError(message)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def accelerator() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def die() -> None:
    os._exit(3)


def _slow_model(key: str, seconds: float) -> str:
    time.sleep(seconds)
    return f"model {key} of worker {os.getpid()}"


def warm_model(key: str, load_s: float) -> str:
    """The model ``key``, loaded in ``load_s`` seconds unless this worker holds it already."""
    return warm(key, lambda: _slow_model(key, load_s))


def blob(megabytes: int) -> bytes:
    return b"x" * (megabytes * 1_000_000)


def reverse(data: bytes) -> bytes:
    return data[::-1]


def size(data: bytes) -> int:
    return len(data)


def hold(data: bytes, marker: str, seconds: float) -> int:
    """Say it runs (its inputs resolved) by creating ``marker``, then take ``seconds``."""
    Path(marker).touch()
    time.sleep(seconds)
    return len(data)


def own_proxy(values: list[int]) -> Proxy[list[int]]:
    """A result the method proxies itself, in no store the task server knows."""
    return Proxy(SimpleFactory(values))


def tally(i: int, seconds: float, path: str) -> int:
    """Note in the file ``path`` that task ``i`` ran, nap, and return ``i``."""
    with open(path, "a") as file:
        file.write(f"{i}\n")
    time.sleep(seconds)
    return i


def open_socket(port: int) -> socket.socket:
    """A value no serializer can send back: an open socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    return sock


def stubborn(seconds: float) -> float:
    """A call that no interrupt reaches: SIGALRM is blocked while it sleeps."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return seconds


def count_up(n: int, pause: float = 0.0, size: int = 0) -> Generator[int | bytes, None, str]:
    """Yield 0 .. n-1 (pausing between; as ``size`` bytes each if given), then return."""
    for i in range(n):
        time.sleep(pause)
        yield bytes([i % 256]) * size if size else i
    return f"counted {n}"


def emit_squares(n: int) -> int:
    """Send the squares of 0 .. n-1 with `colmena_fed.emit` (a method that is no generator)."""
    for i in range(n):
        emit(i * i)
    return n


def emit_unmarked() -> None:
    """Call `emit` in a method not marked as streaming."""
    emit(1)
