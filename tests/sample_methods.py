"""Task functions the tests run on real workers (importable there through PYTHONPATH)."""

from __future__ import annotations

import os
import time


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


def blob(megabytes: int) -> bytes:
    return b"x" * (megabytes * 1_000_000)


def reverse(data: bytes) -> bytes:
    return data[::-1]


def size(data: bytes) -> int:
    return len(data)
