"""The store against careless operators and bad luck: path-like run ids, glob characters in the output
path, a damaged version index, and the leftovers of a run that died of a full disk.

Every test runs the real CLI in-process on the small inputs of tests/test_incremental.py and reads
the output back from the files themselves (os.walk and pyarrow; DuckDB globs would read `out[1]`
as a pattern too).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileSystem

from pipeline.cli import main
from pipeline.run import new_run_id
from tests.test_incremental import make_inputs, run
from transforms.io.parquet import write_parquet
from transforms.io.staging import remove_staging

pytestmark = pytest.mark.e2e

ARTICLES_PER_RUN = 6  # the two seeds and the four feed items of make_inputs


def snapshot(output: Path) -> dict[str, str]:
    """Every file under `output` (relative path -> sha256 of its bytes): equal snapshots, equal outputs."""
    found = {}
    for folder, _, names in os.walk(output):
        for name in names:
            path = Path(folder, name)
            found[str(path.relative_to(output))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def article_rows(output: Path) -> int:
    files = [
        Path(f, n) for f, _, names in os.walk(output / "articles") for n in names if n.endswith(".parquet")
    ]
    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def manifest(output: Path, run_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((output / "_runs" / f"{run_id}.json").read_text())
    return document


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Inputs and an output holding one committed run `r1`."""
    root = tmp_path_factory.mktemp("committed")
    inputs, output = make_inputs(root / "in"), root / "out"
    assert run(inputs, output, "--run-id", "r1") == 0
    return inputs, output


