"""newsbeam on the local Flink cluster against the in-process runner: the same corpus copies, measured.

    python -m benchmarks.bench_flink                        # a cluster of its own (free ports), 4 copies
    python -m benchmarks.bench_flink --state /tmp/c1 --copies 4 --record --note "..."   # a running cluster

Steps, each a subprocess measured by benchmarks/measure.py (wall, CPU, peak PSS of its process tree), all
with configs/local.yaml (full text off) on the same copies of the corpus (benchmarks/corpus.py):
  - Flink, one seed file, twice: the fixed cost of a job (the first is cold on a fresh cluster);
  - Flink (parallelism 2, one slot per TaskManager) on the copies: `run_batch` with `runner: flink`;
  - the in-process runner (2 workers), one seed file, then on the copies (benchmarks/e2e.py).
While the Flink job runs, every `--sample` seconds, this process reads from Flink's REST API each running
vertex's subtasks (records in and out, busyTimeMsPerSecond, the TaskManager) and from /proc the CPU time
and PSS of every process of the cluster (its JVMs, and per TaskManager its worker pool with the SDK worker
it started): the launcher of a Flink job does little, the work is in the cluster's processes, which are no
children of the step. At the end it prints, per runner, articles/s with and without start-up (the wall of
the one-file run subtracted; for Flink also from the first record read to the end of the job), CPU ms per
article, how the heaviest stage's records and CPU were shared by the two TaskManagers' SDK workers, that
the books balance in both outputs and that both committed the same (article_id, version, content_hash)
rows. Writes the JSON to benchmarks/results/; with `--record` also to benchmarks/recorded/flink-*.json and
rewrites the "On a cluster" section of RESULTS.md from every recorded one. Not a test: figures drift on a
shared machine (the load average is kept per step).

    python -m benchmarks.bench_flink --step OUTPUT COPY_FOLDER...   # the Flink step alone, as measured
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from benchmarks import corpus
from benchmarks.e2e import CONFIG, run_figures
from benchmarks.measure import _children, measured_commit, process_pss, report, run_step
from benchmarks.run import machine

PROJECT = corpus.REPO
CLUSTER = PROJECT / "deploy" / "flink" / "cluster.py"
RESULTS = PROJECT / "benchmarks" / "results"
RECORDED = PROJECT / "benchmarks" / "recorded"
RESULTS_MD = PROJECT / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- begin: written by benchmarks/bench_flink.py from benchmarks/recorded/flink-*.json -->"
END = "<!-- end of the part written by benchmarks/bench_flink.py -->"
MB = 1024 * 1024
WORKERS = 2  # the in-process runner's workers = the cluster's parallelism (one slot per TaskManager)
# Subtask metrics read per sample: the task's records and Flink's own busy/idle/back-pressure clock.
SUBTASK_METRICS = ("numRecordsIn", "numRecordsOut", "busyTimeMsPerSecond", "idleTimeMsPerSecond")
TICKS = os.sysconf("SC_CLK_TCK")
OPTIONS_ENV = "NEWSBEAM_BENCH_FLINK_OPTIONS"


# --- the Flink step (a subprocess of its own, measured like benchmarks/e2e.py) ---------------------


def flink_step(output: str, folders: list[str]) -> None:
    """`run_batch` of configs/local.yaml on the Flink cluster NEWSBEAM_FLINK_CLUSTER names."""
    import shutil

    from pipeline import run_batch
    from pipeline.config import load_settings

    commit = measured_commit()
    shutil.rmtree(output, ignore_errors=True)
    overrides: dict[str, Any] = {"inputs": folders, "output": output, "runner": "flink"}
    # `--flink-option KEY=VALUE` of the parent: Beam options after the runner's defaults (they win).
    overrides["beam_options"] = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
    settings = load_settings(CONFIG, overrides)
    started = time.perf_counter()
    result = run_batch(settings)
    seconds = time.perf_counter() - started
    print(result.report, file=sys.stderr)
    report({**run_figures(result.manifest, output), "seconds": seconds, "runner": "flink"}, commit)


# --- the cluster's processes, from /proc ---------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """CPU of a process and of its children it has waited for (utime, stime, cutime, cstime); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICKS


