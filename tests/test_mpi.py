"""MPI and shell methods: a real MPI program on 2 ranks of the local MPI site, node slots."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import pytest
from conftest import ENDPOINTS, REPO, RunningTestbed, colmena_fed

from colmena_fed import (
    ConfigError,
    Method,
    MPIMethod,
    ResourceRequirements,
    Result,
    ShellMethod,
    SitesConfig,
    TaskQueues,
    TaskServer,
)
from colmena_fed.colmena.models.methods import ExecutableMethod
from colmena_fed.methods import MethodLike
from colmena_fed.models import ResourceRequest
from colmena_fed.mpi import MPISite
from colmena_fed.scheduler import PlacementError, Scheduler
from colmena_fed.shell import ShellProgram

#: A small MPI program (the MPI example's): the ranks integrate pi with an allreduce, and
#: each prints the total it sees; rank ``argv[2]`` then fails.
SOURCE = REPO / "examples" / "mpi" / "integrate.c"

TWO_RANKS = {"num_nodes": 1, "ranks_per_node": 2}


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MPI program, built with MPICH's mpicc."""
    binary = tmp_path_factory.mktemp("mpi") / "integrate"
    compiler = shutil.which("mpicc")
    assert compiler is not None, "mpicc not found: scripts/test.sh installs mpich"
    subprocess.run([compiler, "-o", str(binary), str(SOURCE)], check=True, timeout=120)
    return binary


def totals(run_dir: Path, output: object) -> list[str]:
    """The total each rank printed, as it saw it (the method's postprocess)."""
    lines = (run_dir / "stdout").read_text().splitlines()
    return sorted(line.split(": ", 1)[1] for line in lines)


def write_input(run_dir: Path, intervals: int) -> dict[str, object]:
    """A preprocess: the program's input goes through a file in the task's directory."""
    (run_dir / "intervals.txt").write_text(str(intervals))
    return {"intervals_file": "intervals.txt"}


