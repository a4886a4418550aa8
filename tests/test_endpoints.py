"""Endpoint configurations: the shipped ones validate, broken ones fail naming their field.

`colmena-fed endpoints validate` is run as a user runs it. Each file of the broken corpus in
tests/endpoint_configs/ says on its first line (``# expect: ...``) the line it must produce.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import colmena_fed

from colmena_fed.endpoints.template import render
from colmena_fed.endpoints.validate import validate

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "endpoints").glob("*.yaml"))
BROKEN = sorted((REPO / "tests" / "endpoint_configs").glob("*.yaml"))
SITE_VARS = {"account": "MYPROJ", "worker_init": "source ~/envs/cf/bin/activate"}
VAR_ARGS = [arg for name, value in SITE_VARS.items() for arg in ("--var", f"{name}={value}")]


def test_the_shipped_configs_cover_the_machines_we_promise() -> None:
    names = {path.stem for path in SHIPPED}
    assert {"polaris", "aurora", "perlmutter-gpu", "perlmutter-cpu", "frontier"} <= names
    assert {"slurm", "pbs", "local-cpu", "local-gpu"} <= names


def test_every_shipped_config_validates_with_its_variables_given() -> None:
    run = colmena_fed("endpoints", "validate", *map(str, SHIPPED), *VAR_ARGS)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [f"{path}: ok" for path in SHIPPED]


@pytest.mark.parametrize("path", [p for p in SHIPPED if not p.stem.startswith("local")], ids=str)
def test_hpc_configs_ask_for_account_and_worker_init(path: Path) -> None:
    problems = validate(path, {})
    assert {(p.field, p.message.split(";")[0]) for p in problems} == {
        ("engine.provider.account", "template variable 'account' has no value"),
        ("engine.provider.worker_init", "template variable 'worker_init' has no value"),
    }


@pytest.mark.parametrize("path", [p for p in SHIPPED if not p.stem.startswith("local")], ids=str)
def test_hpc_configs_let_an_idle_user_endpoint_exit_so_a_new_template_applies(path: Path) -> None:
    config = yaml.safe_load(render(path, path.read_text(), SITE_VARS))
    assert config["idle_heartbeats_soft"] == 10


@pytest.mark.parametrize(
    "path",
    [p for p in SHIPPED if "gpu" in p.stem or p.stem in ("polaris", "aurora", "frontier")],
    ids=str,
)
def test_gpu_configs_pin_one_worker_per_accelerator(path: Path) -> None:
    engine = yaml.safe_load(render(path, path.read_text(), SITE_VARS))["engine"]
    accelerators = engine["available_accelerators"]
    count = accelerators if isinstance(accelerators, int) else len(accelerators)
    assert count > 0
    assert engine["max_workers_per_node"] == count


def test_rendering_matches_the_endpoints_own_render_command(tmp_path: Path) -> None:
    """What validate checks is what a template-capable endpoint would run."""
    options = tmp_path / "options.json"
    options.write_text(
        '{"account": "MYPROJ", "worker_init": "module load conda", "qos": "regular"}'
    )
    script = Path(sys.executable).parent / "globus-compute-endpoint"
    for path in (REPO / "endpoints" / "polaris.yaml", REPO / "endpoints" / "perlmutter-gpu.yaml"):
        theirs = subprocess.run(
            [str(script), "render-user-config", "-t", str(path), "-o", str(options)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        ours = render(
            path,
            path.read_text(),
            {"account": "MYPROJ", "worker_init": "module load conda", "qos": "regular"},
        )
        assert yaml.safe_load(ours) == yaml.safe_load(theirs)
        assert yaml.safe_load(ours)["engine"]["provider"]["account"] == "MYPROJ"


def expectation(path: Path) -> str:
    return path.read_text().splitlines()[0].removeprefix("# expect: ")


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_each_broken_config_fails_naming_its_field(path: Path) -> None:
    lines = [str(problem) for problem in validate(path, {})]
    assert lines
    assert all(line.startswith(str(path)) for line in lines), lines
    assert any(expectation(path) in line for line in lines), lines


def test_the_command_prints_one_line_per_problem_and_fails() -> None:
    run = colmena_fed("endpoints", "validate", *map(str, BROKEN))
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    for path in BROKEN:
        mine = [line for line in lines if line.startswith(f"{path}:")]
        assert any(expectation(path) in line for line in mine), (path, mine)
    assert len(lines) == len(BROKEN)
    warned = [p for p in BROKEN if ": warning: " in expectation(p)]
    assert f"{len(BROKEN) - len(warned)} of {len(BROKEN)} files have errors" in run.stderr
    assert f"{len(warned)} of {len(BROKEN)} files have warnings" in run.stderr


def test_warnings_alone_pass_unless_strict_and_json_says_which_is_which() -> None:
    warned = [p for p in BROKEN if ": warning: " in expectation(p)]
    assert warned
    run = colmena_fed("endpoints", "validate", *map(str, warned))
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(": warning: " in line for line in run.stdout.splitlines())
    assert colmena_fed("endpoints", "validate", "--strict", *map(str, warned)).returncode == 1
    both = [*warned, REPO / "tests" / "endpoint_configs" / "walltime_number.yaml"]
    shown = colmena_fed("endpoints", "validate", "--json", *map(str, both))
    assert shown.returncode == 1
    report = json.loads(shown.stdout)
    assert [entry["file"] for entry in report] == list(map(str, both))
    assert {p["severity"] for entry in report[:-1] for p in entry["problems"]} == {"warning"}
    assert [entry["ok"] for entry in report] == [True] * len(warned) + [False]
    assert [p["severity"] for p in report[-1]["problems"]] == ["error"]


def test_every_unknown_key_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "engine:\n  type: GlobusComputeEngine\n  max_wokers_per_node: 2\n"
        "  provider:\n    type: PBSProProvider\n    acount: x\n    walltime: '01:00:00'\n"
    )
    fields = [problem.field for problem in validate(path, {})]
    assert fields == ["engine.max_wokers_per_node", "engine.provider.acount"]


@pytest.mark.parametrize("name", ["slurm", "pbs"])
def test_a_null_account_means_the_scheduler_needs_none(name: str) -> None:
    path = REPO / "endpoints" / f"{name}.yaml"
    assert validate(path, {**SITE_VARS, "account": None}) == []


def test_an_empty_account_is_refused_because_pbs_would_pass_it_on() -> None:
    path = REPO / "endpoints" / "pbs.yaml"
    (problem,) = validate(path, {**SITE_VARS, "account": ""})
    assert problem.field == "engine.provider.account"
    assert "write account: null for none" in problem.message


def test_accelerators_given_as_a_string_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "string.yaml"
    path.write_text(
        "engine:\n  type: GlobusComputeEngine\n  max_workers_per_node: 3\n"
        "  available_accelerators: '0,1'\n  provider:\n    type: LocalProvider\n"
    )
    (problem,) = validate(path, {})
    assert problem.field == "engine.available_accelerators"
    assert "one accelerator per character" in problem.message


def test_a_file_without_template_syntax_is_used_as_written(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    text = (
        (REPO / "endpoints" / "local-cpu.yaml")
        .read_text()
        .replace("    max_blocks: 1", "    max_blocks: 1\n    worker_init: 'echo ${#ARGS[@]}'")
    )
    path.write_text(text)
    assert render(path, text, {}) == text
    assert validate(path, {}) == []


def test_template_values_are_read_as_json_where_they_are_json() -> None:
    path = REPO / "endpoints" / "perlmutter-cpu.yaml"
    run = colmena_fed(
        "endpoints",
        "validate",
        str(path),
        *VAR_ARGS,
        "--var",
        "workers_per_node=32",
        "--var",
        "walltime=02:00:00",
    )
    assert run.returncode == 0, run.stdout
    engine = yaml.safe_load(
        render(
            path, path.read_text(), {**SITE_VARS, "workers_per_node": 32, "walltime": "02:00:00"}
        )
    )["engine"]
    assert engine["max_workers_per_node"] == 32
    assert engine["provider"]["walltime"] == "02:00:00"


@pytest.mark.parametrize(
    ("var", "message"),
    [("account", "expected NAME=VALUE"), ('ids=["0", "1"]', "must be a string, number")],
)
def test_a_malformed_var_is_refused_naming_the_option(var: str, message: str) -> None:
    run = colmena_fed("endpoints", "validate", str(SHIPPED[0]), "--var", var)
    assert run.returncode == 2
    assert "--var" in run.stderr
    assert message in run.stderr


def test_a_missing_file_is_one_problem_among_good_files(tmp_path: Path) -> None:
    good = REPO / "endpoints" / "local-cpu.yaml"
    missing = tmp_path / "nowhere.yaml"
    run = colmena_fed("endpoints", "validate", str(good), str(missing))
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"{good}: ok",
        f"{missing}: (file): error: cannot read the endpoint YAML (No such file or directory)",
    ]


def test_a_key_given_twice_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(
        "engine:\n  type: GlobusComputeEngine\n  provider:\n    type: LocalProvider\n"
        "    worker_init: 'module load a'\n    worker_init: 'source b'\n"
    )
    (problem,) = validate(path, {})
    assert (problem.severity, problem.line) == ("error", 6)
    assert "duplicate key 'worker_init'" in problem.message


def test_a_condor_pool_needs_no_walltime_and_may_name_its_project_in_options(
    tmp_path: Path,
) -> None:
    path = tmp_path / "condor.yaml"
    path.write_text(
        "engine:\n  type: GlobusComputeEngine\n  provider:\n    type: CondorProvider\n"
        "    scheduler_options: '+ProjectName = \"my-project\"'\n"
    )
    assert validate(path, {}) == []