@pytest.fixture
def store(committed: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `committed` for one test to change."""
    inputs, output = tmp_path / "in", tmp_path / "out"
    shutil.copytree(committed[0], inputs)
    shutil.copytree(committed[1], output)
    return inputs, output


# --- run ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["..", "a/b", "../r1", ".hidden", "x..y", "", "a b", "ü"])
def test_a_run_id_that_is_a_path_is_refused_and_the_output_kept(
    store: tuple[Path, Path], run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, output = store
    (output / "_staging" / "another-run").mkdir(parents=True)  # a concurrent run's staging
    before = snapshot(output)
    for _attempt in range(2):  # the README's advice after a failure: retry with the same id
        assert run(inputs, output, "--run-id", run_id) == 2
        error = capsys.readouterr().err
        assert f"--run-id {run_id!r}" in error and "letters, digits" in error
    assert snapshot(output) == before
    assert (output / "_staging" / "another-run").is_dir()


def test_generated_run_ids_are_valid_and_a_retry_with_the_same_id_still_works(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from transforms.io.paths import validate_run_id

    generated = new_run_id(datetime.now(UTC))
    assert validate_run_id(generated) == generated
    inputs, output = store
    assert run(inputs, output, "--run-id", "2026-12-02_retry.1") == 0
    assert run(inputs, output, "--run-id", "2026-12-02_retry.1") == 0
    assert "already committed" in capsys.readouterr().out


@pytest.mark.parametrize("run_id", ["..", "../..", "a/b", ".", ""])
def test_the_staging_delete_never_reaches_outside_the_runs_own_folder(
    store: tuple[Path, Path], run_id: str
) -> None:
    from transforms.io.paths import DeleteOutsideFolderError

    _, output = store
    (output / "_staging" / "another-run").mkdir(parents=True)
    before = snapshot(output)
    with pytest.raises(DeleteOutsideFolderError):
        remove_staging(str(output), run_id)
    assert snapshot(output) == before and (output / "_staging" / "another-run").is_dir()


def test_the_guarded_delete_refuses_escaping_paths_and_symlinks(tmp_path: Path) -> None:
    from transforms.io.paths import DeleteOutsideFolderError, delete_inside

    folder, outside = tmp_path / "out" / "_staging" / "r1", tmp_path / "out" / "articles"
    folder.mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.parquet").write_bytes(b"data")
    (folder / "link").symlink_to(outside)
    for path in (f"{folder}/../../articles", str(outside), f"{folder}/link", str(folder)):
        with pytest.raises(DeleteOutsideFolderError):
            delete_inside(str(folder), [path])
    with pytest.raises(DeleteOutsideFolderError):
        delete_inside("s3://bucket/out/_staging/r1", ["s3://bucket/out/_staging/r1/../../articles/x"])
    with pytest.raises(DeleteOutsideFolderError):
        delete_inside("s3://bucket/out/_staging/r1", ["gs://bucket/out/_staging/r1/x"])
    assert (outside / "keep.parquet").read_bytes() == b"data"
    (folder / "staged.parquet").write_bytes(b"staged")
    delete_inside(str(folder), [str(folder / "staged.parquet")])
    assert not (folder / "staged.parquet").exists()


def test_the_guarded_delete_on_object_stores_compares_keys_as_written() -> None:
    # Object stores do not resolve `..`: the key `out2/../out/x` lies under `out2/`, not `out/`.
    from transforms.io.paths import DeleteOutsideFolderError, delete_inside

    folder = "s3://bucket/out/_staging/r1"
    for path in (
        "s3://bucket/out2/../out/_staging/r1/x.parquet",
        "s3://bucket/out/_staging/r1/./x.parquet",
        "s3://bucket/out/_staging/r10/x.parquet",
        "s3://bucket/out/_staging/r1",
        "s3://bucket/out/_staging/r1/",
    ):
        with pytest.raises(DeleteOutsideFolderError):
            delete_inside(folder, [path])
    with pytest.raises(DeleteOutsideFolderError):
        delete_inside("s3://bucket/a/../out/_staging/r1", ["s3://bucket/out/_staging/r1/x.parquet"])
    from transforms.io.paths import is_inside

    assert is_inside(folder, f"{folder}/_state/articles/part-r1-0000.parquet")
    assert is_inside("s3://bucket/./out", "s3://bucket/./out/x")  # the same key prefix, as written


# --- glob characters in the output path -----------------------------------------------------------


@pytest.mark.parametrize("name", ["out[1]", "a*b", "q?m"])
def test_a_rerun_into_an_output_with_glob_characters_stores_nothing_new(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, output = make_inputs(tmp_path / "in"), tmp_path / name
    (
        tmp_path / name.replace("[1]", "1").replace("*", "X").replace("?", "Y")
    ).mkdir()  # what a glob would match
    assert run(inputs, output, "--run-id", "r1") == 0
    assert article_rows(output) == ARTICLES_PER_RUN
    capsys.readouterr()
    assert run(inputs, output, "--run-id", "r2") == 0
    report = capsys.readouterr().out
    assert "articles written:  0" in report and f"already stored:    {ARTICLES_PER_RUN} " in report
    assert article_rows(output) == ARTICLES_PER_RUN
    assert "articles" not in manifest(output, "r2")["counts"]
    assert not (output / "_staging").exists() and not list((output / "_runs" / "_pending").iterdir())


@pytest.mark.parametrize("name", ["out[1]", "a*b", "q?m", "x[!a]", "b[]c"])
def test_an_escaped_folder_pattern_matches_only_that_folder(name: str) -> None:
    from transforms.io.paths import escape_pattern

    folder = f"s3://bucket/data/{name}"
    with warnings.catch_warnings():  # Python's re warns about Beam's `[[]` ("possible nested set")
        warnings.simplefilter("ignore", FutureWarning)
        matches = re.compile(FileSystem.translate_pattern(escape_pattern(folder) + "/*")).match
    assert matches(f"{folder}/part-0.parquet")
    assert not matches(f"{folder}/sub/part-0.parquet")
    assert not matches("s3://bucket/data/out1/part-0.parquet")
    assert not matches("s3://bucket/data/aXb/part-0.parquet")


# --- a damaged version index ----------------------------------------------------------------------


def index_rows(output: Path) -> list[dict[str, Any]]:
    files = sorted((output / "_state" / "articles").glob("*.parquet"))
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    return sorted(rows, key=lambda row: (row["article_id"], row["version"]))


def repair_then_rerun_stores_nothing(
    inputs: Path, output: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    assert main(["repair", str(output)]) == 0
    said = capsys.readouterr().out
    assert problem in said and "rebuilt from the article files: 6 rows" in said
    assert run(inputs, output, "--run-id", "after-repair") == 0
    report = capsys.readouterr().out
    assert "articles written:  0" in report and f"already stored:    {ARTICLES_PER_RUN} " in report
    assert article_rows(output) == ARTICLES_PER_RUN
    assert main(["repair", "--output", str(output)]) == 0
    assert "the version index is whole; nothing to do" in capsys.readouterr().out


def test_a_deleted_index_delta_stops_the_next_run_and_repair_rebuilds_it(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, output = store
    original = index_rows(output)
    (delta,) = (output / "_state" / "articles").glob("*.parquet")
    delta.unlink()
    capsys.readouterr()

    assert run(inputs, output, "--run-id", "r2") == 3
    error = capsys.readouterr().err
    assert f"{delta} is missing" in error and f"newsbeam repair {output}" in error
    assert "_runs/r1.json" in error  # the manifest that listed it
    assert article_rows(output) == ARTICLES_PER_RUN  # nothing stored twice
    assert not (output / "_runs" / "r2.json").exists()

    repair_then_rerun_stores_nothing(inputs, output, capsys, f"{delta} is missing")
    assert index_rows(output) == original  # the same rows as the lost delta, all six fields
    assert len(list((output / "_state" / "articles").glob("*.parquet"))) == 1


def test_a_truncated_index_delta_is_named_and_repair_rebuilds_it(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, output = store
    original = index_rows(output)
    (delta,) = (output / "_state" / "articles").glob("*.parquet")
    delta.write_bytes(delta.read_bytes()[: delta.stat().st_size // 2])
    capsys.readouterr()

    assert run(inputs, output, "--run-id", "r2") == 3
    error = capsys.readouterr().err
    assert f"{delta} is unreadable" in error and "magic bytes" in error
    assert f"newsbeam repair {output}" in error
    assert main(["compact", "--output", str(output)]) == 3  # maintenance refuses too, naming the file
    assert f"{delta} is unreadable" in capsys.readouterr().err

    repair_then_rerun_stores_nothing(inputs, output, capsys, f"{delta} is unreadable")
    assert index_rows(output) == original
    assert (output / "_trash").is_dir()  # the broken delta is kept in the trash, not deleted


def test_an_index_delta_replaced_by_another_parquet_file_is_named_and_repair_rebuilds_it(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Readable, with the row count its manifest records, but not an index delta (an article file
    # copied over it, say): before, every run failed inside the dedupe stage naming no file.
    inputs, output = store
    original = index_rows(output)
    (delta,) = (output / "_state" / "articles").glob("*.parquet")
    pq.write_table(pa.table({"title": [f"t{i}" for i in range(len(original))]}), delta)
    capsys.readouterr()

    assert run(inputs, output, "--run-id", "r2") == 3
    error = capsys.readouterr().err
    assert f"{delta} is not a version index file (no column article_id, content_hash" in error
    assert f"newsbeam repair {output}" in error
    assert article_rows(output) == ARTICLES_PER_RUN
    assert not (output / "_runs" / "r2.json").exists()

    repair_then_rerun_stores_nothing(inputs, output, capsys, f"{delta} is not a version index file")
    assert index_rows(output) == original


def test_repair_names_an_unreadable_article_file_and_leaves_the_store_as_it_was(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, a traceback ending in "Parquet magic bytes not found" named no file.
    _, output = store
    (delta,) = (output / "_state" / "articles").glob("*.parquet")
    delta.unlink()
    broken = sorted((output / "articles").rglob("*.parquet"))[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    before = snapshot(output)
    capsys.readouterr()

    assert main(["repair", str(output)]) == 3
    error = capsys.readouterr().err
    assert f"the article file {broken} cannot be read" in error and "magic bytes" in error
    assert snapshot(output) == before  # no partial index delta, no staging, no manifest


# --- a full disk ----------------------------------------------------------------------------------


def disk_usage(output: Path) -> int:
    return sum(Path(f, n).stat().st_size for f, _, names in os.walk(output) for n in names)


class FullDisk:
    """A disk that holds `capacity` bytes under `output`: a Parquet write past it leaves a partial
    file and raises ENOSPC, as a real full disk does (the test's stand-in for a small tmpfs).
    Without a capacity it only records the `peak` usage a run reached."""

    def __init__(self, output: Path, capacity: int | None = None) -> None:
        self.output, self.capacity, self.peak = output, capacity, 0

    def __call__(self, table: Any, path: str, settings: Any) -> None:
        write_parquet(table, path, settings)
        usage = disk_usage(self.output)
        self.peak = max(self.peak, usage)
        if self.capacity is not None and usage > self.capacity:
            with open(path, "r+b") as stream:
                stream.truncate(max(0, os.path.getsize(path) - (usage - self.capacity)))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("transforms.io.staging.write_parquet", self)
        monkeypatch.setattr("transforms.io.versions.write_parquet", self)
        monkeypatch.setattr("transforms.dedupe.write_parquet", self)


def test_a_run_that_died_of_a_full_disk_does_not_block_the_next_run(
    store: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.test_incremental import BODIES, write_feed

    inputs, output = store
    write_feed(inputs / "feed.xml", [f"{body} Updated." for body in BODIES])  # four new versions
    stored = disk_usage(output)
    shutil.copytree(output, tmp_path / "measure")
    measure = FullDisk(tmp_path / "measure")
    measure.install(monkeypatch)
    assert run(inputs, tmp_path / "measure", "--run-id", "r2") == 0
    needs = measure.peak - stored  # what the run needs on the disk at its fullest
    (output / "_runs" / "r1.json.0badc0de.tmp").write_text("")  # a manifest write the full disk cut

    FullDisk(output, stored + needs * 9 // 10).install(monkeypatch)  # it fills the disk while staging
    capsys.readouterr()
    assert run(inputs, output, "--run-id", "r2") == 1  # failed, nothing committed
    assert "No space left on device" in capsys.readouterr().err
    assert disk_usage(output / "_staging" / "r2") > needs // 2  # staged files, the last one partial
    assert not (output / "_runs" / "r2.json").exists()  # no decision

    # A little space freed, less than the dead run's staging holds: the next run fits only when
    # that staging is removed as the garbage it is.
    FullDisk(output, stored + needs + needs // 4).install(monkeypatch)
    capsys.readouterr()
    assert run(inputs, output, "--run-id", "r3") == 0
    assert "articles written:  4" in capsys.readouterr().out
    assert article_rows(output) == ARTICLES_PER_RUN + 4
    assert not (output / "_staging").exists()
    assert not list((output / "_runs").glob("*.tmp"))


LEASE_HOLDER = """
import sys
from transforms.io.staging import take_staging_lease
take_staging_lease(sys.argv[1], "live")
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_dead_runs_staging_is_removed_and_a_live_ones_kept(store: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    from tests.conftest import PROJECT
    from transforms.io.staging import release_staging_lease, take_staging_lease

    inputs, output = store
    staging = output / "_staging"
    take_staging_lease(str(output), "dead")  # a run that failed: its process let go of its lease
    (staging / "dead" / "articles").mkdir(parents=True)
    (staging / "dead" / "articles" / "part-dead.parquet").write_bytes(b"PAR1 partial")
    release_staging_lease(str(output), "dead")
    for name, age in (("old-without-lease", 3 * 86_400), ("new-without-lease", 60)):
        (staging / name).mkdir()
        (staging / name / "part.parquet").write_bytes(b"PAR1")
        moment = time.time() - age
        for path in (staging / name / "part.parquet", staging / name):
            os.utime(path, (moment, moment))
    holder = subprocess.Popen(  # a run still staging, in another live process
        [sys.executable, "-c", LEASE_HOLDER, str(output)],
        cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        (staging / "live" / "part-live.parquet").write_bytes(b"PAR1 staged")
        assert run(inputs, output, "--run-id", "r2") == 0
        assert sorted(p.name for p in staging.iterdir()) == ["live", "new-without-lease"]
        assert (staging / "live" / "part-live.parquet").read_bytes() == b"PAR1 staged"
        assert run(inputs, output, "--run-id", "live") == 3  # the same id while it lives: refused
        assert (staging / "live" / "part-live.parquet").exists()
    finally:
        holder.communicate("", timeout=30)
    assert main(["compact", "--output", str(output)]) == 0  # compact removes it once its run died
    assert sorted(p.name for p in staging.iterdir()) == ["new-without-lease"]


def test_the_commit_lock_is_taken_and_released_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transforms.io.lock import CommitLock

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(os, "pwrite", full_disk)
        with CommitLock(str(tmp_path), "a commit on a full disk", timeout=1):
            pass
    with CommitLock(str(tmp_path), "the next commit", timeout=1):  # not held by a leaked descriptor
        pass
