"""Crash safety: SIGKILL the CLI's whole process group at many points of a run, then restart it.

Each scenario starts from the same committed output (run A), starts run B (two new articles and one
changed one) in a new session, and kills the session's process group (worker processes too) either
at a named fault point inside the commit (`NEWSBEAM_PAUSE_AT`: the process announces the point in a
marker file and waits there) or after a delay. Right after the kill, DuckDB and pyarrow must read
the output without error and see no temporary or partial file, and the articles they see must be the
state before run B or after it; the only exception is the documented exposure window (a kill between
the renames of a decided commit, whose manifest says `committing`), where they see the state before
plus some of run B's files, never a partial file. After restarting run B with the same run id, every
expected article is there exactly once.

Concurrency: two runs started at once on one output, and the commit lock's wait and message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from tests.test_incremental import BODIES, articles, fetch_rows, make_inputs, run, write_feed
from transforms.io.lock import CommitLock, CommitLockTimeout, lock_holder

PROJECT = Path(__file__).resolve().parent.parent
CHANGED = [
    "Council members postponed the library budget vote after residents asked for more reading rooms.",
    *BODIES[1:],
]
PAUSES = [
    "commit.locked",
    "commit.manifest_written",
    "commit.publish.1",
    "commit.publish.2",
    "commit.published",
    "commit.committed",
]
DELAYS = [0.3, 1.2, 2.0, 2.6, 3.2]

pytestmark = pytest.mark.e2e


def start_cli(
    inputs: Path, output: Path, run_id: str, env: dict[str, str], *extra: str
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pipeline", "run", "--input", str(inputs), "--output", str(output)]
    return subprocess.Popen(
        [*command, "--run-id", run_id, *extra],
        cwd=PROJECT,
        env={**os.environ, **env},
        start_new_session=True,  # its own process group: the kill reaches the workers too
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def visible_files(output: Path) -> list[Path]:
    return [
        p
        for d in ("articles", "dead_letters", "feed_fetches")
        for p in (output / d).rglob("*")
        if p.is_file()
    ]


def check_readers(output: Path) -> list[dict[str, Any]]:
    """What readers see; fails on a temporary, staged or unreadable file among the datasets."""
    for path in visible_files(output):
        assert path.name.startswith("part-") and path.suffix == ".parquet", f"stray file visible: {path}"
    for dataset in ("articles", "feed_fetches"):
        if (output / dataset).exists():
            ds.dataset(output / dataset, partitioning="hive").to_table()  # every file whole and readable
    fetch_rows(output)
    return articles(output)


def pending(output: Path) -> list[dict[str, Any]]:
    found = []
    for marker in (output / "_runs" / "_pending").glob("*"):
        manifest = output / "_runs" / f"{marker.name}.json"
        if manifest.exists():
            found.append(json.loads(manifest.read_text()))
    return [m for m in found if m["status"] == "committing"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run A committed, and the reference state after an uninterrupted run B."""
    root = tmp_path_factory.mktemp("crash")
    inputs = make_inputs(root / "in")
    output = root / "base"
    assert run(inputs, output, "--run-id", "A") == 0
    write_feed(inputs / "feed.xml", CHANGED)
    reference = root / "reference"
    shutil.copytree(output, reference)
    assert run(inputs, reference, "--run-id", "B") == 0
    before, after = articles(output), articles(reference)
    assert len(after) == len(before) + 1  # one changed entry: one new version
    return {"inputs": inputs, "output": output, "before": before, "after": after}


def restart_and_check(base: dict[str, Any], output: Path) -> None:
    assert run(base["inputs"], output, "--run-id", "B") == 0
    seen = articles(output)
    assert seen == base["after"]
    assert max(Counter((r["article_id"], r["version"]) for r in seen).values()) == 1
    assert not pending(output)
    assert not (output / "_staging").exists() or not any((output / "_staging").iterdir())
    fetches = fetch_rows(output, "B")
    assert len(fetches) == 3  # run B's fetch rows published exactly once


