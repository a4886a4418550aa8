"""deploy/install-endpoint.sh in a temporary home: dry run, refusals, and a real configure.

The script reuses this test run's environment (``--venv``), so nothing is downloaded; it runs
the real ``globus-compute-endpoint configure`` and ``proxystore-endpoint configure``. Starting
needs a Globus login, so the real run stops short of it (``--no-start``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "deploy" / "install-endpoint.sh"
VENV = Path(sys.executable).parent.parent
POLARIS = REPO / "endpoints" / "polaris.yaml"
VARS = ["--var", "account=MYPROJ", "--var", "worker_init=module load conda"]
#: Polaris with a ProxyStore endpoint and systemd units.
EVERYTHING = [
    "--name",
    "polaris",
    "--config",
    str(POLARIS),
    *VARS,
    "--proxystore",
    "ps-polaris",
    "--systemd",
]


def install(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GLOBUS_COMPUTE"))}
    env.pop("PROXYSTORE_HOME", None)
    env["HOME"] = str(home)
    return subprocess.run(
        ["bash", str(SCRIPT), "--venv", str(VENV), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def files_under(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text() for p in directory.rglob("*") if p.is_file()
    }


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    run = install(tmp_path, *EVERYTHING, "--dry-run")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"{POLARIS}: ok" in out
    assert (
        f"+ {VENV}/bin/globus-compute-endpoint configure polaris --multi-user false "
        f"--display-name polaris --template-config {POLARIS}"
    ) in out
    assert (
        f"+ {VENV}/bin/proxystore-endpoint configure ps-polaris --host 127.0.0.1 --port 8765 "
        "--relay-address wss://relay.proxystore.dev --persist"
    ) in out
    assert f"+ {VENV}/bin/proxystore-globus-auth login" in out
    unit_dir = tmp_path / ".config" / "systemd" / "user"
    assert f"+ write {unit_dir}/colmena-fed-endpoint-polaris.service" in out
    assert f"ExecStart={VENV}/bin/globus-compute-endpoint start polaris" in out
    assert "+ systemctl --user enable --now colmena-fed-endpoint-polaris.service" in out
    assert '      account: "MYPROJ"' in out
    assert "(dry run: nothing was changed)" in out
    assert files_under(tmp_path) == {}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--proxystore", "ps\nExecStartPre=/bin/sh -c id"),
        ("--proxystore", "../../tmp/x"),
        ("--proxystore-host", "0.0.0.0 --relay-address x"),
        ("--proxystore-port", "80; id"),
    ],
    ids=["newline", "path", "host", "port"],
)
def test_values_that_would_escape_into_units_or_paths_are_refused(
    tmp_path: Path, option: str, value: str
) -> None:
    args = [*EVERYTHING, "--dry-run"]
    if option == "--proxystore":
        args[args.index("--proxystore") + 1] = value
    else:
        args += [option, value]
    run = install(tmp_path, *args)
    assert run.returncode != 0
    assert option in run.stderr
    assert "+ write" not in run.stdout
    assert files_under(tmp_path) == {}


@pytest.mark.parametrize(
    ("existing", "extra", "message"),
    [
        (".globus_compute/polaris/config.yaml", [], "endpoint 'polaris' already exists"),
        (
            ".config/systemd/user/colmena-fed-endpoint-polaris.service",
            ["--systemd"],
            "colmena-fed-endpoint-polaris.service already exists",
        ),
        (
            ".local/share/proxystore/ps-polaris/config.toml",
            ["--proxystore", "ps-polaris"],
            "ProxyStore endpoint 'ps-polaris' already exists",
        ),
    ],
    ids=["endpoint", "unit", "proxystore"],
)
def test_existing_configuration_is_not_overwritten_without_force(
    tmp_path: Path, existing: str, extra: list[str], message: str
) -> None:
    (tmp_path / existing).parent.mkdir(parents=True)
    (tmp_path / existing).write_text("mine\n")
    run = install(tmp_path, "--name", "polaris", "--config", str(POLARIS), *VARS, *extra)
    assert run.returncode == 1
    assert message in run.stderr
    assert "--force" in run.stderr
    assert files_under(tmp_path) == {existing: "mine\n"}
    assert run.stdout == ""


def test_a_config_that_does_not_validate_is_not_installed(tmp_path: Path) -> None:
    run = install(tmp_path, "--name", "polaris", "--config", str(POLARIS), "--no-start")
    assert run.returncode == 1
    assert f"{POLARIS}: engine.provider.account: error: template variable 'account'" in run.stdout
    assert "fix the problems above" in run.stderr
    assert not (tmp_path / ".globus_compute").exists()


def test_install_configures_a_template_capable_endpoint_and_force_replaces_its_template(
    tmp_path: Path,
) -> None:
    run = install(tmp_path, *EVERYTHING, "--no-start")
    assert run.returncode == 0, run.stderr + run.stdout
    endpoint = tmp_path / ".globus_compute" / "polaris"
    assert (endpoint / "user_config_template.yaml.j2").read_text() == POLARIS.read_text()
    core = (endpoint / "config.yaml").read_text()
    assert "engine" not in core
    proxystore = (tmp_path / ".local/share/proxystore/ps-polaris/config.toml").read_text()
    (uuid_line,) = [line for line in proxystore.splitlines() if line.startswith("uuid = ")]
    ps_uuid = uuid_line.split('"')[1]
    assert (
        f"ProxyStore endpoint ps-polaris, for the data: section of the sites YAML: {ps_uuid}"
        in (run.stdout)
    )
    unit = (tmp_path / ".config/systemd/user/colmena-fed-endpoint-polaris.service").read_text()
    assert f"ExecStart={VENV}/bin/globus-compute-endpoint start polaris" in unit
    assert "Restart=always" in unit

    options = tmp_path / "options.json"
    options.write_text('{"account": "MYPROJ", "worker_init": "module load conda"}')
    rendered = subprocess.run(
        [
            str(VENV / "bin" / "globus-compute-endpoint"),
            "render-user-config",
            "-e",
            "polaris",
            "-o",
            str(options),
        ],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert 'account: "MYPROJ"' in rendered

    frontier = REPO / "endpoints" / "frontier.yaml"
    again = install(
        tmp_path, "--name", "polaris", "--config", str(frontier), *VARS, "--no-start", "--force"
    )
    assert again.returncode == 0, again.stderr + again.stdout
    assert (endpoint / "user_config_template.yaml.j2").read_text() == frontier.read_text()
    backups = list(endpoint.glob("user_config_template.yaml.j2.bak-*"))
    assert [b.read_text() for b in backups] == [POLARIS.read_text()]
    assert (endpoint / "config.yaml").read_text() == core

    restart = install(
        tmp_path, "--name", "polaris", "--config", str(frontier), *VARS, "--force", "--dry-run"
    )
    assert restart.returncode == 0, restart.stderr
    stop = f"+ {VENV}/bin/globus-compute-endpoint stop polaris"
    start = f"+ {VENV}/bin/globus-compute-endpoint start polaris --detach"
    assert stop in restart.stdout
    assert restart.stdout.index(stop) < restart.stdout.index(start)


def test_force_refuses_an_endpoint_that_is_not_template_capable(tmp_path: Path) -> None:
    config = tmp_path / ".globus_compute" / "old" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("engine:\n  type: GlobusComputeEngine\n")
    run = install(tmp_path, "--name", "old", "--config", str(POLARIS), *VARS, "--force")
    assert run.returncode == 1
    assert "not template-capable" in run.stderr
    assert "migrate-to-template-capable old" in run.stderr
    assert files_under(tmp_path) == {".globus_compute/old/config.yaml": config.read_text()}
