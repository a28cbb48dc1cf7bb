"""Exactly-once on Prism: the changing-feeds scenario of tests/stream_scenario.py, across stops and kills.

Every distinct (article_id, content_hash) served at a successful poll is stored exactly once, with
versions rising in the order the revisions were first served, across a SIGTERM, a Ctrl-C to the
process group, a kill -9 and restarts; nothing partial is ever visible or left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT, require
from tests.feedserver import FeedServer
from tests.stream_scenario import (
    LATENCY_BOUND,
    ScenarioFailure,
    process_alive,
    run_exactly_once_scenario,
    stored_articles,
    wait_for,
)
from tests.stream_scenario import leftovers as scenario_leftovers
from tests.test_stream_e2e import check_dataset, leftovers, serve_changing_feeds, write_config
from transforms.poll import wait_before_poll

pytestmark = pytest.mark.e2e
T0 = 1_764_000_000.0


def test_a_backlog_of_ticks_polls_a_feed_once_per_interval_of_real_time() -> None:
    """A poll stage running behind reached four ticks of one feed at once and fetched it four times
    in 43 ms; the scenario below checks the same from the server's side."""
    assert wait_before_poll(None, 1.0, now=T0) == 0.0  # not polled yet by this job: at once
    assert wait_before_poll(T0, 1.0, now=T0 + 1.2) == 0.0
    assert wait_before_poll(T0, 1.0, now=T0 + 0.02) is None  # a backlogged tick: it polls nothing
    assert wait_before_poll(T0, 1.0, now=T0 + 0.9) == pytest.approx(0.1)  # a little early: it waits


def test_every_served_revision_is_stored_exactly_once_across_stops_and_kills(tmp_path: Path) -> None:
    prism = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    require(prism.is_file(), f"the Prism runner is not built at {prism}: run `make prism`")
    # The promise is a revision visible within a window plus a poll interval (plus the contended
    # lock's hold: LATENCY_BOUND) of being served, or of the first poll after a restart. Before a tick's
    # feeds were fetched concurrently: max 6.0 s, median 3.8 s (load 11). After: max 1.8-2.0 s in three
    # runs at load 12-16, but 4.3 s (median 1.0 s) in one at load 23, so on a shared 2-core machine the
    # bound itself is asserted by benchmarks/bench_stream_exactly_once.py, and here a sanity bound of
    # twice it: a poll stage that falls behind its ticks again breaks it.
    report = run_exactly_once_scenario(
        tmp_path,
        "prism",
        {"environment_type": "LOOPBACK"},
        env={"NEWSBEAM_PRISM": str(prism)},
        latency_bound=2 * LATENCY_BOUND,
    )
    assert report.revisions >= 60 and report.runs == 4, report
    assert report.restarted > 0, "no revision was left for a restart to store: the restart case went untimed"
    print(report.summary())


def test_a_second_ctrl_c_stops_at_once_and_the_next_start_cleans_up(tmp_path: Path) -> None:
    """Ctrl-C twice: out at once, with the runner; nothing half-committed; a restart finishes the job."""
    prism = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    require(prism.is_file(), f"the Prism runner is not built at {prism}: run `make prism`")
    output = tmp_path / "out"
    with FeedServer() as server:
        config = write_config(tmp_path, serve_changing_feeds(server))
        env = {**os.environ, "NEWSBEAM_PRISM": str(prism)}
        command = [sys.executable, "-m", "pipeline", "stream", "--config", str(config), "--run-id"]
        with (tmp_path / "first.err").open("wb") as err:
            first = subprocess.Popen(
                [*command, "first"], cwd=PROJECT, env=env, stderr=err, start_new_session=True
            )
        assert wait_for(lambda: bool(stored_articles(output)) or first.poll() is not None, 120)
        assert first.poll() is None, (tmp_path / "first.err").read_text()
        os.killpg(first.pid, signal.SIGINT)
        assert wait_for(lambda: b"stopping" in (tmp_path / "first.err").read_bytes(), 30, poll=0.02)
        os.killpg(first.pid, signal.SIGINT)  # the second Ctrl-C, while the first one drains
        code = first.wait(timeout=30)
        log = (tmp_path / "first.err").read_text(errors="replace")
        assert code == 1 and "cancelling" in log, log[-3000:]
        runner = int(log.split("runner pid ", 1)[1].split(")", 1)[0])
        assert wait_for(lambda: not process_alive(runner), 15), f"Prism (pid {runner}) outlived the cancel"
        stored_articles(output)  # every visible file reads whole

        second = subprocess.run(
            [*command, "second", "--duration", "6"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 0, second.stderr[-3000:]
    rows = check_dataset(output)  # every revision once, in its fetch window
    assert {row["run_id"] for row in rows} <= {"first", "second"}
    assert leftovers(output) == [] and scenario_leftovers(output) == []


def test_a_failing_scenario_leaves_no_job_running(tmp_path: Path) -> None:
    """A breach raised while a run streams must not leave it (and its Prism) running for ever."""
    prism = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    require(prism.is_file(), f"the Prism runner is not built at {prism}: run `make prism`")
    with pytest.raises(ScenarioFailure, match="made no progress"):
        run_exactly_once_scenario(
            tmp_path,
            "prism",
            {"environment_type": "LOOPBACK"},
            env={"NEWSBEAM_PRISM": str(prism)},
            startup_timeout=-15,  # gives up after 15 s: Prism has started by then (at load 23, 5 s was short)
            advances_per_run=10**6,
        )
    log = (tmp_path / "sigterm.err").read_text(errors="replace")
    runner = int(log.split("runner pid ", 1)[1].split(")", 1)[0])
    launchers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _runs_in(p, tmp_path)]
    assert launchers == [], "the failed scenario's launcher still runs"
    assert wait_for(lambda: not process_alive(runner), 15), f"Prism (pid {runner}) outlived the scenario"


def _runs_in(proc: Path, work: Path) -> bool:
    try:
        return str(work) in (proc / "cmdline").read_bytes().decode(errors="replace") and process_alive(
            int(proc.name)
        )
    except OSError:
        return False
