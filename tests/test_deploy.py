"""The scheduling recipes in deploy/ run as written: the cron line, the systemd units, the Airflow DAG.

- cron: the crontab line's schedule is read by croniter (Airflow's environment has it) and its
  command is run by /bin/sh as cron would, with the variables the file sets pointed at this checkout.
- systemd: `systemd-analyze verify` checks both units (paths pointed at this checkout: it checks that
  the executables exist) and prints nothing when they are right; `calendar` reads the timer.
- Airflow: in its own environment (.cluster/airflow-venv, `make airflow-venv`, pinned by
  deploy/constraints/airflow-venv.txt), the DAG is parsed by a DagBag and its Beam task executed:
  a real `newsbeam run` through `BeamRunPythonPipelineOperator`, then the feed-health task.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT, require

pytestmark = pytest.mark.e2e

DEPLOY = PROJECT / "deploy"
AIRFLOW_PYTHON = PROJECT / ".cluster" / "airflow-venv" / "bin" / "python"
NEWSBEAM = Path(sys.executable).with_name("newsbeam")


def crontab_line() -> tuple[dict[str, str], str, str, str]:
    """The variables, the schedule, the user and the command of deploy/cron/newsbeam."""
    variables: dict[str, str] = {}
    entries = []
    for line in (DEPLOY / "cron" / "newsbeam").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if equals and " " not in name:
            variables[name] = value
        else:
            entries.append(line)
    (entry,) = entries
    fields = entry.split(None, 6)
    return variables, " ".join(fields[:5]), fields[5], fields[6]


def airflow(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    require(AIRFLOW_PYTHON.exists(), f"no Airflow environment at {AIRFLOW_PYTHON} (make airflow-venv)")
    return subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
        # PYTHONPATH: newsbeam's interpreter, started by the operator, runs this checkout's code.
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(PROJECT),
            **env,
        },
    )


def test_the_cron_line_runs_newsbeam_then_alerts_on_stale_feeds(tmp_path: Path) -> None:
    variables, schedule, user, command = crontab_line()
    assert user == "newsbeam" and variables["SHELL"] == "/bin/sh"
    checked = airflow(
        "import croniter, datetime; "
        f"it = croniter.croniter({schedule!r}, datetime.datetime(2026, 12, 2, 8, 30)); "
        "print(it.get_next(datetime.datetime), it.get_next(datetime.datetime))",
        {"AIRFLOW_HOME": str(tmp_path / "airflow")},
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["2026-12-02", "09:17:00", "2026-12-02", "10:17:00"]  # hourly at :17
    home, output = tmp_path / "home", tmp_path / "output"
    (home / ".venv" / "bin").mkdir(parents=True)
    (home / ".venv" / "bin" / "newsbeam").symlink_to(NEWSBEAM)
    (home / "configs").symlink_to(PROJECT / "configs")
    env = {**os.environ, **variables, "NEWSBEAM_HOME": str(home), "NEWSBEAM_OUTPUT": str(output)}
    env["PYTHONPATH"] = str(PROJECT)  # this checkout's code, whichever checkout the venv was installed from
    ran = subprocess.run(
        [variables["SHELL"], "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    # The shipped seeds' feed files are years old: stale feeds, which cron would mail.
    assert ran.returncode == 6, ran.stderr
    summary, *lines = ran.stdout.splitlines()  # the run's one line (-q), then the alerts
    assert summary.startswith("newsbeam run ") and ": committed in " in summary
    alerts = [line.split("\t") for line in lines]
    assert alerts and all(status == "stale" for status, _, _ in alerts), ran.stdout
    assert any(source.endswith("seeds/feeds/rss2_en.xml") for _, source, _ in alerts)
    (manifest,) = (output / "_runs").glob("*.json")
    assert json.loads(manifest.read_text(encoding="utf-8"))["status"] == "committed"
    assert (output / "report.html").read_text(encoding="utf-8").count('class="status stale"') == len(alerts)


def test_the_systemd_units_verify_and_the_timer_is_hourly(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is missing (make test installs Debian's systemd package)")
    assert analyze is not None
    for unit in ("newsbeam.service", "newsbeam.timer"):
        text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
        (tmp_path / unit).write_text(text.replace("/opt/newsbeam", str(PROJECT)), encoding="utf-8")
    verified = subprocess.run(
        [analyze, "verify", str(tmp_path / "newsbeam.service"), str(tmp_path / "newsbeam.timer")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    service = (tmp_path / "newsbeam.service").read_text(encoding="utf-8")
    assert f"ExecStart={PROJECT}/.venv/bin/newsbeam -q run " in service
    assert f"ExecStart={PROJECT}/.venv/bin/newsbeam report ${{NEWSBEAM_OUTPUT}} --alerts" in service
    timer = (tmp_path / "newsbeam.timer").read_text(encoding="utf-8")
    on_calendar = next(line.split("=", 1)[1] for line in timer.splitlines() if line.startswith("OnCalendar="))
    calendar = subprocess.run(
        [analyze, "calendar", "--iterations=2", on_calendar], capture_output=True, text=True, timeout=60
    )
    assert calendar.returncode == 0, calendar.stderr
    assert calendar.stdout.count(":17:00 UTC") == 2 or calendar.stdout.count(":17:00") == 2


DAG_CHECK = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

bag = DagBag(dag_folder="deploy/airflow")
dag = bag.dags["newsbeam"]  # as parsed from the file (get_dag would ask the metadata database)
run = dag.get_task("newsbeam_run")
report = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "tasks": sorted(dag.task_ids),
    "downstream": sorted(run.downstream_task_ids),
    "schedule": f"{getattr(dag, 'schedule', '')} {getattr(dag.timetable, 'description', '')}",
    "beam_operator": isinstance(run, BeamRunPythonPipelineOperator),
    "py_file": run.py_file,
    "options": run.pipeline_options,
}
run.execute(context={})  # the real command: NEWSBEAM_PYTHON deploy/airflow/newsbeam_run.py --runner=...
health = dag.get_task("feed_health")
try:
    health.execute(context={})
    report["health"] = "passed"
except Exception as error:  # exit 6: a stale feed
    report["health"] = f"{type(error).__name__}: {error}"
print("RESULT " + json.dumps(report))
"""


def test_the_airflow_dag_parses_and_its_beam_task_runs_newsbeam(tmp_path: Path) -> None:
    output = tmp_path / "output"
    ran = airflow(
        DAG_CHECK,
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "NEWSBEAM_PYTHON": sys.executable,
            "NEWSBEAM_CONFIG": str(PROJECT / "configs" / "local.yaml"),
            "NEWSBEAM_OUTPUT": str(output),
        },
    )
    results = [line for line in ran.stdout.splitlines() if line.startswith("RESULT ")]
    assert ran.returncode == 0 and results, ran.stdout[-3000:] + ran.stderr[-3000:]
    report = json.loads(results[0].removeprefix("RESULT "))
    assert report["errors"] == {}
    assert report["tasks"] == ["feed_health", "newsbeam_run"] and report["downstream"] == ["feed_health"]
    assert report["beam_operator"] and report["py_file"].endswith("deploy/airflow/newsbeam_run.py")
    assert report["options"]["output"] == str(output)
    assert "17 * * * *" in report["schedule"]
    (manifest,) = (output / "_runs").glob("*.json")
    document = json.loads(manifest.read_text(encoding="utf-8"))
    assert document["status"] == "committed" and document["counts"]["articles"]["rows"] > 0
    assert "exit code 6" in report["health"] or "6" in report["health"], report["health"]