def descendants(root: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], [root]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += tree.get(current, [])
    return found


def cluster_usage(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per component of the cluster (jobmanager, taskmanager_N, pool_N, job_server): its process tree's
    CPU seconds so far and PSS in MB now. A child that ended moves from its own entry into its parent's
    cutime, so the sum over live processes only grows."""
    tree = _children()
    usage = {}
    for name, root in pids.items():
        members = descendants(root, tree)
        usage[name] = {
            "cpu_s": sum(process_cpu_seconds(pid) for pid in members),
            "pss_mb": sum(process_pss(pid) for pid in members) / MB,
        }
    return usage


def sdk_workers_started(state: Path, pools: list[str]) -> dict[str, int]:
    """SDK workers each pool has started so far (its log says `started with` once per worker)."""
    counts = {}
    for pool in pools:
        log = state / "log" / f"{pool}.out"
        counts[pool] = log.read_text(errors="replace").count("started with") if log.exists() else 0
    return counts


# --- Flink's REST API ----------------------------------------------------------------------------


class Rest:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def batch_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.get("/jobs/overview")["jobs"]
        return jobs


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN: a metric Flink does not measure for the task


def subtask_metrics(rest: Rest, job: str, vertex: str, subtask: int) -> dict[str, float | None]:
    listed = rest.get(
        f"/jobs/{job}/vertices/{vertex}/subtasks/{subtask}/metrics?get={','.join(SUBTASK_METRICS)}"
    )
    return {item["id"]: _number(item.get("value")) for item in listed}


class JobWatcher(threading.Thread):
    """Samples the cluster while a job runs: the new job's vertices and subtasks, and /proc usage."""

    def __init__(self, rest: Rest, pids: dict[str, int], interval: float, known_jobs: set[str]) -> None:
        super().__init__(daemon=True)
        self.rest, self.pids, self.interval, self.known = rest, pids, interval, known_jobs
        self.job: str | None = None
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.started = time.time()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def run(self) -> None:
        while not self._stopping.is_set():
            clock = time.time()
            try:
                self.samples.append(self.sample(clock))
            except Exception as error:  # a sample the REST API did not answer: kept, said, not fatal
                self.errors.append(f"{clock - self.started:.1f}s: {error}")
            self._stopping.wait(max(0.0, self.interval - (time.time() - clock)))

    def sample(self, clock: float) -> dict[str, Any]:
        point: dict[str, Any] = {"t": round(clock - self.started, 2), "usage": cluster_usage(self.pids)}
        if self.job is None:
            new = [job for job in self.rest.batch_jobs() if job["jid"] not in self.known]
            if new:
                self.job = new[0]["jid"]
        if self.job is not None:
            detail = self.rest.get(f"/jobs/{self.job}")
            point["job_state"] = detail["state"]
            vertices = {}
            for vertex in detail["vertices"]:
                if vertex["status"] != "RUNNING":
                    continue
                subtasks = self.rest.get(f"/jobs/{self.job}/vertices/{vertex['id']}")["subtasks"]
                vertices[vertex["id"]] = [
                    {
                        "subtask": sub["subtask"],
                        "status": sub["status"],
                        "taskmanager": sub.get("taskmanager-id"),
                        "read_records": sub["metrics"].get("read-records"),
                        **subtask_metrics(self.rest, self.job, vertex["id"], sub["subtask"]),
                    }
                    for sub in subtasks
                ]
            point["vertices"] = vertices
        return point


def final_job(rest: Rest, job: str) -> dict[str, Any]:
    """The finished job: its times and, per vertex, each subtask's records, times and TaskManager."""
    detail = rest.get(f"/jobs/{job}")
    vertices = []
    for vertex in detail["vertices"]:
        subtasks = rest.get(f"/jobs/{job}/vertices/{vertex['id']}")["subtasks"]
        vertices.append(
            {
                "id": vertex["id"],
                "name": vertex["name"],
                "parallelism": vertex["parallelism"],
                "duration_ms": vertex["duration"],
                "subtasks": [
                    {
                        "subtask": sub["subtask"],
                        "taskmanager": sub.get("taskmanager-id"),
                        "start_time": sub.get("start-time"),
                        "end_time": sub.get("end-time"),
                        "duration_ms": sub.get("duration"),
                        "read_records": sub["metrics"].get("read-records"),
                        "write_records": sub["metrics"].get("write-records"),
                    }
                    for sub in subtasks
                ],
            }
        )
    return {
        "jid": job,
        "name": detail["name"],
        "state": detail["state"],
        "start_time": detail["start-time"],
        "end_time": detail["end-time"],
        "vertices": vertices,
    }


# --- figures from the samples (pure) -------------------------------------------------------------


def heaviest_vertex(job: dict[str, Any]) -> dict[str, Any]:
    """The stage where the articles are read, processed and staged (Flink names a Beam stage after its
    transforms: `MapPartition at [34]{ReadSources, ProcessArticles, ...}`); the longest if several."""
    named = [v for v in job["vertices"] if "ProcessArticles" in v["name"]]
    return max(named or job["vertices"], key=lambda v: sum(s["duration_ms"] or 0 for s in v["subtasks"]))


def _usage_at(samples: list[dict[str, Any]], at: float, component: str) -> float:
    """A component's CPU seconds at the sample nearest to `at` (seconds since the watcher started)."""
    nearest = min(samples, key=lambda s: abs(s["t"] - at))
    return float(nearest["usage"].get(component, {}).get("cpu_s", 0.0))


# A worker using at least this share of a core between two samples is busy: on 2 cores shared by ~25
# runnable processes a fair share is under a tenth of a core, so the bar is low.
BUSY_CORE_SHARE = 0.05


def worker_shares(
    job: dict[str, Any], samples: list[dict[str, Any]], watcher_started: float, pools: list[str]
) -> dict[str, Any]:
    """How the heaviest stage's work was shared by the two TaskManagers.

    From Flink's REST API, per subtask: its TaskManager, records read and written, its time and Flink's
    busyTimeMsPerSecond (mean over the samples it ran in). From /proc, per worker pool (one per
    TaskManager; its tree holds the SDK worker it started): the CPU it used while the stage ran, per
    second of the stage, and the share of sample intervals in which every pool was busy at once.
    """
    vertex = heaviest_vertex(job)
    subtasks = []
    for sub in vertex["subtasks"]:
        busy = [
            metrics["busyTimeMsPerSecond"]
            for sample in samples
            for metrics in sample.get("vertices", {}).get(vertex["id"], [])
            if metrics["subtask"] == sub["subtask"] and metrics.get("busyTimeMsPerSecond") is not None
        ]
        subtasks.append(
            {
                "subtask": sub["subtask"],
                "taskmanager": sub["taskmanager"],
                "read_records": sub["read_records"],
                "write_records": sub["write_records"],
                "seconds": (sub["duration_ms"] or 0) / 1000,
                "busy_ms_per_s_mean": sum(busy) / len(busy) if busy else None,
                "busy_samples": len(busy),
            }
        )
    start = min((s["start_time"] or 0) for s in vertex["subtasks"]) / 1000 - watcher_started
    end = max((s["end_time"] or 0) for s in vertex["subtasks"]) / 1000 - watcher_started
    window = [s for s in samples if start <= s["t"] <= end]
    per_pool = {}
    for pool in pools:
        cpu = _usage_at(samples, end, pool) - _usage_at(samples, start, pool) if samples else 0.0
        per_pool[pool] = {"cpu_s": cpu, "cores": cpu / (end - start) if end > start else 0.0}
    intervals = list(itertools.pairwise(window))
    both = sum(
        all(
            (b["usage"][pool]["cpu_s"] - a["usage"][pool]["cpu_s"]) / max(b["t"] - a["t"], 1e-9)
            >= BUSY_CORE_SHARE
            for pool in pools
        )
        for a, b in intervals
    )
    records: list[int] = [int(s["read_records"] or 0) for s in subtasks]
    # Both subtasks running at once (exact, from their start and end times), as a share of the stage.
    overlap = min((s["end_time"] or 0) for s in vertex["subtasks"]) - max(
        (s["start_time"] or 0) for s in vertex["subtasks"]
    )
    return {
        "vertex": vertex["name"],
        "seconds": end - start,
        "subtasks": subtasks,
        "pools": per_pool,
        "all_pools_busy_share": both / len(intervals) if intervals else None,
        "all_subtasks_running_share": max(overlap, 0) / 1000 / (end - start) if end > start else None,
        "sample_intervals": len(intervals),
        "every_subtask_read_records": len(records) == WORKERS and all(r > 0 for r in records),
        "smaller_over_larger_records": min(records) / largest
        if (largest := max(records, default=0))
        else 0.0,
    }


def first_records_at(job: dict[str, Any], samples: list[dict[str, Any]]) -> float | None:
    """Seconds since the watcher started of the first sample in which the heaviest stage had read records."""
    vertex = heaviest_vertex(job)["id"]
    for sample in samples:
        subtasks = sample.get("vertices", {}).get(vertex, [])
        if any((s.get("read_records") or 0) > 0 or (s.get("numRecordsIn") or 0) > 0 for s in subtasks):
            return float(sample["t"])
    return None


def committed_rows(output: Path) -> Counter[tuple[str, int, str]]:
    table = ds.dataset(output / "articles", format="parquet", partitioning="hive").to_table(
        columns=["article_id", "version", "content_hash"]
    )
    return Counter(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True))


