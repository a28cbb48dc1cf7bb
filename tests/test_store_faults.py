"""The store against careless operators and bad luck: path-like run ids, glob characters in the output
path, a damaged version index, and the leftovers of a run that died of a full disk.

Every test runs the real CLI in-process on the small inputs of tests/test_incremental.py and reads
the output back from the files themselves (os.walk and pyarrow; DuckDB globs would read `out[1]`
as a pattern too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileSystem

from pipeline.cli import main, new_run_id
from tests.test_incremental import make_inputs, run
from transforms.write import remove_staging

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

    from transforms.paths import validate_run_id

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
    from transforms.paths import DeleteOutsideFolderError

    _, output = store
    (output / "_staging" / "another-run").mkdir(parents=True)
    before = snapshot(output)
    with pytest.raises(DeleteOutsideFolderError):
        remove_staging(str(output), run_id)
    assert snapshot(output) == before and (output / "_staging" / "another-run").is_dir()


def test_the_guarded_delete_refuses_escaping_paths_and_symlinks(tmp_path: Path) -> None:
    from transforms.paths import DeleteOutsideFolderError, delete_inside

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
    from transforms.paths import escape_pattern

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
    assert main(["repair", str(output)]) == 0
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
