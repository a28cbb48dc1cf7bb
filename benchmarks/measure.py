"""Run one benchmark step in a subprocess and measure its wall time, CPU time and peak memory.

Peak memory is the largest sum of proportional set sizes (PSS, from `/proc/<pid>/smaps_rollup`)
of the process and all its descendants (Beam's multi-process runner and a `multiprocessing.Pool`
start worker processes), sampled every 250 ms. PSS, not RSS: pages a forked worker shares with its
parent (the interpreter, numpy, the detector's profiles) count once, split between them, so a
2-process run is not charged twice for what it holds once. The launcher's own share is kept apart
(`peak_launcher_pss`): the in-process runner buffers what crosses a stage there. The step's own exact
RSS peak (`VmHWM`) comes with it as `own_peak_rss`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_JSON "
SAMPLE_SECONDS = 0.25


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_pss(pid: int) -> int:
    """Proportional set size of one process in bytes (0 for a process that just ended)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_pss(pid: int) -> dict[int, int]:
    """PSS in bytes of `pid` and of each of its descendants, by process id."""
    tree = _children()
    found, todo = {}, [pid]
    while todo:
        current = todo.pop()
        found[current] = process_pss(current)
        todo += tree.get(current, [])
    return found


def own_peak_rss() -> int:
    """This process's peak resident bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measured_commit() -> dict[str, Any]:
    """The commit of the tree a step runs, and the files changed on top of it (JSON results aside)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = [line for line in git("status", "--porcelain").splitlines() if not line.endswith(".json")]
    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "uncommitted_changes": changed,
    }


def report(result: dict[str, Any], commit: dict[str, Any] | None = None) -> None:
    """Called by a step at its end: its figures for the parent, on one line of stdout.

    `commit` is the tree the step ran (taken at its start): a long suite may span commits.
    """
    result["own_peak_rss"] = own_peak_rss()
    if commit is not None:
        result["measured"] = commit
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def run_step(
    args: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `python -m <args>`; returns the step's own figures plus wall time, CPU time and peak PSS.

    `memory_samples` is the tree's PSS over time (seconds since start, MB), one point every ~5 s:
    enough to see whether memory is flat or climbs with the articles read; `process_samples` the
    same points per process (MB: the launcher, then the others by pid), and `peak_processes` the
    processes at the tree's peak, to tell which one grew; `load_average` is the machine's 1-minute
    load average over the same points.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", *args]
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = 0
    peak_per_process: dict[int, int] = {}
    samples: list[tuple[float, int]] = []
    process_samples: list[tuple[float, int, list[int]]] = []
    at_peak: tuple[float, int, list[int]] = (0.0, 0, [])
    loads = [os.getloadavg()[0]]
    stdout_path = log.with_suffix(".stdout")
    samples_path = log.with_suffix(".samples.json")
    with log.open("w") as err, stdout_path.open("w") as out:
        err.write("$ " + " ".join(command) + "\n")
        err.flush()
        process = subprocess.Popen(
            command, stdout=out, stderr=err, text=True, cwd=cwd, env={**os.environ, **(env or {})}
        )
        next_kept = 0.0
        while process.poll() is None:
            per_process = tree_pss(process.pid)
            total = sum(per_process.values())
            now = time.perf_counter() - started
            mb = 1024 * 1024
            split = (
                round(now, 1),
                per_process.get(process.pid, 0) // mb,
                [pss // mb for pid, pss in sorted(per_process.items()) if pid != process.pid],
            )
            if total > peak:
                peak, at_peak = total, split
            for pid, pss in per_process.items():
                peak_per_process[pid] = max(peak_per_process.get(pid, 0), pss)
            if now >= next_kept:
                samples.append((round(now, 1), total // mb))
                process_samples.append(split)
                loads.append(os.getloadavg()[0])
                # Kept as the step goes: a step stopped before its end still shows its memory curve.
                samples_path.write_text(json.dumps({"pss_mb": samples, "load": loads}))
                next_kept = now + 5
            # A sample walks /proc (a few ms of CPU): every 250 ms it takes ~1% of a core from the
            # step measured, the same share for every step.
            time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = stdout_path.read_text().splitlines()
    result_lines = [line for line in lines if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not result_lines:
        raise RuntimeError(f"benchmark step {' '.join(args)} failed (exit {process.returncode}); see {log}")
    result: dict[str, Any] = json.loads(result_lines[-1][len(RESULT_PREFIX) :])
    result["wall_seconds"] = wall
    result["peak_tree_pss"] = peak
    result["peak_launcher_pss"] = peak_per_process.get(process.pid, 0)
    # Each process's own peak, largest first (the launcher is `peak_launcher_pss`).
    result["peak_pss_per_process"] = sorted(peak_per_process.values(), reverse=True)
    result["memory_samples"] = samples
    result["process_samples"] = process_samples
    result["peak_processes"] = {"seconds": at_peak[0], "launcher_mb": at_peak[1], "others_mb": at_peak[2]}
    loads.append(os.getloadavg()[0])
    # The machine's 1-minute load average while the step ran (other jobs share the cores).
    result["load_average"] = {
        "start": loads[0],
        "end": loads[-1],
        "mean": sum(loads) / len(loads),
        "max": max(loads),
    }
    # CPU seconds of the step and every process it waited for: steadier than wall time on a busy machine.
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


if (
    __name__ == "__main__"
):  # python -m benchmarks.measure MODULE [ARGS...]: one step, measured as the suite does
    # A log of its own per call: two measurements at once must not read each other's result line.
    figures = run_step(sys.argv[1:], Path(f"benchmarks/work/logs/measure-{os.getpid()}.log"))
    print(json.dumps(figures, indent=2, default=str))
