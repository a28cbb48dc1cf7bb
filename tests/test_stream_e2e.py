"""End to end: `newsbeam stream` on the real local runner (Prism) against a local HTTP server.

The feeds change between polls: new entries appear, old ones repeat, one entry is updated, one
feed answers 304 to conditional GETs, and one starts failing. The stream runs for a bounded time,
stops by itself (its stop time, then by SIGINT in the second test), and the dataset must hold every
distinct entry version exactly once, each in the window of its fetch time, with no temporary files
left. A restart against the same output must write no article again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.conftest import PROJECT, require
from tests.feedserver import FeedServer, Reply, conditional
from transforms.io.window import window_label, window_start

pytestmark = pytest.mark.e2e

WINDOW = 5
POLL = 2


def prism_binary() -> Path:
    path = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    require(path.is_file(), f"the Prism runner is not built at {path}: run `make prism`")
    return path


def rss(*items: tuple[str, str, str]) -> bytes:
    """An RSS 2.0 feed of (guid, title, text) items, each linking to its own page."""
    body = "".join(
        f"<item><guid>{guid}</guid><link>http://news.test/{guid}</link><title>{title}</title>"
        f"<description>{text}</description><pubDate>Sat, 01 Nov 2025 10:00:00 GMT</pubDate></item>"
        for guid, title, text in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Test feed</title>'
        f"<link>http://news.test/</link><language>en</language>{body}</channel></rss>"
    ).encode()


ONE = ("a1", "Harbour reopens after the storm", "The harbour reopened on Monday after repairs to the pier.")
ONE_UPDATED = (
    "a1",
    "Harbour reopens after the storm",
    "The harbour reopened on Monday; ferries run again today.",
)
TWO = (
    "a2",
    "Council approves the new library",
    "The council voted to fund a new library in the town centre.",
)
THREE = ("a3", "Rail strike called off", "Unions called off the strike after talks that lasted all night.")
B1 = ("b1", "Local team wins the cup", "The local football team won the county cup in extra time.")
C1 = ("c1", "Museum opens a new wing", "The museum opened a wing for modern art with forty paintings.")
FEED_HEADERS = {"Content-Type": "application/rss+xml"}


def serve_changing_feeds(server: FeedServer) -> dict[str, str]:
    """Feeds whose answers change from poll to poll (the last answer repeats)."""
    return {
        "changing": server.route(
            "/changing.xml",
            Reply(200, rss(ONE, TWO), FEED_HEADERS),
            Reply(200, rss(ONE, TWO, THREE), FEED_HEADERS),  # a3 is new, a1 and a2 repeat
            Reply(200, rss(ONE_UPDATED, TWO, THREE), FEED_HEADERS),  # a1 updated
        ),
        "conditional": server.route("/conditional.xml", conditional(rss(B1), '"b-1"')),
        "failing": server.route(
            "/failing.xml",
            Reply(200, rss(C1), FEED_HEADERS),
            Reply(500, b"down", {"Content-Type": "text/plain"}),
        ),
    }


def write_config(tmp_path: Path, feeds: dict[str, str]) -> Path:
    config = {
        "runner": "prism",
        "output": str(tmp_path / "out"),
        "feeds": [{"url": url} for url in feeds.values()],
        "stream": {"poll_interval": POLL, "window": WINDOW},
        "fetch": {"allow_private_hosts": True, "max_attempts": 1, "total_timeout": 10},
        "beam_options": {"environment_type": "LOOPBACK"},
    }
    path = tmp_path / "streaming.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_stream(config: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NEWSBEAM_PRISM": str(prism_binary())}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "stream", "--config", str(config), *extra],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 180) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the stream did not stop in {timeout}s\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
    assert process.returncode == 0, f"exit {process.returncode}\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
    return out, err


def articles(output: Path) -> list[dict[str, Any]]:
    if not (output / "articles").exists():
        return []
    query = f"""
        SELECT entry_id, text, version, run_id, ingested_at, filename
        FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true, filename = true)
    """
    with duckdb.connect() as connection:
        rows = connection.execute(query).fetchall()
    keys = ("entry_id", "text", "version", "run_id", "ingested_at", "filename")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def dataset_rows(output: Path, dataset: str, columns: str) -> list[tuple[Any, ...]]:
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT {columns} FROM read_parquet('{output}/{dataset}/**/*.parquet', hive_partitioning = true)"
        ).fetchall()


def leftovers(output: Path) -> list[str]:
    """Temporary files: anything staged, any *.tmp, any stop flag."""
    found = [
        p
        for p in output.rglob("*")
        if p.is_file() and ("_staging" in p.parts or p.suffix in (".tmp", ".stop"))
    ]
    return [str(p.relative_to(output)) for p in found]


def check_dataset(output: Path) -> list[dict[str, Any]]:
    rows = articles(output)
    # feedparser makes a relative guid absolute against the feed URL: keep its last segment.
    versions = Counter((row["entry_id"].rsplit("/", 1)[-1], row["text"]) for row in rows)
    expected = {
        ("a1", ONE[2]): 1,
        ("a1", ONE_UPDATED[2]): 1,
        ("a2", TWO[2]): 1,
        ("a3", THREE[2]): 1,
        ("b1", B1[2]): 1,
        ("c1", C1[2]): 1,
    }
    assert dict(versions) == expected, f"article versions written: {dict(versions)}"
    assert sorted(row["version"] for row in rows if row["entry_id"].endswith("/a1")) == [1, 2]
    for row in rows:  # each article sits in the window of its fetch time
        start = window_start(row["ingested_at"].timestamp(), WINDOW)
        assert f"part-{window_label(start)}-" in Path(row["filename"]).name, row
    return rows


def test_stream_polls_changing_feeds_then_a_restart_writes_nothing_twice(tmp_path: Path) -> None:
    output = tmp_path / "out"
    with FeedServer() as server:
        feeds = serve_changing_feeds(server)
        config = write_config(tmp_path, feeds)
        out, err = finish(start_stream(config, "--duration", "9"))

        rows = check_dataset(output)
        assert "articles:" in out and "rows in" in out, out
        assert "poll cycle" in err and "feeds polled" in err, err[-3000:]
        assert leftovers(output) == []
        # Conditional GET once the feed's entries are committed (before, a 304 could hide a lost one).
        later = server.hits("/conditional.xml")[1:]
        assert any(hit.headers.get("if-none-match") == '"b-1"' for hit in later), later
        outcomes = Counter(row[0] for row in dataset_rows(output, "feed_fetches", "outcome"))
        assert outcomes["not_modified"] >= 1 and outcomes["error"] >= 1, outcomes
        dead = dataset_rows(output, "dead_letters", "source, error_type")
        assert dead and all(source == feeds["failing"] and kind == "http_500" for source, kind in dead), dead
        first_run = {row["run_id"] for row in rows}
        assert len(first_run) == 1

        # A restart against the same output: every entry is known, nothing is written again.
        polls_before = len(server.hits("/changing.xml"))
        out2, _ = finish(start_stream(config, "--duration", "5"))
        assert len(server.hits("/changing.xml")) > polls_before  # it did poll
        after = check_dataset(output)
        assert sorted(map(repr, after)) == sorted(map(repr, rows))
        assert "articles:      0 rows in 0 files" in out2, out2
        assert "feed_fetches:  0 rows" not in out2, out2
        assert leftovers(output) == []


def test_sigint_stops_the_stream_cleanly_and_flushes_open_windows(tmp_path: Path) -> None:
    output = tmp_path / "out"
    with FeedServer() as server:
        feeds = serve_changing_feeds(server)
        process = start_stream(write_config(tmp_path, feeds))
        deadline = time.monotonic() + 120
        while len(server.hits("/changing.xml")) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(server.hits("/changing.xml")) >= 3, "the stream never polled three times"
        # Readable while the job runs: a closed window's files are there, complete.
        while not list((output / "articles").rglob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert articles(output), "no article file was published while the stream ran"
        process.send_signal(signal.SIGINT)
        out, err = finish(process)
    assert "stopping" in err
    check_dataset(output)
    assert leftovers(output) == []
    assert "DONE" in out.splitlines()[0], out


def test_a_stop_flag_left_by_a_killed_run_does_not_stop_its_restart(tmp_path: Path) -> None:
    """SIGTERM, then SIGKILL when the drain takes too long (as a service manager does), leaves the
    stop flag; the restart with the same --run-id must poll, not stop at its first tick."""
    output = tmp_path / "out"
    (output / "_runs").mkdir(parents=True)
    (output / "_runs" / "again.stop").write_text("2025-11-29T00:00:00+00:00")  # the killed run's flag
    with FeedServer() as server:
        config = write_config(tmp_path, serve_changing_feeds(server))
        finish(start_stream(config, "--run-id", "again", "--duration", "9"))
        assert len(server.hits("/changing.xml")) >= 2, "the restart stopped at its first tick"
    check_dataset(output)
    assert leftovers(output) == []


# --- the command's checks, without a runner -----------------------------------------------------


def test_stream_refuses_files_and_the_batch_only_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    seed = tmp_path / "story.txt"
    seed.write_text("A title\n\nA body.\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"runner": "prism", "inputs": [str(seed)], "output": str(tmp_path)}))
    assert main(["stream", "--config", str(config)]) == 2
    assert "the streaming job polls http(s) feeds" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"runner": "direct", "inputs": ["http://news.test/a.xml"]}))
    assert main(["stream", "--config", str(config)]) == 2
    assert "runs batch pipelines only" in capsys.readouterr().err


def test_stream_lifts_the_job_server_deadline_unless_set() -> None:
    from pipeline.config import Settings
    from pipeline.streaming import STREAM_JOB_SERVER_TIMEOUT, stream_beam_args

    flags = stream_beam_args(Settings(), ["--foo=1"])
    assert flags == [f"--job_server_timeout={STREAM_JOB_SERVER_TIMEOUT}", "--foo=1", "--streaming"]
    assert stream_beam_args(Settings(), ["--job_server_timeout=5"]) == [
        "--job_server_timeout=5",
        "--streaming",
    ]
    configured = Settings(beam_options={"job_server_timeout": 5})
    assert not any("job_server_timeout" in flag for flag in stream_beam_args(configured, []))
