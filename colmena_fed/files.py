"""Files a run reads and writes: configuration text and private directories."""

from __future__ import annotations

import os
from pathlib import Path

from colmena_fed.errors import ConfigError


def read_config_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a ``what``: "sites YAML", "endpoint YAML").

    Raises:
        ConfigError: The file cannot be read, or is not UTF-8 (naming the line and byte).
    """
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: the {what} is not UTF-8 text (byte "
            f"{exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from exc


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory only its owner can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
