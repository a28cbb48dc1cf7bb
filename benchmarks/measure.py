"""Run one benchmark step in a subprocess and measure its wall time and peak memory.

Peak memory is the largest sum of resident set sizes of the process and all its descendants
(Beam's multi-process runner starts worker processes), sampled from /proc every 250 ms, together
with the step's own exact peak (`VmHWM`) that it reports itself.
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
_PAGE = os.sysconf("SC_PAGE_SIZE")


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


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    tree = _children()
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process that just ended
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * _PAGE
        todo += tree.get(current, [])
    return total


def own_peak_rss() -> int:
    """This process's peak resident bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def report(result: dict[str, Any]) -> None:
    """Called by a step at its end: its figures for the parent, on one line of stdout."""
    result["own_peak_rss"] = own_peak_rss()
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def run_step(args: list[str], log: Path, cwd: Path | None = None) -> dict[str, Any]:
    """Run `python -m <args>`; returns the step's own figures plus wall time and peak tree RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", *args]
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = 0
    stdout_path = log.with_suffix(".stdout")
    with log.open("w") as err, stdout_path.open("w") as out:
        err.write("$ " + " ".join(command) + "\n")
        err.flush()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=cwd)
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            # A sample walks /proc (about 2 ms of CPU): every 250 ms it takes 1% of a core from the
            # step measured, which on 2 busy cores would slow a 2-worker run more than the baseline.
            time.sleep(0.25)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = stdout_path.read_text().splitlines()
    result_lines = [line for line in lines if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not result_lines:
        raise RuntimeError(f"benchmark step {' '.join(args)} failed (exit {process.returncode}); see {log}")
    result: dict[str, Any] = json.loads(result_lines[-1][len(RESULT_PREFIX) :])
    result["wall_seconds"] = wall
    result["peak_tree_rss"] = peak
    # CPU seconds of the step and every process it waited for: steadier than wall time on a busy machine.
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


if (
    __name__ == "__main__"
):  # python -m benchmarks.measure MODULE [ARGS...]: one step, measured as the suite does
    figures = run_step(sys.argv[1:], Path("benchmarks/work/logs/measure.log"))
    print(json.dumps(figures, indent=2, default=str))
