"""The batch pipeline on a real Flink cluster: one JobManager, two TaskManagers, two Python worker pools.

The test starts the cluster itself (deploy/flink/cluster.py, free ports by default, in a temporary state
folder) and stops it at the end. It runs `newsbeam run --runner flink` and the in-process runner on the same
inputs (the shipped seeds with their feeds, plus a broken feed), and checks:
  - both TaskManagers, hence both worker pools' SDK worker processes, processed records: each pool's log
    names the workers it started, and Flink's REST API gives the records each TaskManager's Python
    stages read (a PROCESS environment hands each worker to its own TaskManager's pool);
  - the Flink output equals the in-process output, every column row by row, except run_id, ingested_at
    and ingest_date (feed_fetches also differ in started_at and elapsed_ms: they time the read);
  - Spark (PyPI pyspark, local mode) reads the Flink output: row count, partitions and values.

The streaming pipeline runs on the cluster through the same exactly-once scenario as on Prism
(tests/stream_scenario.py): changing feeds over four hosts, a contended commit lock, a kill -9 of the
launcher (its Flink job cancelled, as after a crash), a restart and a Ctrl-C to its process group; every
revision served is stored exactly once, with versions in serve order, and no feed is polled more often
than its interval.

Operating the cluster, each with its failure mode: a job ships no jars (the runner is on the cluster's
classpath), the job server logs, the SDK workers' log lines reach the pools' logs, a pool's workers run the
pool's own Python whatever PATH says and a worker that cannot start is an error, not a hang; a stale
cluster.json fails at once; a taken port is named. Those without a cluster run first and fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.conftest import IN_CI, PROJECT, SEEDS, require
from tests.stream_scenario import WINDOW, JobRun, run_exactly_once_scenario
from tests.test_stream_e2e import articles
from transforms.io.window import window_label, window_start

DEPLOY = PROJECT / "deploy" / "flink"
CLUSTER = DEPLOY / "cluster.py"
SPARK_READER = PROJECT / "deploy" / "spark" / "read_output.py"
SPARK_PYTHON = PROJECT / ".cluster" / "spark-venv" / "bin" / "python"
# `python -m pipeline` from the project root runs this tree's code (the venv's `newsbeam` may not).
NEWSBEAM = (sys.executable, "-m", "pipeline")
RUN_TIMEOUT_S = 600
# The first streaming job needs up to ~90 s on this cluster (2 shared cores) before its first poll.
STREAM_STARTUP_TIMEOUT_S = 150
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
    started = _cluster("up", "--state", str(state))
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
        [*NEWSBEAM, "run", "--runner", runner, "--input", str(inputs), "--output", str(output)],
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
        assert "started with" in log, f"worker pool {index} started no SDK worker process"
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
            # Flink names a fused stage by its transforms' prefixes: `{ReadSources, ProcessArticles, ...}`.
            if "NormalizeArticles" in vertex["name"] or "ProcessArticles" in vertex["name"]:
                read_stage_per_tm[tm["taskmanager-id"]] = (
                    read_stage_per_tm.get(tm["taskmanager-id"], 0) + records
                )
    assert len(records_per_tm) == 2, records_per_tm
    assert all(records > 0 for records in records_per_tm.values()), records_per_tm
    # The inputs are spread over both TaskManagers' workers for reading and normalizing too.
    assert len(read_stage_per_tm) == 2 and all(n > 0 for n in read_stage_per_tm.values()), read_stage_per_tm


def test_a_batch_job_runs_one_sdk_worker_per_taskmanager_for_all_its_stages(
    flink: dict[str, Any], flink_output: Path
) -> None:
    # The batch job is the first on this module's cluster. Beam's default stopped a TaskManager's SDK
    # worker at the end of each task, so each pool started one per Python stage, one after another
    # (15 per TaskManager for one seed file, 5-20 s each on 2 busy cores): see pipeline/runners.py.
    state = Path(flink["state"])
    for index in range(2):
        log = (state / "log" / f"pool_{index}.out").read_text(errors="replace")
        started = [line for line in log.splitlines() if "started with" in line]
        assert len(started) == 1, f"pool {index} started {len(started)} SDK workers for one batch job"


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


# --- operating the cluster, without one ------------------------------------------------------------


def _deploy_module(name: str) -> ModuleType:
    """A script of deploy/flink/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"newsbeam_deploy_flink_{name}", DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_without_beam() -> Path:
    """The interpreter the project's venv was made from: a Python that cannot import Beam."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    found = subprocess.run([str(base), "-c", "import apache_beam"], capture_output=True).returncode != 0
    require(base.exists() and found, f"{base} should exist and lack Apache Beam")
    return base


def _bound_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _FakeTaskManager:
    """The provision and control endpoints a TaskManager gives an SDK worker (one gRPC server for both):
    it provisions empty pipeline options and records which workers asked."""

    def __init__(self) -> None:
        import grpc
        from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

        asked: list[str | None] = []
        self.asked = asked

        class Provision(beam_provision_api_pb2_grpc.ProvisionServiceServicer):
            def GetProvisionInfo(self, request: Any, context: Any) -> Any:
                asked.append(dict(context.invocation_metadata()).get("worker_id"))
                return beam_provision_api_pb2.GetProvisionInfoResponse(
                    info=beam_provision_api_pb2.ProvisionInfo()
                )

        from concurrent import futures

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(Provision(), self.server)
        self.endpoint = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def start_request(self, worker_id: str) -> Any:
        from apache_beam.portability.api import beam_fn_api_pb2, endpoints_pb2

        endpoint = endpoints_pb2.ApiServiceDescriptor(url=self.endpoint)
        return beam_fn_api_pb2.StartWorkerRequest(
            worker_id=worker_id, control_endpoint=endpoint, logging_endpoint=endpoint,
            provision_endpoint=endpoint, artifact_endpoint=endpoint,
        )  # fmt: skip


def _start_worker(pool_address: str, request: Any, timeout: float = 60) -> Any:
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    with grpc.insecure_channel(pool_address) as channel:
        return beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
            request, timeout=timeout
        )


def test_a_pool_starts_its_workers_with_its_own_python_whatever_comes_first_on_path(tmp_path: Path) -> None:
    """A pool started with a Beam-less `python` first on PATH used to start workers that died at once
    (its log's only error) while the job waited for them forever."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python").symlink_to(_python_without_beam())
    port = _closed_port()
    log = tmp_path / "pool.log"
    with log.open("wb") as out:
        pool = subprocess.Popen(
            _deploy_module("cluster").pool_argv(port), stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT,
            env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"},
        )  # fmt: skip
    task_manager = _FakeTaskManager()
    try:
        deadline = time.monotonic() + 30
        while not _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        response = _start_worker(f"127.0.0.1:{port}", task_manager.start_request("w1"))
        assert response.error == "", response.error
        # The worker ran Beam's harness: it asked its TaskManager for the job's pipeline options.
        deadline = time.monotonic() + 30
        while not task_manager.asked and time.monotonic() < deadline:
            time.sleep(0.2)
        assert task_manager.asked == ["w1"], log.read_text(errors="replace")[-3000:]
    finally:
        pool.terminate()
        pool.wait(timeout=30)
        task_manager.server.stop(0)


def test_a_worker_that_cannot_start_fails_the_taskmanagers_command_at_once(tmp_path: Path) -> None:
    """The TaskManager waits for as long as its environment command runs: a worker that cannot start
    must make that command (sdk_worker_via_pool.py) exit with the reason, not wait."""
    worker_pool = _deploy_module("worker_pool")
    pool = worker_pool.WorkerPool(python=str(_python_without_beam()))
    server, port = worker_pool.serve(0, pool)
    task_manager = _FakeTaskManager()
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(DEPLOY / "sdk_worker_via_pool.py"), "--id=w1",
             f"--provision_endpoint={task_manager.endpoint}"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "NEWSBEAM_WORKER_POOL": f"127.0.0.1:{port}"},
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "cannot import Apache Beam" in done.stderr and "exited with status 3" in done.stderr, (
            done.stderr
        )
        assert time.monotonic() - started < 30
    finally:
        server.stop(0)
        task_manager.server.stop(0)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_stale_cluster_state_fails_at_once_naming_make_cluster_up(tmp_path: Path) -> None:
    """The cluster is down, its cluster.json left: this was a bare grpc.FutureTimeoutError after 67 s."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "cluster.json"
    port = _closed_port()
    stale.write_text(json.dumps({
        "job_endpoint": f"localhost:{port}", "worker_command": str(tmp_path / "sdk_worker"),
        "pids": {"job_server": dead.pid}, "ports": {"job": port},
    }))  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        [*NEWSBEAM, "run", "--runner", "flink", "--input", str(SEEDS), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=PROJECT, timeout=60,
        env={**os.environ, "NEWSBEAM_FLINK_CLUSTER": str(stale)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Flink cluster not running" in done.stderr and "make cluster-up" in done.stderr, done.stderr[
        -3000:
    ]
    assert f"nothing listens on the job endpoint localhost:{port}" in done.stderr
    assert "processes gone: job_server" in done.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_cluster_ports_are_free_ones_by_default_and_a_taken_standard_port_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = _deploy_module("cluster")
    ports = cluster.choose_ports(standard=False)
    assert set(ports) == set(cluster.STANDARD_PORTS)
    assert len(set(ports.values())) == len(ports)
    assert cluster.taken_ports(ports) == []
    with _bound_port() as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(cluster, "STANDARD_PORTS", {**cluster.STANDARD_PORTS, "rest": port})
        started = time.monotonic()
        with pytest.raises(SystemExit) as stopped:
            cluster.up(tmp_path / "state", standard_ports=True)
    assert f"ports already in use: rest={port}" in str(stopped.value)
    assert time.monotonic() - started < 5, "the port check comes before any install or start"
    assert not (tmp_path / "state").exists()


# --- operating the cluster, on one ------------------------------------------------------------------


def test_a_job_ships_no_jars_and_no_taskmanager_keeps_a_copy(
    flink: dict[str, Any], flink_output: Path
) -> None:
    """The runner's jars are on the cluster's classpath; Beam's default staged the job server's whole
    classpath (158 MB) with each job, and each TaskManager kept its own copy per job."""
    state = Path(flink["state"])
    lib = {path.name for path in (state / "lib").iterdir()}
    assert {"beam-runners-flink-1.19-2.62.0.jar", "flink-dist-1.19.3.jar"} <= lib
    assert not any(name.startswith(("flink-runtime-", "slf4j-")) for name in lib), "jars Flink has already"
    job_blobs = [path for path in (state / "tmp").glob("**/blobStorage/job_*/**/*") if path.is_file()]
    shipped = sum(path.stat().st_size for path in job_blobs)
    assert shipped < 1_000_000, f"{shipped} bytes of job blobs: {job_blobs[:5]}"


def test_the_job_server_logs_what_it_does(flink: dict[str, Any], flink_output: Path) -> None:
    """Without an SLF4J binding the job server's log held three SLF4J warnings and nothing else."""
    log = (Path(flink["state"]) / "log" / "job_server.out").read_text(errors="replace")
    assert "NOP" not in log and "StaticLoggerBinder" not in log
    assert "INFO org.apache.beam.runners.jobsubmission.JobServerDriver - JobService started on" in log
    assert "INFO org.apache.beam.runners.flink.FlinkJobInvoker - Invoking job" in log