class ColmenaIntegrate(ExecutableMethod):
    """The program as a Colmena application declares it, with its own MPI launch template."""

    def __init__(self, program: Path) -> None:
        super().__init__(
            [str(program)],
            name="colmena_integrate",
            mpi=True,
            mpi_command_string="mpiexec -n {total_ranks} -ppn {cpu_processes}",
        )

    def preprocess(
        self, run_dir: Path, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> tuple[list[str], str | None]:
        return [str(args[0])], None

    def postprocess(self, run_dir: Path) -> list[str]:
        return (run_dir / "colmena.stdout").read_text().splitlines()


@pytest.fixture(scope="module", params=["local", "globus"])
def mpi_server(
    request: pytest.FixtureRequest, program: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TaskServer]:
    """A task server over the local MPI site (1 node) and the CPU site, per backend."""
    mpi: dict[str, object]
    cpu: dict[str, object]
    if request.param == "local":
        mpi = {"local": str(ENDPOINTS / "local-mpi.yaml"), "resources": {"nodes": 1}}
        cpu = {"local": str(ENDPOINTS / "local-cpu.yaml"), "resources": {"cpu": 2}}
        extra: dict[str, object] = {"scheduler": {"status_period": 0.5}}
    else:
        bed: RunningTestbed = request.getfixturevalue("testbed")
        mpi = {
            "endpoint": bed.endpoints["local-mpi"],
            "resources": {"nodes": 1},
            "nodes_per_block": 1,
        }
        cpu = {"endpoint": bed.endpoints["local-cpu"], "resources": {"cpu": 2}}
        extra = {"globus": bed.globus, "scheduler": {"status_period": 1}}
    config = SitesConfig.from_dict({"sites": {"mpi": mpi, "cpu": cpu}, **extra})
    methods: list[MethodLike] = [
        MPIMethod(
            f"{program} {{intervals}}", "allreduce", specification=TWO_RANKS, postprocess=totals
        ),
        MPIMethod(f"{program} 10 {{failing_rank}}", "failing", specification=TWO_RANKS),
        MPIMethod(f"{program} $(cat {{intervals_file}})", "from_file", preprocess=write_input),
        ShellMethod("sleep 60 & echo $! > {pid_file}; wait", "sleeper", walltime=1),
        ColmenaIntegrate(program),
    ]
    queues = TaskQueues()
    server = TaskServer(queues, config, methods, run_dir=tmp_path_factory.mktemp("mpi-run"))
    with server:
        yield server


def one(
    queues: TaskQueues, method: str, resources: Mapping[str, object] | None = None, **kwargs: object
) -> Result:
    """The result of one task of ``method`` with keyword inputs ``kwargs``."""
    queues.send_inputs(method=method, input_kwargs=kwargs, resources=resources)
    result = queues.get_result(timeout=180)
    assert result is not None, f"no result for {method}"
    return result


def test_the_ranks_of_an_mpi_program_see_each_other(mpi_server: TaskServer) -> None:
    result = one(mpi_server.queues, "allreduce", intervals=10)
    assert result.success, result.failure
    assert result.site == "mpi"
    assert result.value == ["3.142425985001", "3.142425985001"]  # both ranks' parts, summed
    assert result.shell is not None
    assert result.shell.returncode == 0
    assert result.shell.command.startswith("mpiexec -n 2 -ppn 2 -hosts ")
    assert "rank 1 of 2: 3.142425985001" in result.shell.stdout


def test_a_failing_rank_fails_the_task_with_its_stderr(mpi_server: TaskServer) -> None:
    result = one(mpi_server.queues, "failing", failing_rank=1)
    assert not result.success
    assert result.failure is not None
    assert result.failure.kind == "user"
    assert result.failure.exception_type == "ShellCommandFailed"
    assert "rank 1 of 2 gives up" in result.failure.message
    assert len(result.attempts) == 1  # the program's failure is not retried
    assert result.shell is not None
    assert result.shell.returncode != 0


def test_a_task_gives_its_own_specification_and_preprocess_writes_its_input(
    mpi_server: TaskServer,
) -> None:
    spec = {"specification": {"num_nodes": 1, "num_ranks": 2}}
    result = one(mpi_server.queues, "from_file", intervals=10, resources=spec)
    assert result.success, result.failure
    assert result.value.count(": 3.142425985001") == 2


def test_colmenas_executable_method_runs_with_its_launch_template(mpi_server: TaskServer) -> None:
    queues = mpi_server.queues
    resources = ResourceRequirements(node_count=1, cpu_processes=2)
    queues.send_inputs(10, method="colmena_integrate", resources=resources)
    result = queues.get_result(timeout=180)
    assert result is not None
    assert result.success, result.failure
    assert sorted(result.value) == ["rank 0 of 2: 3.142425985001", "rank 1 of 2: 3.142425985001"]
    assert result.shell is not None
    assert result.shell.command.startswith("mpiexec -n 2 -ppn 2 ")


def test_a_request_no_site_can_hold_is_rejected_at_once(mpi_server: TaskServer) -> None:
    spec = {"specification": {"num_nodes": 2}}
    result = one(mpi_server.queues, "allreduce", intervals=10, resources=spec)
    assert result.failure is not None
    assert result.failure.kind == "rejected"
    assert result.attempts == []  # nothing was sent
    message = result.failure.message
    assert result.task_id in message
    assert "field 'num_nodes'" in message
    assert "site 'mpi' has blocks of 1" in message


def test_a_missing_node_count_is_rejected_naming_the_field(mpi_server: TaskServer) -> None:
    result = one(mpi_server.queues, "from_file", intervals=10)  # its method gives no spec
    assert result.failure is not None
    assert result.failure.kind == "rejected"
    assert "site 'mpi' runs an MPI engine, and the resource specification has no " in (
        result.failure.message
    )
    assert "'num_nodes'" in result.failure.message


def test_a_command_past_its_walltime_takes_its_processes_with_it(
    mpi_server: TaskServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    result = one(mpi_server.queues, "sleeper", pid_file=str(pid_file))
    assert result.failure is not None
    assert result.failure.kind == "timeout"
    assert result.site == "cpu"
    sleeper = int(pid_file.read_text())
    assert not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == "zombie"


# Placement on plain data: node slots, and the order of large and small tasks.


def mpi_task(nodes: int, task_id: str, **spec: object) -> Result:
    resources = ResourceRequest(specification={"num_nodes": nodes, "ranks_per_node": 1, **spec})
    return Result.model_validate(
        {"task_id": task_id, "method": "sim", "slot": "nodes", "resources": resources}
    )


def placed(scheduler: Scheduler, task: Result) -> str | None:
    step = scheduler.submit(task)
    return step.placed[0].site if step.placed else None


def test_a_large_task_is_not_starved_by_small_ones_that_come_after_it() -> None:
    scheduler = Scheduler(
        {"big": {"nodes": 2}, "small": {"nodes": 1}},
        mpi={"big": MPISite(2), "small": MPISite(1)},
    )
    assert placed(scheduler, mpi_task(1, "first")) == "big"  # most free nodes
    assert placed(scheduler, mpi_task(1, "second")) == "big"
    assert placed(scheduler, mpi_task(2, "large")) is None  # big is full
    assert placed(scheduler, mpi_task(1, "third")) == "small"  # small ones go elsewhere
    assert placed(scheduler, mpi_task(1, "fourth")) is None
    assert scheduler.sites["big"].in_flight == {"nodes": 2}
    # One node frees at big: the large task keeps it, no small task takes it.
    assert scheduler.release("big", "nodes", 1) == []
    (start,) = scheduler.release("big", "nodes", 1)
    assert (start.task.task_id, start.site) == ("large", "big")
    assert scheduler.sites["big"].in_flight == {"nodes": 2}
    (after,) = scheduler.release("small", "nodes", 1)
    assert (after.task.task_id, after.site) == ("fourth", "small")


def test_live_blocks_bound_the_nodes_a_site_offers() -> None:
    scheduler = Scheduler({"hpc": {"nodes": 4}}, mpi={"hpc": MPISite(2)})
    scheduler.set_status("hpc", True, workers=2, managers=1)  # one of two blocks is up
    assert placed(scheduler, mpi_task(2, "a")) == "hpc"
    assert placed(scheduler, mpi_task(1, "b")) is None  # the live block's nodes are taken
    assert scheduler.live_capacity("nodes") == 2
    (started,) = scheduler.set_status("hpc", True, workers=4, managers=2)
    assert started.task.task_id == "b"
    assert scheduler.units(started.task, "hpc") == 1


@pytest.mark.parametrize(
    ("spec", "site", "message"),
    [
        ({"num_nodes": 1}, "cpu", "site 'cpu' does not run an MPI engine"),
        ({"ranks_per_node": 2}, "hpc", "the resource specification has no 'num_nodes'"),
        ({"num_nodes": 1}, "hpc", "gives neither 'ranks_per_node' nor 'num_ranks'"),
        ({"num_nodes": 3, "num_ranks": 3}, "hpc", "site 'hpc' has blocks of 2"),
        ({"num_nodes": 2, "num_ranks": 3}, "hpc", "'num_ranks' 3 is not a multiple of num_nodes"),
        ({"nodes": 2}, "hpc", "field 'nodes' is not one Parsl's MPI mode takes"),
        ({"num_nodes": "2"}, "hpc", "field 'num_nodes' must be a whole number"),
    ],
)
def test_a_specification_no_site_can_run_is_refused_naming_the_field(
    spec: dict[str, object], site: str, message: str
) -> None:
    scheduler = Scheduler(
        {"hpc": {"nodes": 4}, "cpu": {"cpu": 2}},
        mpi={"hpc": MPISite(2, source="hpc.yaml")},
    )
    slot = "nodes" if site == "hpc" else "cpu"
    task = Result.model_validate(
        {"method": "m", "slot": slot, "resources": ResourceRequest(specification=spec)}
    )
    with pytest.raises(PlacementError, match=message) as refused:
        scheduler.check(task)
    assert task.task_id in str(refused.value)


def test_a_task_without_a_specification_never_goes_to_an_mpi_site() -> None:
    scheduler = Scheduler({"hpc": {"cpu": 8}, "laptop": {"cpu": 1}}, mpi={"hpc": MPISite(2, {})})
    plain = Result.model_validate({"method": "m", "slot": "cpu"})
    scheduler.check(plain)
    assert placed(scheduler, plain) == "laptop"
    assert placed(scheduler, Result.model_validate({"method": "m", "slot": "cpu"})) is None


# Configuration errors.


def test_the_sites_yaml_refuses_what_mpi_sites_cannot_be(tmp_path: Path) -> None:
    local = str(ENDPOINTS / "local-mpi.yaml")
    queues = TaskQueues()
    contradicting = {"local": local, "resources": {"nodes": 1}, "nodes_per_block": 2}
    with pytest.raises(ConfigError, match="site 'mpi', field 'nodes_per_block': 2, but"):
        TaskServer(queues, SitesConfig.from_dict({"sites": {"mpi": contradicting}}), [])
    plain = {
        "local": str(ENDPOINTS / "local-cpu.yaml"),
        "resources": {"cpu": 1},
        "resource_specification": {"num_nodes": 1},
    }
    with pytest.raises(ConfigError, match="'resource_specification': only an MPI site"):
        TaskServer(queues, SitesConfig.from_dict({"sites": {"cpu": plain}}), [])
    simulated = {"sim": {"workers": {"nodes": 2}}, "resources": {"nodes": 2}, "nodes_per_block": 2}
    with pytest.raises(ConfigError, match="sim sites do not model MPI engines"):
        SitesConfig.from_dict({"sites": {"sim": simulated}})


def test_a_method_with_a_bad_specification_or_template_is_refused() -> None:
    with pytest.raises(ValueError, match="method 'm', resource specification: field 'nodes'"):
        Method(print, name="m", specification={"nodes": 2})
    with pytest.raises(ValueError, match="method 'run': command template"):
        ShellMethod("echo {unclosed", "run")
    with pytest.raises(ValueError, match="has an empty field"):
        ShellMethod("echo {}", "run")


# The worker side, called directly.


def test_inputs_are_quoted_for_the_shell_and_a_missing_field_is_named(tmp_path: Path) -> None:
    echo = ShellProgram("echo", "printf '%s|' {0} {words}")
    outcome = echo("a b; rm -rf /", words=["x y", "$HOME"])
    assert outcome.value == "a b; rm -rf /|x y|$HOME|"
    with pytest.raises(KeyError, match="needs the field 'words'"):
        echo("only one")
    strict = ShellProgram("strict", "true", preprocess=lambda run_dir: ["not", "a", "dict"])  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="returns the command's fields as a dict"):
        strict()


def test_the_mpi_example_campaign_runs_end_to_end(tmp_path: Path) -> None:
    example = REPO / "examples" / "mpi"
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        (example / "sites.yaml").read_text().replace("../../endpoints", str(ENDPOINTS))
    )
    run = colmena_fed(
        "run",
        f"{example / 'integration.py'}:make_thinker",
        "--sites",
        str(sites),
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert run.returncode == 0, run.stderr
    errors = {
        int(line.split()[0]): float(line.rsplit("= ", 1)[1])
        for line in run.stdout.splitlines()
        if "intervals on 2 ranks" in line
    }
    assert set(errors) == {10, 1000, 100000}
    assert errors[100000] < errors[1000] < errors[10] < 1e-3
