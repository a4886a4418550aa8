"""The testbed's access token: made at ``testbed up``, kept 0600 beside its state.

Every route of the stand-in service refuses a request without it (401), so other users of the
machine can neither submit tasks nor learn the broker's password. Clients present it as the
SDK presents a Globus token: an ``AccessTokenAuthorizer``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from colmena_fed.errors import ConfigError

#: Where the testbed lives unless ``--dir`` says otherwise (one per user: it owns port 5000).
DEFAULT_DIR = Path.home() / ".colmena-fed" / "testbed"

#: The token's file in the testbed's directory.
TOKEN_FILE = "token"

#: The environment variable that hands the token to the service process (never argv).
TOKEN_VARIABLE = "COLMENA_FED_TESTBED_TOKEN"


def new_token(directory: Path) -> str:
    """Make a new token and write it to ``directory``/token (0600), replacing any old one."""
    token = secrets.token_urlsafe(32)
    path = directory / TOKEN_FILE
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token)
    return token


def read_token(directory: Path | None) -> str:
    """The token of the testbed in ``directory`` (None: `DEFAULT_DIR`).

    Raises:
        ConfigError: There is no token there, or it cannot be read.
    """
    path = (DEFAULT_DIR if directory is None else directory) / TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the testbed's token ({exc.strerror}); is a testbed up there? "
            f"('colmena-fed testbed up --dir {path.parent}'), or name its directory in the "
            "sites YAML: globus: {service: testbed, testbed_dir: DIR}"
        ) from exc