def same_committed_rows(first: Path, second: Path) -> dict[str, Any]:
    """Whether two outputs committed the same (article_id, version, content_hash) rows, as multisets."""
    a, b = committed_rows(first), committed_rows(second)
    return {
        "rows": [sum(a.values()), sum(b.values())],
        "equal": a == b,
        "only_in_first": sum((a - b).values()),
        "only_in_second": sum((b - a).values()),
        "examples": [list(row) for row in list((a - b) + (b - a))[:5]],
    }


def job_figures(step: dict[str, Any], pools: list[str]) -> dict[str, Any]:
    """A Flink step's start-up timeline, workers' shares and the cluster's peak memory, from its samples."""
    job, samples, launched = step["job"], step["samples"], step["launched_at"]
    offset = step["watcher_started_at"]
    first = first_records_at(job, samples)
    deployed = min((s["start_time"] or 0) for s in heaviest_vertex(job)["subtasks"]) / 1000
    peaks = [sum(u["pss_mb"] for u in s["usage"].values()) for s in samples]
    return {
        "startup": {
            "job_received_s": job["start_time"] / 1000 - launched,
            "heaviest_stage_deployed_s": deployed - launched,
            "first_records_seen_s": first + offset - launched if first is not None else None,
            "job_finished_s": job["end_time"] / 1000 - launched,
            "committed_s": step["wall_seconds"],
        },
        "shares": worker_shares(job, samples, offset, pools),
        "peak_cluster_pss_mb": max(peaks) if peaks else None,
    }


