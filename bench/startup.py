"""How soon a fresh `local` site returns its first result: the shipped YAML against Parsl's default.

endpoints/local-cpu.yaml sets ``job_status_kwargs: {strategy_period: 1}``; the baseline is the
same file without it (Parsl's scaling strategy then first runs, and launches the block, 5 s
after the engine starts). Each round starts a task server on one of them, sends one task and
takes its result; the two alternate. Prints the median of each and, as its last line,
``ratio <shipped / default>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from colmena_fed import SitesConfig, TaskQueues, TaskServer

SHIPPED = Path(__file__).resolve().parent.parent / "endpoints" / "local-cpu.yaml"


def double(x: int) -> int:
    return 2 * x


def first_result(endpoint_yaml: Path, run_dir: Path) -> float:
    """Seconds from starting a task server on ``endpoint_yaml`` to its first result."""
    sites = SitesConfig.from_dict(
        {"sites": {"site": {"local": str(endpoint_yaml), "resources": {"cpu": 2}}}}
    )
    queues = TaskQueues()
    started = time.perf_counter()
    with TaskServer(queues, sites, [double], run_dir=run_dir):
        queues.send_inputs(1, method="double")
        result = queues.get_result(timeout=120)
        elapsed = time.perf_counter() - started
    assert result is not None
    assert result.success, result.failure
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="colmena-fed-startup-") as tmp:
        default = Path(tmp) / "local-cpu-default.yaml"
        lines = SHIPPED.read_text().splitlines(keepends=True)
        kept = [line for line in lines if "job_status_kwargs" not in line]
        default.write_text("".join(line for line in kept if "strategy_period" not in line))
        times: dict[str, list[float]] = {"shipped": [], "default": []}
        for round_ in range(args.rounds):
            order = [("shipped", SHIPPED), ("default", default)]
            for name, path in order if round_ % 2 == 0 else order[::-1]:
                times[name].append(first_result(path, Path(tmp) / f"{name}-{round_}"))
                print(f"round {round_}: {name} {times[name][-1]:.2f} s")
    shipped, baseline = statistics.median(times["shipped"]), statistics.median(times["default"])
    print(f"first result, shipped YAML (strategy every 1 s): {shipped:.2f} s (median)")
    print(f"first result, Parsl's default strategy period:   {baseline:.2f} s (median)")
    print(f"ratio {shipped / baseline:.3f}")


if __name__ == "__main__":
    main()