# --- the streaming job end to end on the cluster ------------------------------------------------------


def _running_streaming_jobs(flink: dict[str, Any]) -> list[str]:
    jobs = _rest(flink, "/jobs/overview")["jobs"]
    return [job["jid"] for job in jobs if job["state"] == "RUNNING" and _job_type(flink, job) == "STREAMING"]


def _cancel(flink: dict[str, Any], jid: str) -> None:
    url = f"http://127.0.0.1:{flink['ports']['rest']}/jobs/{jid}?mode=cancel"
    urllib.request.urlopen(urllib.request.Request(url, method="PATCH"), timeout=10).close()


def test_every_served_revision_is_stored_exactly_once_on_flink_across_stops_and_kills(
    flink: dict[str, Any], tmp_path: Path
) -> None:
    """The exactly-once scenario of tests/stream_scenario.py, as on Prism, on the cluster's PROCESS
    environment: a kill -9 of the launcher while revisions are in flight (its Flink job outlives it and
    is cancelled through REST, as an operator would after a crash: its open windows are lost and polled
    again), then a restart stopped by Ctrl-C to its process group. Every served revision is stored once,
    versions rise in serve order, no feed is polled more often than its poll interval within a run (the
    server's clock: Flink fired every missed tick at once after start-up, 9 requests to one feed in
    143 ms), nothing partial."""

    def cancel_the_orphaned_job(run: JobRun) -> None:
        orphans = _running_streaming_jobs(flink)
        assert len(orphans) == 1, f"the killed launcher's job should run on in the cluster: {orphans}"
        _cancel(flink, orphans[0])
        deadline = time.monotonic() + 60
        while _running_streaming_jobs(flink) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _running_streaming_jobs(flink) == [], "the cancelled job still runs"

    report = run_exactly_once_scenario(
        tmp_path,
        "flink",
        # The cluster's PROCESS environment (the pools' workers), not LOOPBACK; short bundles (README).
        {"max_bundle_time_mills": 100},
        env={"NEWSBEAM_FLINK_CLUSTER": str(Path(flink["state"]) / "cluster.json")},
        startup_timeout=STREAM_STARTUP_TIMEOUT_S,
        after_kill=cancel_the_orphaned_job,
        # Two runs, not Prism's four: each job costs a start-up of its own here (about 30 s warm). A kill -9
        # (revisions in flight), then a restart that stores what was lost, stopped by Ctrl-C to its process
        # group, which drains. SIGTERM takes the same path as Ctrl-C (one handler, the stop flag), and a
        # restart after a clean stop is a restart with nothing to recover: the Prism scenario runs both.
        stops=(("kill-9", signal.SIGKILL),),
        final_stop=signal.SIGINT,
    )
    assert report.revisions >= 60 and report.runs == 2, report
    assert report.restarted > 0, "no revision was left for a restart to store"
    print(report.summary())  # figures only: timing is for benchmarks/, not for assertions
    assert _running_streaming_jobs(flink) == []
    for row in articles(tmp_path / "out"):  # each article sits in the window of its fetch
        start = window_start(row["ingested_at"].timestamp(), WINDOW)
        assert f"part-{window_label(start)}-" in Path(row["filename"]).name, row
    # The SDK workers' log lines (the per-cycle line of the poll loop) reach the worker pools' logs.
    pool_logs = "".join(
        (Path(flink["state"]) / "log" / f"pool_{index}.out").read_text(errors="replace") for index in range(2)
    )
    assert "newsbeam.stream" in pool_logs and "poll cycle" in pool_logs, pool_logs[-3000:]