def rates(step: dict[str, Any], startup: dict[str, Any] | None) -> dict[str, float | None]:
    articles = float(step["articles"])
    run_only = step["wall_seconds"] - startup["wall_seconds"] if startup else None
    return {
        "articles_per_second": articles / step["wall_seconds"],
        "articles_per_second_without_startup": articles / run_only if run_only and run_only > 0 else None,
    }


# --- the run ------------------------------------------------------------------------------------


def _cluster(*args: str) -> None:
    subprocess.run([sys.executable, str(CLUSTER), *args], check=True, cwd=PROJECT)


def measure(
    state: Path, copies: int, interval: float, work: Path, flink_options: dict[str, Any]
) -> dict[str, Any]:
    info = json.loads((state / "cluster.json").read_text())
    rest = Rest(info["ports"]["rest"])
    pids: dict[str, int] = info["pids"]
    pools = sorted(name for name in pids if name.startswith("pool_"))
    built = corpus.build(copies)
    inputs = built.inputs(copies)
    one_file = str(sorted((Path(inputs[0]) / "seeds").iterdir())[0])
    env = {"NEWSBEAM_FLINK_CLUSTER": str(state / "cluster.json"), OPTIONS_ENV: json.dumps(flink_options)}
    logs = work / "logs"
    results: dict[str, Any] = {
        "copies": copies,
        "inputs": inputs,
        "cluster": {"state": str(state), "pids": pids},
        "flink_options": flink_options,
    }

    def step(name: str, args: list[str], flink: bool) -> dict[str, Any]:
        print(f"running {name} ...", flush=True)
        known = {job["jid"] for job in rest.batch_jobs()}
        before, workers_before = cluster_usage(pids), sdk_workers_started(state, pools)
        watcher = JobWatcher(rest, pids, interval, known) if flink else None
        if watcher:
            watcher.start()
        launched = time.time()
        try:
            result = run_step(args, logs / f"{name}.log", cwd=PROJECT, env=env if flink else None)
        finally:
            if watcher:
                watcher.stop()
        after = cluster_usage(pids)
        result["launched_at"] = launched
        result["cluster_cpu_s"] = {k: after[k]["cpu_s"] - before[k]["cpu_s"] for k in pids}
        if flink:  # SDK worker processes each TaskManager's pool started for the job
            started = sdk_workers_started(state, pools)
            result["sdk_workers_started"] = {k: started[k] - workers_before[k] for k in pools}
        if watcher:
            result["samples"] = watcher.samples
            result["sample_errors"] = watcher.errors
            result["watcher_started_at"] = watcher.started
            try:
                result["job"] = final_job(rest, watcher.job) if watcher.job else None
                result.update(job_figures(result, pools))
            except Exception as error:  # the raw samples are kept: `--again` can summarize them later
                result["job_error"] = repr(error)
        print(f"  {name}: {result.get('articles')} articles in {result['wall_seconds']:.1f}s "
              f"(load {result['load_average']['mean']:.1f})", flush=True)  # fmt: skip
        return result

    # An idle cluster's own CPU (heartbeats, metrics), to tell the job's from the cluster's.
    idle_before = cluster_usage(pids)
    time.sleep(10)
    idle_after = cluster_usage(pids)
    results["cluster"]["idle_cpu_per_s"] = {
        k: (idle_after[k]["cpu_s"] - idle_before[k]["cpu_s"]) / 10 for k in pids
    }
    flink_out, direct_out = work / "out-flink", work / "out-flink-direct"
    results["flink_startup_first"] = step(
        "flink_startup_1",
        ["benchmarks.bench_flink", "--step", str(work / "out-flink-startup"), one_file],
        True,
    )
    results["flink_startup"] = step(
        "flink_startup_2",
        ["benchmarks.bench_flink", "--step", str(work / "out-flink-startup"), one_file],
        True,
    )
    results["flink"] = step("flink", ["benchmarks.bench_flink", "--step", str(flink_out), *inputs], True)
    results["direct_startup"] = step(
        "direct_startup",
        ["benchmarks.e2e", str(work / "out-flink-direct-startup"), str(WORKERS), one_file],
        False,
    )
    results["direct"] = step("direct", ["benchmarks.e2e", str(direct_out), str(WORKERS), *inputs], False)
    results["same_rows"] = same_committed_rows(direct_out, flink_out)
    return results


