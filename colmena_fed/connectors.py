"""ProxyStore connectors that keep a run's objects to its user.

`PrivateFileConnector` writes its directory 0700 and every object 0600. `SecureRedisConnector`
logs in to Redis with a password that each process reads where it runs (an environment
variable or a file), so the secret never travels in the connector's configuration, which
every proxy carries and the run journal keeps; it can use TLS, and it gives up on a server
that stops answering instead of blocking for ever.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import redis
from proxystore.connectors.file import FileConnector, FileKey
from proxystore.connectors.redis import RedisConnector

from colmena_fed.errors import ConfigError


class PrivateFileConnector(FileConnector):
    """ProxyStore's FileConnector with its directory 0700 and each object and marker 0600."""

    def __init__(self, store_dir: str, *, clear: bool = False, buffering: int = -1) -> None:
        """Use ``store_dir``, creating it 0700 (and making it 0700 if this user owns it)."""
        os.makedirs(store_dir, mode=0o700, exist_ok=True)
        if os.stat(store_dir).st_uid == os.geteuid():
            os.chmod(store_dir, 0o700)
        super().__init__(store_dir, clear=clear, buffering=buffering)

    def set(self, key: FileKey, obj: bytes | bytearray | memoryview) -> None:
        """Write the object, then its ``.ready`` marker, both readable by this user only."""
        path = os.path.join(self.store_dir, key.filename)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb", buffering=self.buffering) as file:
            file.write(obj)
        os.close(os.open(f"{path}.ready", os.O_WRONLY | os.O_CREAT, 0o600))


class SecureRedisConnector(RedisConnector):
    """ProxyStore's RedisConnector with a password, TLS and timeouts.

    Attributes:
        password_env: Environment variable holding the password, in each process.
        password_file: File holding the password (its first line), readable by its owner only.
        tls: Whether to connect with TLS.
        timeout_s: Seconds a connection or a command may take before it fails.
    """

    def __init__(
        self,
        hostname: str,
        port: int,
        clear: bool = False,
        *,
        password_env: str | None = None,
        password_file: str | None = None,
        tls: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        """Connect (lazily) to ``hostname:port``, reading the password where it is given."""
        super().__init__(hostname, port, clear)
        self.password_env = password_env
        self.password_file = password_file
        self.tls = tls
        self.timeout_s = timeout_s
        self._redis_client.close()
        self._redis_client = redis_client(
            hostname, port, password_env, password_file, tls=tls, timeout_s=timeout_s
        )

    def config(self) -> dict[str, Any]:
        """What rebuilds the connector elsewhere: where the password is, never the password."""
        return {
            **super().config(),
            "password_env": self.password_env,
            "password_file": self.password_file,
            "tls": self.tls,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SecureRedisConnector:
        """Rebuild a connector from `config`."""
        return cls(**config)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the configuration (a method that refers to a store takes no password)."""
        return (type(self).from_config, (self.config(),))


def redis_client(
    hostname: str,
    port: int,
    password_env: str | None,
    password_file: str | None,
    *,
    tls: bool,
    timeout_s: float,
) -> redis.StrictRedis:
    """A client of a Redis server, its password read where it is given, with timeouts."""
    return redis.StrictRedis(
        host=hostname,
        port=port,
        password=read_password(password_env, password_file),
        ssl=tls,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


def read_password(env: str | None, file: str | None) -> str | None:
    """The password in environment variable ``env`` or in ``file``; None if neither is named.

    Raises:
        ConfigError: The variable is not set, or the file cannot be read or others may read it.
    """
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"redis store: password_env names {env!r}, which is not set in this process; "
                "set it here and in the sites' worker environment (the endpoint's worker_init)"
            )
        return value
    if file is None:
        return None
    path = Path(file)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"redis store: cannot read password_file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"redis store: password_file {path} may be read by others "
            f"({stat.filemode(mode)}); make it private: chmod 600 {path}"
        )
    return text.splitlines()[0] if text else ""
