"""What the run journal costs, and how fast a run resumes, measured in one run.

Throughput: bursts of no-op tasks (a) straight to the engine built from
endpoints/local-cpu.yaml (the baseline of bench/overhead.py), (b) through colmena-fed without
a journal (``TaskServer(journal=False)``) and (c) with it (the default), side by side, bursts
rotating between them. Resume: a run directory whose journal holds ``--resume-tasks`` tasks
(half of them delivered; a quarter in flight at the local site, whose engine died with the
thinker; a quarter pending), written as the dispatcher writes them; the time from
``TaskServer(..., resume=True).start()`` to the first task it dispatches (reading the journal,
starting the site, re-queueing), and how long reading the journal alone takes.

Last line: ``ratio R journal_cost J resume_s S``: R is journal-on over raw throughput and J
journal-on over journal-off (each the median over repeats of back-to-back pairs), S the resume
time in seconds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from overhead import ENDPOINT_YAML, FullPath, RawEngine, noop, stop_all

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.journal import FILE_NAME, Journal, RunIdentity, read
from colmena_fed.recovery import reopen

SITE = "bench"


def site_config() -> SitesConfig:
    # Prefetch: tasks are sent as soon as the engine is up, not once its workers have booted
    # (which takes as long in a new run; bench/startup.py measures it).
    site = {"local": str(ENDPOINT_YAML), "resources": {"cpu": 64}, "prefetch": 64}
    return SitesConfig.from_dict({"sites": {SITE: site}})


def crashed_run(run_dir: Path, tasks: int) -> None:
    """The journal of a run killed with half its tasks delivered, the rest in flight or pending."""
    identity = RunIdentity({SITE: "local"}, ["noop"])
    journal = Journal.create(run_dir, identity, "5d0b7e3c-0000-4000-8000-000000000000")
    now = time.time()
    for i in range(tasks):
        task = Result(method="noop", topic="default", args=(i,), slot="cpu")
        journal.submitted(task)
        if i < tasks * 3 // 4:  # delivered, or in flight
            journal.dispatched(task, SITE, 1, now)
        if i < tasks // 2:
            task.value, task.success, task.site = i, True, SITE
            journal.ended(task, now)
            journal.delivered(task.task_id, now)
        if i % 500 == 0:
            journal.commit()
    journal.commit()
    journal.close()


def first_dispatch_after_resume(run_dir: Path) -> float:
    """When the resumed run dispatched its first task (journal time)."""
    events = read(run_dir / FILE_NAME).events
    resumed = next(i for i, (_, kind, *_) in enumerate(events) if kind == "resumed")
    return min(at for _, kind, at, *_ in events[resumed:] if kind == "dispatched")


def measure_resume(tmp: Path, tasks: int) -> tuple[float, float]:
    """Seconds to the first dispatch of a resumed run, and to read its journal alone."""
    read_dir, run_dir = tmp / "read", tmp / "resume"
    crashed_run(read_dir, tasks)
    start = time.perf_counter()
    journal, _ = reopen(read_dir, RunIdentity({SITE: "local"}, ["noop"]))
    read_s = time.perf_counter() - start
    journal.close()
    crashed_run(run_dir, tasks)
    queues = TaskQueues()
    server = TaskServer(queues, site_config(), [Method(noop)], run_dir=run_dir, resume=True)
    started = time.time()
    server.start()
    try:
        for _ in range(tasks):  # the delivered half replayed, then the rest as new
            result = queues.get_result(timeout=600)
            assert result is not None
            assert result.success, result.failure
    finally:
        server.stop()
    return first_dispatch_after_resume(run_dir) - started, read_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--resume-tasks", type=int, default=10_000)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    print(f"endpoint: {ENDPOINT_YAML.name}; bursts of {args.tasks} no-op tasks")
    with tempfile.TemporaryDirectory(prefix="colmena-fed-bench-") as directory:
        tmp = Path(directory)
        raw = RawEngine(tmp / "raw")
        contenders: dict[str, RawEngine | FullPath] = {
            "raw": raw,
            "journal off": FullPath(tmp / "off", args.tasks, 2.0, journal=False),
            "journal on": FullPath(tmp / "on", args.tasks, 2.0, journal=True),
        }
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        try:
            for contender in contenders.values():
                contender.burst(200)
            names = list(contenders)
            for repeat in range(args.repeats):
                shift = repeat % len(names)
                for name in names[shift:] + names[:shift]:
                    rates[name].append(contenders[name].burst(args.tasks))
                print(
                    f"repeat {repeat}: "
                    + " | ".join(f"{n} {r[-1]:7.1f}" for n, r in rates.items())
                    + " tasks/s"
                )
        finally:
            stop_all(contenders.values())
        resume_s, read_s = measure_resume(tmp, args.resume_tasks)

    def paired(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[top], rates[bottom], strict=True))

    for name, values in rates.items():
        print(f"{name + ' throughput':26} {statistics.median(values):8.1f} tasks/s")
    cpu = ", ".join(
        f"{name} {statistics.median(c.cpu_per_task) * 1e6:.0f} us" for name, c in contenders.items()
    )
    print(f"thinker-process CPU per task (median of bursts): {cpu}")
    print(f"reading a journal of {args.resume_tasks} tasks: {read_s:.3f} s")
    print(f"resume to first dispatch ({args.resume_tasks} tasks): {resume_s:.3f} s")
    ratio, cost = paired("journal on", "raw"), paired("journal on", "journal off")
    print(f"ratio {ratio:.3f} journal_cost {cost:.3f} resume_s {resume_s:.3f}")


if __name__ == "__main__":
    main()