def scenario(
    base: dict[str, Any], tmp_path: Path, env: dict[str, str], delay: float | None, *extra: str
) -> str:
    """Run B killed at a fault point (or after `delay`); returns where the kill landed.

    Where: the fault point and the pid that reached it, `running` or `finished` for timed kills,
    with ` (exposure window)` when the kill came between the renames of the commit.
    """
    output = tmp_path / "out"
    shutil.copytree(base["output"], output)
    marker = tmp_path / "paused"
    process = start_cli(base["inputs"], output, "B", {**env, "NEWSBEAM_PAUSE_MARKER": str(marker)}, *extra)
    deadline = time.monotonic() + 90
    if delay is None:
        while not marker.exists():
            assert process.poll() is None, process.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the fault point"
            time.sleep(0.05)
    else:
        time.sleep(delay)
    finished = process.poll() is not None
    kill_group(process)
    landed = marker.read_text().strip() if marker.exists() else ("finished" if finished else "running")
    if marker.exists():
        landed += f" cli={process.pid}"

    seen = (check_readers(output), len(fetch_rows(output, "B")))
    if seen not in ((base["before"], 0), (base["after"], 3)):
        # Only between the renames of a decided commit, which the next run rolls forward.
        assert pending(output), f"half a run visible after a kill at {landed}, and no commit to finish"
        landed += " (exposure window)"
        assert (
            Counter(map(str, base["before"]))
            <= Counter(map(str, seen[0]))
            <= Counter(map(str, base["after"]))
        )
    restart_and_check(base, output)
    return landed


@pytest.mark.parametrize("point", PAUSES)
def test_kill_inside_the_commit(base: dict[str, Any], tmp_path: Path, point: str) -> None:
    landed = scenario(base, tmp_path, {"NEWSBEAM_PAUSE_AT": point}, None)
    assert landed.startswith(point)  # the kill really landed there
    # The run publishes its index delta, then its articles, then its fetch rows: after the second
    # rename readers see the new articles without the fetch rows, until recovery.
    assert ("exposure window" in landed) == (point == "commit.publish.2")


def test_kills_at_many_moments_of_a_run(base: dict[str, Any], tmp_path: Path) -> None:
    landed = [scenario(base, tmp_path / f"at-{delay}", {}, delay) for delay in DELAYS]
    print("timed kills landed:", landed)
    assert landed.count("finished") < len(DELAYS), landed  # most kills hit a live run


