"""Errors of the local testbed (the private broker, the service and the endpoint daemons)."""

from __future__ import annotations

from colmena_fed.errors import ColmenaFedError


class TestbedError(ColmenaFedError):
    """A testbed process could not be started or stopped; the message says what to check."""

    # Tell pytest this is not a test class despite its name.
    __test__ = False
