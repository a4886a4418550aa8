"""Authentication of `globus` sites on the real Globus cloud path (which this machine cannot
reach): refused clearly without a login, and a service account's secret never leaks."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from sample_methods import double

from colmena_fed import SitesConfig, TaskQueues, TaskServer
from colmena_fed.backends.globus import make_client
from colmena_fed.errors import ConfigError, SiteError

SECRET = "colmena-fed-test-secret-6f1d2a"


def polaris() -> SitesConfig:
    site = {"endpoint": "5c9d8e1a-1111-2222-3333-444455556666", "resources": {"gpu": 4}}
    return SitesConfig.from_dict({"sites": {"polaris": site}})


@pytest.fixture
def no_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine where nobody ever logged in to Globus Compute."""
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path / "globus_compute"))
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID", raising=False)
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET", raising=False)


@pytest.mark.usefixtures("no_login")
def test_a_cloud_site_without_a_globus_login_is_refused_saying_how_to_log_in() -> None:
    server = TaskServer(TaskQueues(), polaris(), [double])
    with pytest.raises(ConfigError, match="not logged in to Globus Compute on this machine"):
        server.start()
    with pytest.raises(ConfigError, match="globus-compute-endpoint login"):
        make_client(polaris().globus)


@pytest.mark.usefixtures("no_login")
def test_half_a_service_account_is_refused_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", SECRET)
    with pytest.raises(ConfigError, match="GLOBUS_COMPUTE_CLIENT_ID and GLOBUS_COMPUTE_CLIENT_SEC"):
        make_client(polaris().globus)


@pytest.mark.usefixtures("no_login")
def test_a_service_account_secret_is_never_printed_logged_or_written(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", SECRET)
    caplog.set_level(logging.DEBUG)
    queues = TaskQueues()
    server = TaskServer(queues, polaris(), [double], run_dir=tmp_path / "run")
    queues.send_inputs(1, method="double")
    # It asks Globus Auth for a token, which this machine cannot reach: a clear error.
    with pytest.raises(
        SiteError, match=r"cannot register double: cannot reach https://compute\.api\.globus\.org"
    ):
        server.start()
    assert queues.active_count == 1  # the task sent before is still there
    out, err = capfd.readouterr()
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for place in (caplog.text, out, err, *map(repr, written)):
        assert SECRET not in place
    assert "auth.globus.org" in caplog.text  # the logs did cover the token request
