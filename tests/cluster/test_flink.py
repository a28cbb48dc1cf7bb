"""The batch pipeline on a real Flink cluster: one JobManager, two TaskManagers, two Python worker pools.

The test starts the cluster itself (deploy/flink/cluster.py on free ports, in a temporary state folder)
and stops it at the end. It runs `newsbeam run --runner flink` and the in-process runner on the same
inputs (the shipped seeds with their feeds, plus a broken feed), and checks:
  - both TaskManagers, hence both worker pools' SDK worker processes, processed records: each pool's log
    names the workers it started, and Flink's REST API gives the records each TaskManager's Python
    stages read (a PROCESS environment hands each worker to its own TaskManager's pool);
  - the Flink output equals the in-process output, every column row by row, except run_id, ingested_at
    and ingest_date (feed_fetches also differ in started_at and elapsed_ms: they time the read);
  - Spark (PyPI pyspark, local mode) reads the Flink output: row count, partitions and values.

The streaming pipeline also runs on the cluster for a bounded time (`newsbeam stream --duration`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml

from tests.conftest import IN_CI, PROJECT, SEEDS, require

CLUSTER = PROJECT / "deploy" / "flink" / "cluster.py"
SPARK_READER = PROJECT / "deploy" / "spark" / "read_output.py"
SPARK_PYTHON = PROJECT / ".cluster" / "spark-venv" / "bin" / "python"
NEWSBEAM = Path(sys.executable).parent / "newsbeam"
RUN_TIMEOUT_S = 600
# The job needs ~25 s on this cluster before its first poll; the feeds change over three polls.
STREAM_SECONDS = 50
# Columns that differ between any two runs by design.
RUN_COLUMNS = {"run_id", "ingested_at", "ingest_date"}
TIMING_COLUMNS = {"started_at", "elapsed_ms", "failed_at"}
BROKEN_FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Broken</title><item><title>x'


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER), *args], capture_output=True, text=True, cwd=PROJECT, timeout=900
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs") / "seeds"
    shutil.copytree(SEEDS, folder)
    (folder / "feeds" / "broken.xml").write_bytes(BROKEN_FEED)
    return folder


@pytest.fixture(scope="module")
def flink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    require(not missing, f"the Flink cluster needs {' and '.join(missing)} on PATH")
    installed = _cluster("install")
    require(
        installed.returncode == 0, f"cannot install Flink, the job server or pyspark:\n{installed.stderr}"
    )
    state = tmp_path_factory.mktemp("flink")
    started = _cluster("up", "--state", str(state), "--free-ports")
    try:
        assert started.returncode == 0, f"the Flink cluster did not start:\n{started.stderr}"
        yield json.loads((state / "cluster.json").read_text())
    finally:
        stopped = _cluster("down", "--state", str(state))
        assert stopped.returncode == 0, stopped.stderr
        if IN_CI or started.returncode != 0:
            _print_logs(state)


def _print_logs(state: Path) -> None:
    for log in sorted((state / "log").glob("*.out")):
        tail = log.read_text(errors="replace")[-3000:]
        print(f"----- {log.name}\n{tail}")


def _run(runner: str, inputs: Path, output: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(NEWSBEAM), "run", "--runner", runner, "--input", str(inputs), "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"newsbeam run --runner {runner} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def direct_output(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("direct") / "out"
    _run("direct", inputs, output)
    return output


@pytest.fixture(scope="module")
def flink_output(flink: dict[str, Any], inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("flink") / "out"
    _run("flink", inputs, output, {"NEWSBEAM_FLINK_CLUSTER": str(Path(flink["state"]) / "cluster.json")})
    return output


def _table(output: Path, dataset: str) -> pa.Table:
    return ds.dataset(output / dataset, format="parquet", partitioning="hive").to_table()


def _rows(output: Path, dataset: str, skip: set[str], key: tuple[str, ...]) -> list[dict[str, Any]]:
    table = _table(output, dataset)
    names = [name for name in table.column_names if name not in skip]
    rows = table.select(names).to_pylist()
    return sorted(rows, key=lambda row: tuple(str(row[k]) for k in key))


def _rest(flink: dict[str, Any], path: str) -> Any:
    url = f"http://127.0.0.1:{flink['ports']['rest']}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _job_type(flink: dict[str, Any], job: dict[str, Any]) -> str:
    return str(_rest(flink, f"/jobs/{job['jid']}/plan")["plan"].get("type"))


def test_articles_on_flink_equal_the_in_process_runner_row_by_row(
    flink_output: Path, direct_output: Path
) -> None:
    key = ("article_id",)
    on_flink = _rows(flink_output, "articles", RUN_COLUMNS, key)
    in_process = _rows(direct_output, "articles", RUN_COLUMNS, key)
    assert len(in_process) >= 20, "the seeds give at least 20 articles"
    assert len(on_flink) == len(in_process)
    for flink_row, local_row in zip(on_flink, in_process, strict=True):
        assert flink_row == local_row
    languages = {row["language"] for row in on_flink}
    assert {"de", "en", "es", "fr", "ja", "ru"} <= languages


def test_dead_letters_and_fetch_rows_on_flink_equal_the_in_process_runner(
    flink_output: Path, direct_output: Path
) -> None:
    skip = RUN_COLUMNS | TIMING_COLUMNS
    fetch_key = ("source",)
    on_flink = _rows(flink_output, "feed_fetches", skip, fetch_key)
    in_process = _rows(direct_output, "feed_fetches", skip, fetch_key)
    assert on_flink == in_process
    assert any(row["source"].endswith("broken.xml") and row["outcome"] != "ok" for row in on_flink)
    letter_key = ("source", "stage", "error_type", "entry_ref")
    assert _rows(flink_output, "dead_letters", skip, letter_key) == _rows(
        direct_output, "dead_letters", skip, letter_key
    )


def test_both_taskmanagers_worker_pools_did_work(flink: dict[str, Any], flink_output: Path) -> None:
    state = Path(flink["state"])
    for index in range(2):
        log = (state / "log" / f"pool_{index}.out").read_text(errors="replace")
        assert "Starting worker" in log, f"worker pool {index} started no SDK worker process"
    jobs = [job for job in _rest(flink, "/jobs/overview")["jobs"] if _job_type(flink, job) == "BATCH"]
    assert [job["state"] for job in jobs] == ["FINISHED"], jobs
    job = _rest(flink, f"/jobs/{jobs[0]['jid']}")
    records_per_tm: dict[str, int] = {}
    read_stage_per_tm: dict[str, int] = {}
    for vertex in job["vertices"]:
        # Beam's executable stages (MapPartition) are where the Python SDK workers run the DoFns.
        if "MapPartition" not in vertex["name"]:
            continue
        per_tm = _rest(flink, f"/jobs/{job['jid']}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]
        for tm in per_tm:
            records = int(tm["metrics"]["read-records"])
            records_per_tm[tm["taskmanager-id"]] = records_per_tm.get(tm["taskmanager-id"], 0) + records
            if "NormalizeArticles" in vertex["name"]:
                read_stage_per_tm[tm["taskmanager-id"]] = (
                    read_stage_per_tm.get(tm["taskmanager-id"], 0) + records
                )
    assert len(records_per_tm) == 2, records_per_tm
    assert all(records > 0 for records in records_per_tm.values()), records_per_tm
    # The inputs are spread over both TaskManagers' workers for reading and normalizing too.
    assert len(read_stage_per_tm) == 2 and all(n > 0 for n in read_stage_per_tm.values()), read_stage_per_tm


def test_spark_reads_the_flink_output(flink: dict[str, Any], flink_output: Path) -> None:
    require(
        SPARK_PYTHON.exists(), f"pyspark is not installed at {SPARK_PYTHON} (deploy/flink/cluster.py install)"
    )
    done = subprocess.run(
        [str(SPARK_PYTHON), str(SPARK_READER), str(flink_output)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYSPARK_PYTHON": str(SPARK_PYTHON), "TZ": "UTC"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spark = json.loads(done.stdout.strip().splitlines()[-1])
    table = _table(flink_output, "articles")
    assert spark["articles"] == table.num_rows
    assert spark["feed_fetches"] == _table(flink_output, "feed_fetches").num_rows
    assert {"ingest_date", "language"} <= set(spark["columns"])
    expected = sorted(table.to_pylist(), key=lambda row: row["article_id"])
    assert [row["article_id"] for row in spark["rows"]] == [row["article_id"] for row in expected]
    for seen, want in zip(spark["rows"], expected, strict=True):
        assert seen["language"] == want["language"]
        assert seen["title"] == want["title"]
        assert seen["word_count"] == want["word_count"]
        assert seen["authors"] == (want["authors"] or [])
        assert seen["ingest_date"] == want["ingest_date"]
        published = want["published_at"]
        assert seen["published_at"] == (published.isoformat().replace("+00:00", "") if published else None)


def test_streaming_pipeline_on_flink_for_a_bounded_time(flink: dict[str, Any], tmp_path: Path) -> None:
    """`newsbeam stream` on the cluster (Flink streaming mode) against feeds that change between polls:
    every distinct entry version written exactly once, in the window of its fetch time (the checks of
    tests/test_stream_e2e.py, which runs the same job on Prism)."""
    from tests.feedserver import FeedServer
    from tests.test_stream_e2e import check_dataset, leftovers, serve_changing_feeds, write_config

    output = tmp_path / "out"
    with FeedServer() as server:
        config = write_config(tmp_path, serve_changing_feeds(server))
        settings = yaml.safe_load(config.read_text())
        settings["runner"] = "flink"
        settings["beam_options"] = {}  # the cluster's PROCESS environment, not LOOPBACK
        config.write_text(yaml.safe_dump(settings))
        done = subprocess.run(
            [str(NEWSBEAM), "stream", "--config", str(config), "--duration", str(STREAM_SECONDS)],
            capture_output=True, text=True, cwd=PROJECT, timeout=RUN_TIMEOUT_S,
            env={**os.environ, "NEWSBEAM_FLINK_CLUSTER": str(Path(flink["state"]) / "cluster.json")},
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-4000:]}"
        assert len(server.hits("/changing.xml")) >= 3, (
            "the stream polled the changing feed fewer than 3 times"
        )
    check_dataset(output)
    assert leftovers(output) == []
    streaming = [
        job for job in _rest(flink, "/jobs/overview")["jobs"] if _job_type(flink, job) == "STREAMING"
    ]
    assert [job["state"] for job in streaming] == ["FINISHED"]
