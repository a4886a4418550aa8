"""`colmena-fed report`: numbers checked against a simulated run whose timeline is known, a real
two-site run checked for consistency, the HTML page as a real browser shows it, bad run
directories."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import ENDPOINTS, colmena_fed, drain, federation_config
from sample_methods import accelerator, double

from colmena_fed import Method, Result, SitesConfig, TaskQueues, TaskServer
from colmena_fed.journal import FILE_NAME, MAGIC, Journal, RunIdentity
from colmena_fed.methods import MethodLike
from colmena_fed.report import Window, load_run, summary
from colmena_fed.report.series import timeline_bars


def simulate(x: int) -> int:
    return x


def known_run(run_dir: Path) -> None:
    """Seven 10 s tasks at t=0 on site a (2 workers) and b (1 worker, up at 5 s, down 20-30 s).

    a runs two at 0, two at 10, two at 20; b runs one at 5 and one at 15, which its outage at
    20 s loses: it fails over to a at 20. The last ends at 30 s.
    """
    sites = {
        "a": {"sim": {"workers": {"cpu": 2}}, "resources": {"cpu": 2}},
        "b": {
            "sim": {"workers": {"cpu": 1}, "startup": 5, "outages": [[20, 30]]},
            "resources": {"cpu": 1},
        },
    }
    load = {"simulate": {"distribution": "constant", "mean": 10}}
    config = SitesConfig.from_dict({"sites": sites, "sim": {"methods": load}})
    queues = TaskQueues()
    with TaskServer(queues, config, [Method(simulate)], run_dir=run_dir) as server:
        for i in range(7):
            queues.send_inputs(i, method="simulate")
        assert server.world is not None
        server.world.run()
        drain(queues)


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("known") / "run"
    known_run(run_dir)
    return run_dir


def test_the_numbers_of_a_simulated_run_are_those_of_its_timeline(known: Path) -> None:
    run = load_run(known)
    numbers = summary(run, Window.of(run))
    campaign = numbers["campaign"]
    assert (campaign["tasks"], campaign["done"], campaign["failed"]) == (7, 7, 0)
    assert campaign["makespan_s"] == pytest.approx(30, abs=1e-4)
    assert campaign["tasks_per_hour"] == pytest.approx(7 / 30 * 3600, rel=1e-5)
    a, b = numbers["sites"]
    assert (a["site"], a["done"], a["failovers"], b["site"], b["done"]) == ("a", 6, 1, "b", 1)
    assert a["busy_slot_s"] == pytest.approx(60, abs=1e-4)
    assert a["offered_slot_s"] == pytest.approx(60, abs=1e-4)
    assert a["utilization"] == pytest.approx(1.0, abs=1e-6)
    # b: no worker until 5 s, one until its outage at 20 s; 10 s of it ran a task to its end
    assert b["offered_slot_s"] == pytest.approx(15, abs=1e-4)
    assert b["utilization"] == pytest.approx(10 / 15, abs=1e-5)
    waits = a["thinker_wait_s"]  # sent at 0; first dispatched at 0, 0, 10, 10, 15, 20
    assert waits["median"] == pytest.approx(10, abs=1e-4)
    assert waits["p95"] == pytest.approx(18.75, abs=1e-4)
    assert a["remote_wait_s"]["p95"] == pytest.approx(0, abs=1e-4)
    assert a["run_time_s"]["simulate"]["median"] == pytest.approx(10, abs=1e-4)
    bars = {
        (bar.site, bar.lane, round(bar.start - run.start, 3), round(bar.end - run.start, 3))
        for bar in timeline_bars(run, Window.of(run))
    }
    assert bars == {
        ("a", 0, 0, 10),
        ("a", 1, 0, 10),
        ("a", 0, 10, 20),
        ("a", 1, 10, 20),
        ("a", 0, 20, 30),
        ("a", 1, 20, 30),
        ("b", 0, 5, 15),
    }


def test_the_cli_reports_a_window_as_json_and_exports_results(known: Path, tmp_path: Path) -> None:
    done = colmena_fed("report", str(known), "--json", "--until", "15s", "--no-plots")
    assert done.returncode == 0, done.stderr
    numbers = json.loads(done.stdout)
    assert numbers["schema"] == "colmena-fed-report/1"
    assert numbers["campaign"]["ended"] == 3  # two on a at 10 s, one on b at 15 s
    assert numbers["campaign"]["in_flight"] == 3  # a's two and b's second, at 15 s
    assert numbers["campaign"]["pending"] == 1
    exported = tmp_path / "results.jsonl"
    done = colmena_fed("report", str(known), "--export", str(exported), "--no-plots")
    assert done.returncode == 0, done.stderr
    assert "Sites, per slot kind" in done.stdout
    results = [Result.model_validate_json(line) for line in exported.read_text().splitlines()]
    assert sorted(r.args[0] for r in results) == list(range(7))
    assert all(r.success and r.timestamps.delivered is not None for r in results)
    assert exported.stat().st_mode & 0o777 == 0o600


CHECK = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "check";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.id, i.naturalWidth, i.naturalHeight]),
    sites: [...document.querySelectorAll("#sites tbody tr")].map(r => r.innerText),
  });
  document.body.appendChild(out);
});
</script>"""