# --- figures and the record ------------------------------------------------------------------------


def cpu_figures(step: dict[str, Any]) -> dict[str, float]:
    """CPU seconds of a step: its own process tree and, for a Flink job, the cluster's processes."""
    cluster = step.get("cluster_cpu_s", {})
    python = sum(v for k, v in cluster.items() if k.startswith("pool_"))
    jvm = sum(v for k, v in cluster.items() if not k.startswith("pool_"))
    figures = {"launcher": step["cpu_seconds"], "python_workers": python, "jvm": jvm}
    figures["total"] = figures["launcher"] + (python + jvm if "job" in step else 0.0)
    return figures


def summary(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pools = sorted(name for name in results["cluster"]["pids"] if name.startswith("pool_"))
    for key in ("flink_startup_first", "flink_startup", "flink"):
        if results[key].get("job"):
            results[key].update(job_figures(results[key], pools))
    for runner, startup in (("direct", "direct_startup"), ("flink", "flink_startup")):
        step = results[runner]
        cpu = cpu_figures(step)
        articles = step["articles"]
        figures: dict[str, Any] = {
            "articles": articles,
            "entries": step["entries"],
            "unaccounted_entries": step["unaccounted_entries"],
            "wall_seconds": step["wall_seconds"],
            "startup_wall_seconds": results[startup]["wall_seconds"],
            **rates(step, results[startup]),
            "cpu_seconds": cpu,
            "cpu_ms_per_article": {k: 1000 * v / articles for k, v in cpu.items()} if articles else {},
            "load_mean": step["load_average"]["mean"],
        }
        if runner == "flink":
            timeline = step.get("startup", {})
            first, done = timeline.get("first_records_seen_s"), timeline.get("job_finished_s")
            figures["startup"] = timeline
            figures["articles_per_second_first_records_to_finished"] = (
                articles / (done - first) if first is not None and done and done > first else None
            )
            figures["peak_pss_mb"] = (step.get("peak_cluster_pss_mb") or 0) + step["peak_tree_pss"] / MB
            figures["cold_startup_wall_seconds"] = results["flink_startup_first"]["wall_seconds"]
            figures["shares"] = step.get("shares")
        else:
            figures["peak_pss_mb"] = step["peak_tree_pss"] / MB
        out[runner] = figures
    direct, flink = out["direct"], out["flink"]
    out["flink_over_direct"] = {
        "articles_per_second": flink["articles_per_second"] / direct["articles_per_second"],
        "articles_per_second_without_startup": (
            flink["articles_per_second_without_startup"] / direct["articles_per_second_without_startup"]
            if flink["articles_per_second_without_startup"] and direct["articles_per_second_without_startup"]
            else None
        ),
        "cpu_per_article": flink["cpu_seconds"]["total"]
        / max(flink["articles"], 1)
        / (direct["cpu_seconds"]["total"] / max(direct["articles"], 1)),
    }
    out["same_rows"] = results["same_rows"]
    return out


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_markdown(results: dict[str, Any], name: str) -> str:
    s = results["summary"]
    direct, flink = s["direct"], s["flink"]
    machine_ = results["machine"]
    lines = [
        f"### Run of {results['started_at'][:16].replace('T', ' ')} UTC: `{results['command']}`",
        "",
        f"JSON: `benchmarks/recorded/{name}`. Commit measured: `{results['measured']['commit'][:10]}` "
        f"({results['measured']['branch']}: {results['measured']['subject']})"
        + (
            f", with uncommitted changes to {', '.join(c.split(maxsplit=1)[-1] for c in changes)}"
            if (changes := results["measured"].get("uncommitted_changes"))
            else ""
        )
        + ".",
        f"Machine: {machine_['cpu']}, {machine_['cores']} cores; load average "
        f"{machine_['load_average_at_start'][0]:.1f} at the start, {results['load_average_at_end'][0]:.1f} "
        "at the end (per step: the mean of its samples).",
    ]
    if results.get("note"):
        lines.append(f"Note: {results['note']}")
    if results.get("flink_options"):
        options = ", ".join(f"`--{k}={v}`" for k, v in results["flink_options"].items())
        lines.append(f"Beam options of the Flink steps, after newsbeam's: {options}.")
    lines += [
        "",
        f"The same {results['copies']} copies, configs/local.yaml (full text off); in-process = Beam's "
        f"FnApiRunner with {WORKERS} worker processes, Flink = parallelism {WORKERS}, one slot on each of 2 "
        "TaskManagers. CPU of Flink: the launcher plus every process of the cluster (JVMs; the worker "
        "pools with their SDK workers). Peak PSS of Flink: the cluster's processes plus the launcher.",
        "",
        "| runner | articles | books | wall s | articles/s | articles/s without start-up | start-up s "
        "| CPU ms/article | of it: Python / JVM | peak PSS MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in (("in-process, 2 workers", direct), ("Flink, parallelism 2", flink)):
        books = "balance" if not r["unaccounted_entries"] else f"{r['unaccounted_entries']:,} lost"
        per = r["cpu_ms_per_article"]
        split = (
            f"{per['python_workers']:.2f} / {per['jvm']:.2f}" if label.startswith("Flink") else "(all Python)"
        )
        lines.append(
            f"| {label} | {r['articles']:,} | {books} | {r['wall_seconds']:.1f} | "
            f"{r['articles_per_second']:.1f} | {_f(r['articles_per_second_without_startup'])} | "
            f"{r['startup_wall_seconds']:.1f} | {per['total']:.2f} | {split} | {r['peak_pss_mb']:,.0f} | "
            f"{r['load_mean']:.1f} |"
        )
    ratio = s["flink_over_direct"]
    lines += [
        "",
        f"Flink over in-process: {ratio['articles_per_second']:.2f}x the articles/s, "
        f"{_f(ratio['articles_per_second_without_startup'], 2)}x without start-up; "
        f"{ratio['cpu_per_article']:.2f}x the CPU per article.",
    ]
    t = flink.get("startup") or {}
    started = results["flink"].get("sdk_workers_started")
    if started:
        lines.append(
            "SDK worker processes started for the Flink job on the copies, per TaskManager's pool: "
            + ", ".join(f"{pool} {count}" for pool, count in started.items())
            + "."
        )
    lines += [
        f"Start-up on Flink (one seed file, launch to committed): {flink['cold_startup_wall_seconds']:.1f} s "
        f"for the first job of this run, {flink['startup_wall_seconds']:.1f} s for the next; in-process "
        f"{direct['startup_wall_seconds']:.1f} s.",
        "The Flink run on the copies, from launch: the JobManager has the job at "
        f"{_f(t.get('job_received_s'))} s, the heaviest stage is deployed at "
        f"{_f(t.get('heaviest_stage_deployed_s'))} s, its first records are seen at "
        f"{_f(t.get('first_records_seen_s'))} s (REST samples every {results['sample_seconds']:.0f} s; Flink "
        f"refreshes task metrics about every 10 s), the job finishes at {_f(t.get('job_finished_s'))} s, "
        f"the launcher exits (committed) at {_f(t.get('committed_s'))} s: "
        f"{_f(flink['articles_per_second_first_records_to_finished'])} articles/s from first records to "
        "finished.",
    ]
    shares = flink.get("shares")
    if shares:
        lines += [
            "",
            f"Both workers, in the heaviest stage (`{shares['vertex'][:120]}`, {shares['seconds']:.0f} s), "
            "from Flink's REST API (records, busyTimeMsPerSecond) and /proc (CPU of each TaskManager's "
            "worker pool and its SDK worker):",
            "",
            "| subtask | TaskManager | records read | records written | seconds "
            "| busyTimeMsPerSecond, mean |",
            "|---|---|---|---|---|---|",
        ]
        for sub in shares["subtasks"]:
            lines.append(
                f"| {sub['subtask']} | `{(sub['taskmanager'] or '?')[:24]}` | {_f(sub['read_records'], 0)} | "
                f"{_f(sub['write_records'], 0)} | {sub['seconds']:.1f} | {_f(sub['busy_ms_per_s_mean'], 0)} "
                f"({sub['busy_samples']} samples) |"
            )
        pools = "; ".join(
            f"{pool}: {v['cpu_s']:.1f} CPU s = {v['cores']:.2f} of a core"
            for pool, v in shares["pools"].items()
        )
        if not any(sub["busy_samples"] for sub in shares["subtasks"]):
            lines += [
                "",
                "Flink gives busyTimeMsPerSecond as NaN for these tasks (a Beam batch job runs on Flink's "
                "DataSet operators, whose busy time Flink does not measure), so how busy each worker was "
                "comes from /proc.",
            ]
        running = _f(100 * (shares.get("all_subtasks_running_share") or 0), 0)
        busy = _f(100 * (shares["all_pools_busy_share"] or 0), 0)
        lines += [
            "",
            f"Worker CPU over the stage: {pools}. Both subtasks running at once for {running}% of the "
            f"stage; every pool busy at once (at least {BUSY_CORE_SHARE} of a core each) in {busy}% of "
            f"{shares['sample_intervals']} sample intervals; records read, smaller subtask over larger: "
            f"{shares['smaller_over_larger_records']:.2f}.",
        ]
    same = s["same_rows"]
    lines.append(
        "\nSame committed rows (article_id, version, content_hash), in-process and Flink: "
        + (
            f"**yes**, {same['rows'][0]:,} rows each."
            if same["equal"]
            else f"**no**: {same['only_in_first']:,} only in-process, {same['only_in_second']:,} only on "
            f"Flink (of {same['rows'][0]:,} and {same['rows'][1]:,})."
        )
    )
    return "\n".join(lines)


def recorded_runs() -> list[tuple[str, dict[str, Any]]]:
    files = sorted(RECORDED.glob("flink-*.json"), reverse=True) if RECORDED.exists() else []
    return [(path.name, json.loads(path.read_text())) for path in files]


def write_results_md(path: Path = RESULTS_MD) -> None:
    """The "On a cluster" section of RESULTS.md, between its own markers (appended the first time)."""
    block = "\n\n".join(render_markdown(results, name) for name, results in recorded_runs())
    generated = f"{BEGIN}\n{block}\n{END}"
    text = path.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## On a cluster (issue 17): Flink against the in-process runner\n\n"
        text += generated + "\n"
    path.write_text(text)


def run_all(args: argparse.Namespace, argv: list[str] | None) -> tuple[dict[str, Any], str]:
    """Every step; the raw figures are written before they are summarized, so that none are lost."""
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(),
        "command": "python -m benchmarks.bench_flink " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "measured": measured_commit(),
        "machine": machine(),
        "sample_seconds": args.sample,
    }
    with tempfile.TemporaryDirectory(prefix="bench-flink-") as scratch:
        state = args.state.resolve() if args.state else Path(scratch) / "cluster"
        if args.state is None:
            _cluster("up", "--state", str(state))
        try:
            options = dict(option.split("=", 1) for option in args.flink_option)
            results.update(measure(state, args.copies, args.sample, corpus.WORK, options))
        finally:
            if args.state is None:
                _cluster("down", "--state", str(state))
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["load_average_at_end"] = os.getloadavg()
    name = f"flink-{started:%Y%m%dT%H%M%SZ}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=str))
    return results, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_flink",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--copies", type=int, default=4, help="copies of the 200 feeds (about 6,550 articles each)"
    )
    parser.add_argument("--state", type=Path, default=None, help="a running cluster's state folder")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples of the cluster")
    parser.add_argument(
        "--record", action="store_true", help="keep the JSON and rewrite RESULTS.md's section"
    )
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md's section")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--flink-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Beam option for the Flink steps, after the runner's (e.g. environment_cache_millis=0)",
    )
    parser.add_argument("--again", type=Path, default=None, help="summarize this results JSON again")
    parser.add_argument("--step", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        flink_step(args.step[0], args.step[1:])
        return 0
    if args.render:
        write_results_md()
        return 0
    if args.again:  # the figures again from a run's JSON (e.g. after a change to the summary)
        results = json.loads(args.again.read_text())
        name = args.again.name
    else:
        results, name = run_all(args, argv)
    results["summary"] = summary(results)
    text = json.dumps(results, indent=2, default=str)
    (RESULTS / name).write_text(text)
    if args.record:  # kept in the repository: one line per step, the samples make it large
        RECORDED.mkdir(parents=True, exist_ok=True)
        steps = ",\n".join(f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in results.items())
        (RECORDED / name).write_text("{\n" + steps + "\n}\n")
        write_results_md()
    print(render_markdown(results, name if args.record else "(not recorded)"))
    print(f"\nresults: {RESULTS / name}")
    same = results["summary"]["same_rows"]["equal"]
    books = all(results[r]["unaccounted_entries"] == 0 for r in ("direct", "flink"))
    return 0 if same and books else 1


if __name__ == "__main__":
    sys.exit(main())