def test_kill_reaches_the_worker_processes(base: dict[str, Any], tmp_path: Path) -> None:
    workers = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    env = {"NEWSBEAM_PAUSE_AT": "commit.publish.1"}
    landed = scenario(base, tmp_path, env, None, *workers)
    assert landed.startswith("commit.publish.1")
    _, worker, cli = landed.split()[:3]
    assert int(worker) != int(cli.removeprefix("cli="))  # the commit ran in a worker process ...
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and "Z" not in Path(f"/proc/{worker}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, f"worker {worker} survived the kill of its process group"
        time.sleep(0.05)  # ... and it died with the group


# --- two runs at once -----------------------------------------------------------------------------


def test_two_concurrent_runs_on_one_output(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in")
    more = make_inputs(
        tmp_path / "more", [*CHANGED, "A fourth story about the harbour festival and its boats."]
    )
    output = tmp_path / "out"
    first = start_cli(inputs, output, "one", {})
    second = start_cli(more, output, "two", {})
    outputs = [p.communicate(timeout=120)[0].decode() for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    seen = articles(output)
    assert max(Counter((r["article_id"], r["version"]) for r in seen).values()) == 1
    assert max(Counter((r["article_id"], r["content_hash"]) for r in seen).values()) == 1
    # Seeds (2) + feed items: 4 of `inputs`, of which `more` changes one and adds one.
    assert len({r["article_id"] for r in seen}) == 2 + 5
    assert len(seen) == 2 + 5 + 1
    for row in fetch_rows(output):
        assert row["entries"] == (
            row["articles_written"] + row["duplicates"] + row["dead_letters"] + row["already_stored"]
        )
    assert sum(r["articles_written"] for r in fetch_rows(output)) == len(seen)


def test_commit_lock_waits_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from transforms.io.lock import CommitLock\n"
            "with CommitLock(sys.argv[1], 'test holder'):\n    print('held', flush=True); time.sleep(60)",
            output,
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        info = lock_holder(output)
        assert info is not None and info["pid"] == holder.pid and info["owner"] == "test holder"
        started = time.monotonic()
        expected = rf"test holder \(pid {holder.pid} on "
        with pytest.raises(CommitLockTimeout, match=expected), CommitLock(output, "second", timeout=0.5):
            pass
        assert time.monotonic() - started >= 0.5
    finally:
        kill_group(holder)
    # SIGKILL releases it: a crashed holder never leaves the lock behind.
    assert lock_holder(output) is None
    with CommitLock(output, "after the crash", timeout=1.0):
        now = lock_holder(output)
        assert now is not None and now["owner"] == "after the crash" and now["pid"] == os.getpid()


def test_run_that_read_the_index_before_another_committed_reconciles(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in")
    more = make_inputs(
        tmp_path / "more", [*CHANGED, "A fourth story about the harbour festival and its boats."]
    )
    output, marker = tmp_path / "out", tmp_path / "paused"
    env = {"NEWSBEAM_PAUSE_AT": "commit.waiting", "NEWSBEAM_PAUSE_MARKER": str(marker)}
    first = start_cli(inputs, output, "one", env)  # reads an empty index, then waits before its commit
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert run(more, output, "--run-id", "two") == 0  # commits everything `one` is about to write
        marker.unlink()  # `one` goes on: its commit finds the index delta of `two`
        assert first.wait(timeout=60) == 0
    finally:
        kill_group(first)
    seen = articles(output)
    assert max(Counter((r["article_id"], r["content_hash"]) for r in seen).values()) == 1
    assert len(seen) == 2 + 5 + 1  # story 0 in two versions: `two`'s text first, then `one`'s
    one = json.loads((output / "_runs" / "one.json").read_text())
    assert one["status"] == "committed" and one["reconciled"] == 2 + 4
    assert one["counts"]["articles"]["rows"] == 1
    written = {
        r["run_id"]: r["articles_written"] for r in fetch_rows(output) if r["source"].endswith("feed.xml")
    }
    assert written == {"one": 1, "two": 5}
    stored = [r for r in fetch_rows(output, "one")]
    assert sum(r["already_stored"] for r in stored) == 2 + 3


def test_recovery_rolls_forward_a_decided_commit_and_forgets_an_undecided_one(tmp_path: Path) -> None:
    from transforms.io.commit import recover_runs
    from transforms.io.manifests import manifest_path, pending_path, write_json_atomically

    output = tmp_path / "out"
    staged = [
        output / "_staging" / "decided" / "articles" / "p=1" / f"part-decided-{n}.parquet" for n in (0, 1)
    ]
    for path in staged:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1 stand-in")
    final = [output / "articles" / "p=1" / path.name for path in staged]
    final[0].parent.mkdir(parents=True)
    staged[0].rename(final[0])  # the crash came after the first rename
    moves = [{"staged_path": str(s), "final_path": str(f)} for s, f in zip(staged, final, strict=True)]
    manifest = {"run_id": "decided", "status": "committing", "files": moves}
    write_json_atomically(manifest_path(str(output), "decided"), manifest)
    (output / "_runs" / "_pending").mkdir()
    for run_id in ("decided", "undecided"):  # `undecided` died after its marker, before its manifest
        Path(pending_path(str(output), run_id)).write_text(run_id)
    (output / "_staging" / "undecided").mkdir()

    assert recover_runs(str(output)) == ["decided"]
    assert all(f.read_bytes() == b"PAR1 stand-in" for f in final)
    assert json.loads(Path(manifest_path(str(output), "decided")).read_text())["status"] == "committed"
    assert not list((output / "_runs" / "_pending").iterdir())
    assert not (output / "_staging").exists()
    assert recover_runs(str(output)) == []