def test_the_html_page_shows_its_tables_and_plots_in_a_real_browser(
    known: Path, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs chromium (the test command installs Debian's chromium)")
    done = colmena_fed("report", str(known))
    assert done.returncode == 0, done.stderr
    index = known / "report" / "index.html"
    assert (known / "report").stat().st_mode & 0o777 == 0o700
    assert index.stat().st_mode & 0o777 == 0o600
    page = index.read_text()
    assert "://" not in page.replace("file://", "")  # nothing to fetch
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", checked.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    shown = json.loads(dom.split('<pre id="check">')[1].split("</pre>")[0].replace("&quot;", '"'))
    assert [image[0] for image in shown["images"]] == [
        "timeline",
        "utilization",
        "queues",
        "distributions",
    ]
    assert all(width > 300 and height > 200 for _, width, height in shown["images"])
    site_a = shown["sites"][0].split("\t")
    assert site_a[:3] == ["a", "cpu (2)", "6"]
    assert site_a[6] == "100.0 %"


def test_a_real_two_site_run_reports_every_task_once_with_the_counts_of_its_records(
    tmp_path: Path,
) -> None:
    queues = TaskQueues()
    methods: list[MethodLike] = [double, Method(accelerator, slot="gpu")]
    server = TaskServer(queues, federation_config(), methods, run_dir=tmp_path / "run")
    results = []
    with server:
        ids = [queues.send_inputs(i, method="double") for i in range(6)]
        ids += [queues.send_inputs(method="accelerator") for _ in range(2)]
        for _ in ids:
            result = queues.get_result(timeout=120)
            assert result is not None
            results.append(result)
        live = load_run(tmp_path / "run")  # while the server still runs
        assert not live.finished
    run = load_run(tmp_path / "run")
    assert run.finished
    assert Counter(t.task_id for t in run.tasks) == Counter(ids)
    numbers = summary(run, Window.of(run))
    by_site = {row["site"]: row["done"] + sum(row["failed"].values()) for row in numbers["sites"]}
    assert by_site == dict(Counter(r.site for r in results))
    assert numbers["campaign"]["done"] == sum(r.success is True for r in results)
    rows = {t.task_id: t for t in run.tasks}
    for result in results:
        row = rows[result.task_id]
        assert (row.site, row.method, row.worker) == (
            result.site,
            result.method,
            (result.worker.hostname, result.worker.pid) if result.worker else None,
        )
        assert row.run_time == pytest.approx(result.run_time)
        assert row.delivered == pytest.approx(result.timestamps.delivered)


def empty_run(run_dir: Path) -> str:
    Journal.create(run_dir, RunIdentity({"a": "sim"}, ["simulate"]), "x").close()
    return "the run has no task yet"


def newer_journal(run_dir: Path) -> str:
    empty_run(run_dir)
    path = run_dir / FILE_NAME
    data = path.read_bytes()
    path.write_bytes(MAGIC + (2).to_bytes(4, "big") + data[len(MAGIC) + 4 :])
    return "a journal of format 2; this colmena-fed reads format 1"


def no_journal(run_dir: Path) -> str:
    run_dir.mkdir()
    return "no run journal here"


def missing(run_dir: Path) -> str:
    return "no such run directory"


@pytest.mark.parametrize("make", [missing, no_journal, newer_journal, empty_run])
def test_a_bad_run_directory_is_one_clear_message(make: object, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert callable(make)
    expected = make(run_dir)
    done = colmena_fed("report", str(run_dir))
    assert done.returncode == 1
    assert expected in done.stderr
    assert str(run_dir) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_window_that_ends_before_it_starts_is_refused(known: Path) -> None:
    done = colmena_fed("report", str(known), "--since", "20", "--until", "10", "--no-plots")
    assert done.returncode == 2
    assert "the window starts after it ends" in done.stderr


def test_sites_status_shows_a_campaigns_counts_next_to_each_sites_workers(
    known: Path, tmp_path: Path
) -> None:
    sites = tmp_path / "sites.yaml"
    local = ENDPOINTS / "local-cpu.yaml"
    sites.write_text(f"sites:\n  a: {{local: {local}, resources: {{cpu: 2}}}}\n")
    done = colmena_fed("sites", "status", "--sites", str(sites), "--run", str(known), "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["sites"]
    assert row["workers"] == 2
    # six attempts went to a, each ran to its end (b's lost one among them)
    assert row["campaign"] == {"sent": 6, "done": 6, "failed": 0, "in_flight": 0, "pending": 0}


class Molecule:
    """A campaign's own input type: the report's process cannot import it."""

    def __init__(self, atoms: int) -> None:
        self.atoms = atoms


def test_inputs_of_a_campaigns_own_classes_do_not_stop_the_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = Journal.create(run_dir, RunIdentity({"a": "sim"}, ["simulate"]), "x")
    journal.submitted(Result(method="simulate", args=(Molecule(3),), slot="cpu"))
    journal.commit()
    journal.close()
    done = colmena_fed("report", str(run_dir), "--json", "--no-plots")
    assert done.returncode == 0, done.stderr
    campaign = json.loads(done.stdout)["campaign"]
    assert (campaign["tasks"], campaign["pending"]) == (1, 1)
