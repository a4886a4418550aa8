"""How long `colmena-fed report` takes, and how much memory, on a journal of 100,000 tasks.

The journal is made by a simulated campaign (the real task server and scheduler over `sim`
sites, in virtual time): 8 sites (6 CPU, 2 GPU, of different speeds; one with an outage),
``--tasks`` tasks sent at once, 80 % ``simulate`` and 20 % ``train``. Then ``colmena-fed
report RUN_DIR`` runs as a user runs it, in a process of its own (tables, the four plots and
the HTML page); its wall time and peak resident memory are measured.

Last line: ``seconds S rss_mb M``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from colmena_fed import Method, SitesConfig, TaskQueues, TaskServer


def simulate(x: int) -> int:
    return x


def train(x: int) -> int:
    return x


def federation() -> SitesConfig:
    """Eight simulated sites: six CPU, two GPU."""
    sites: dict[str, dict[str, object]] = {}
    for i in range(6):
        sim: dict[str, object] = {"workers": {"cpu": 32}, "speed": 1.0 - 0.1 * i, "latency": 0.1}
        if i == 5:
            sim["outages"] = [[600, 1200]]
        sites[f"cpu-{i}"] = {"sim": sim, "resources": {"cpu": 32}}
    for i in range(2):
        sim = {"workers": {"gpu": 8}, "speed": 1.0 - 0.3 * i, "latency": 0.1}
        sites[f"gpu-{i}"] = {"sim": sim, "resources": {"gpu": 8}}
    loads = {
        "simulate": {"distribution": "lognormal", "mean": 60, "sigma": 1},
        "train": {"distribution": "lognormal", "mean": 30, "sigma": 0.5},
    }
    return SitesConfig.from_dict({"sites": sites, "sim": {"seed": 3, "methods": loads}})


def campaign(run_dir: Path, tasks: int) -> float:
    """Run the simulated campaign into ``run_dir``; its virtual makespan."""
    queues = TaskQueues()
    methods = [Method(simulate), Method(train, slot="gpu")]
    with TaskServer(queues, federation(), methods, run_dir=run_dir) as server:
        for i in range(tasks):
            queues.send_inputs(i, method="train" if i % 5 == 0 else "simulate")
        assert server.world is not None
        makespan = server.world.run()
        queues.flush()
    return makespan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="colmena-fed-bench-") as directory:
        run_dir = Path(directory) / "run"
        started = time.perf_counter()
        makespan = campaign(run_dir, args.tasks)
        journal = sum(path.stat().st_size for path in run_dir.glob("journal.*"))
        print(
            f"campaign: {args.tasks} tasks over 8 sim sites, virtual makespan {makespan:.0f} s, "
            f"simulated in {time.perf_counter() - started:.1f} s; journal {journal / 1e6:.1f} MB"
        )
        command = [str(Path(sys.executable).parent / "colmena-fed"), "report", str(run_dir)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the report failed:\n{done.stderr}")
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        plots = sorted(path.name for path in (run_dir / "report").iterdir())
        print(f"report written: {', '.join(plots)}")
    print(f"seconds {seconds:.2f} rss_mb {rss_mb:.0f}")


if __name__ == "__main__":
    main()
