"""How long the streaming job takes on the local Flink cluster before its first poll, and what a job ships.

    python -m benchmarks.bench_flink_startup                 # a cluster of its own (free ports), 2 runs
    python -m benchmarks.bench_flink_startup --runs 3 --state .cluster/flink   # an existing cluster

Each run is `newsbeam stream --runner flink` against a local feed server for `--seconds`, stopped by its
stop time. Per run it prints the seconds from launch to the first request the job sent to a feed, to the
JobManager receiving the job (its log), and the bytes of job blobs the TaskManagers hold afterwards
(Beam's default staging shipped the job server's whole classpath with every job, 158 MB per
TaskManager). The first run on a fresh cluster is cold (the job server's JVM translates its first job);
later ones are warm. Not a test: figures drift on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.feedserver import FeedServer
from tests.test_stream_e2e import serve_changing_feeds, write_config

PROJECT = Path(__file__).resolve().parent.parent
CLUSTER = PROJECT / "deploy" / "flink" / "cluster.py"
JOBGRAPH = re.compile(r"^(\S+ \S+) INFO .*Received JobGraph submission")


def _job_blob_bytes(state: Path) -> int:
    files = [path for path in (state / "tmp").glob("tm_*/blobStorage/job_*/**/*") if path.is_file()]
    return sum(path.stat().st_size for path in files)


def _jobgraph_times(state: Path) -> list[float]:
    times = []
    for log in (state / "log").glob("flink-*-standalonesession-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            found = JOBGRAPH.match(line)
            if found:
                times.append(datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return sorted(times)


def one_run(state: Path, seconds: int, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    with FeedServer() as server:
        config = write_config(work, serve_changing_feeds(server))
        settings = yaml.safe_load(config.read_text())
        settings["runner"] = "flink"
        settings["beam_options"] = {}
        config.write_text(yaml.safe_dump(settings))
        jobs_before = len(_jobgraph_times(state))
        launched_wall, launched = time.time(), time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "stream", "--config", str(config), "--duration", str(seconds)],
            capture_output=True, text=True, cwd=PROJECT,
            env={**os.environ, "NEWSBEAM_FLINK_CLUSTER": str(state / "cluster.json")},
        )  # fmt: skip
        hits = sorted(hit.at for path in ("/changing.xml",) for hit in server.hits(path))
    jobgraphs = _jobgraph_times(state)[jobs_before:]
    return {
        "exit": done.returncode,
        "first_poll_s": round(hits[0] - launched, 1) if hits else None,
        "job_received_s": round(jobgraphs[0] - launched_wall, 1) if jobgraphs else None,
        "polls_of_one_feed": len(hits),
        "job_blob_bytes_on_taskmanagers": _job_blob_bytes(state),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=60, help="each run's --duration")
    parser.add_argument("--state", type=Path, default=None, help="a running cluster's state folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-flink-") as scratch:
        state = args.state.resolve() if args.state else Path(scratch) / "cluster"
        if args.state is None:
            subprocess.run([sys.executable, str(CLUSTER), "up", "--state", str(state)], check=True)
        try:
            results = [one_run(state, args.seconds, Path(scratch) / f"run{i}") for i in range(args.runs)]
        finally:
            if args.state is None:
                subprocess.run([sys.executable, str(CLUSTER), "down", "--state", str(state)], check=False)
    for index, result in enumerate(results):
        print(f"run {index + 1} ({'cold' if index == 0 else 'warm'}): {json.dumps(result)}")
    return 0 if all(result["exit"] == 0 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
