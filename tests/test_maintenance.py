"""`newsbeam compact` and `newsbeam prune`: rows unchanged (compared before and after), readers safe.

The output is made by real runs (tests/test_incremental.py's small inputs) plus the schema 1
fixture, so compaction also merges files of two schema versions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.maintenance import MaintenanceError, compact, empty_trash, merge_files, parse_age, prune
from tests.test_incremental import BODIES, SCHEMA_V0, articles, make_inputs, query, run, write_feed
from transforms.io.lock import CommitLock
from transforms.io.parquet import ParquetSettings
from transforms.io.story_index import index_buckets
from transforms.io.versions import list_index_files

PROJECT = Path(__file__).resolve().parent.parent
TODAY = datetime.now(UTC).date()

pytestmark = pytest.mark.e2e


def all_rows(output: Path, dataset: str) -> list[str]:
    """Every row of a dataset, all columns, as sorted text: equal lists mean equal contents."""
    if not parquet_files(output / dataset):
        return []
    rows = query(
        f"SELECT * FROM read_parquet('{output}/{dataset}/**/*.parquet', hive_partitioning = true, "
        "union_by_name = true)"
    )
    return sorted(repr(sorted(row.items())) for row in rows)


def parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet"))


@pytest.fixture(scope="module")
def made_by_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three runs that each add to the same partitions, and one schema 1 file among them."""
    root = tmp_path_factory.mktemp("maintenance")
    inputs, output = make_inputs(root / "in"), root / "out"
    assert run(inputs, output, "--run-id", "r1") == 0
    write_feed(
        inputs / "feed.xml",
        [*BODIES, "Harbour workers repaired the old lighthouse before the winter storms."],
    )
    assert run(inputs, output, "--run-id", "r2") == 0
    write_feed(
        inputs / "feed.xml", [*BODIES, "A choir of two hundred children sang in the cathedral on Sunday."]
    )
    assert run(inputs, output, "--run-id", "r3") == 0
    old = next(SCHEMA_V0.rglob("*.parquet"))
    shutil.copy(old, output / "articles" / f"ingest_date={TODAY}" / "language=en" / old.name)
    return inputs, output


@pytest.fixture
def several_runs(made_by_runs: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `made_by_runs` for one test to change."""
    inputs, output = tmp_path / "in", tmp_path / "out"
    shutil.copytree(made_by_runs[0], inputs)
    shutil.copytree(made_by_runs[1], output)
    return inputs, output


def test_parse_age() -> None:
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age("36h") == timedelta(hours=36)
    with pytest.raises(MaintenanceError, match="'90 days' is not a duration"):
        parse_age("90 days")


def test_compact_merges_files_without_changing_rows(several_runs: tuple[Path, Path]) -> None:
    inputs, output = several_runs
    english = output / "articles" / f"ingest_date={TODAY}" / "language=en"
    datasets = ("articles", "dead_letters", "feed_fetches")
    before = {d: all_rows(output, d) for d in datasets}
    assert len(before["articles"]) == 2 + 4 + 2 + 3  # seeds, stories, two more, the schema 1 rows
    assert len(parquet_files(english)) == 4
    assert len(list_index_files(str(output))) == 3
    opened = pq.ParquetFile(parquet_files(english)[0])  # a reader that opened a file before
    story_files = len(parquet_files(output / "stories"))  # r1 and r3 stored new articles (r2 a version)
    story_buckets = [files for _, _, files in index_buckets(str(output)) if len(files) >= 2]
    assert story_files == 2 and story_buckets

    report = compact(str(output))

    assert {d: all_rows(output, d) for d in datasets} == before
    assert len(parquet_files(english)) == 1
    assert len(parquet_files(output / "feed_fetches")) == 1
    # The partitions' files, the version index's and the story index's deltas, each merged into one.
    assert report.files_before == 4 + 3 + 3 + story_files + sum(map(len, story_buckets))
    assert report.files_after == 3 + 1 + len(story_buckets)
    assert opened.read().num_rows > 0  # its file is in the trash, still readable
    assert len(list_index_files(str(output))) == 1
    trash = output / "_trash"
    band_deltas = list(trash.rglob("*.arrow"))  # the story index's band deltas are Arrow files
    assert len(parquet_files(trash)) + len(band_deltas) == report.files_before and band_deltas

    assert run(inputs, output, "--run-id", "r4") == 0  # the merged index still knows every article
    assert all_rows(output, "articles") == before["articles"]

    assert empty_trash(str(output), timedelta(hours=1)) == 0  # within the grace period
    assert empty_trash(str(output), timedelta(0)) == 1
    assert not parquet_files(trash) and not list(trash.rglob("*.arrow"))
    assert all_rows(output, "articles") == before["articles"]


def test_prune_removes_only_old_partitions(several_runs: tuple[Path, Path]) -> None:
    inputs, output = several_runs
    shutil.copytree(SCHEMA_V0 / "articles", output / "articles", dirs_exist_ok=True)
    before = all_rows(output, "articles")
    old = [row for row in before if "('ingest_date', datetime.date(2026, 1, 15))" in row]
    assert len(old) == 3

    report = prune(
        str(output), timedelta(days=90), today=date(2026, 11, 29) if date(2026, 4, 15) > TODAY else TODAY
    )

    assert report.partitions == 1
    assert all_rows(output, "articles") == sorted(set(before) - set(old))
    assert not (output / "articles" / "ingest_date=2026-01-15").exists()
    fetches = all_rows(output, "feed_fetches")

    assert main(["prune", "--output", str(output), "--older-than", "90d"]) == 0  # nothing more is old
    assert all_rows(output, "feed_fetches") == fetches
    assert all_rows(output, "articles") == sorted(set(before) - set(old))

    later = TODAY + timedelta(days=100)
    prune(str(output), timedelta(days=90), today=later)
    assert all_rows(output, "articles") == [] and all_rows(output, "feed_fetches") == []
    assert list_index_files(str(output)) == []  # the seen-set forgets what was pruned
    assert run(inputs, output, "--run-id", "again") == 0
    assert {row["version"] for row in articles(output)} == {1}
    assert len(articles(output)) == 2 + 4 + 1


def test_compact_killed_inside_its_commit_is_rolled_forward(
    several_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, output = several_runs
    before = all_rows(output, "articles")
    marker = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "compact", "--output", str(output)],
        cwd=PROJECT,
        env={**os.environ, "NEWSBEAM_PAUSE_AT": "compact.publish.1", "NEWSBEAM_PAUSE_MARKER": str(marker)},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.communicate()[0].decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert marker.read_text().startswith("compact.publish.1")
    exposed: list[Any] = all_rows(output, "articles")  # the exposure window: the merged file is in
    assert set(exposed) == set(before) and len(exposed) > len(before)

    assert main(["compact", "--output", str(output)]) == 0  # rolls the first one forward, then compacts
    assert all_rows(output, "articles") == before


def test_merge_files_splits_and_keeps_rows_of_mixed_schemas(tmp_path: Path) -> None:
    old = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    new = pa.table(
        {"a": [4, 5, 6, 7, 8], "b": ["p", "q", "r", "s", "t"], "c": [True, False, None, True, True]}
    )
    paths = []
    for number, table in enumerate((old, new)):
        paths.append(str(tmp_path / f"in-{number}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=2)
    made = merge_files(paths, str(tmp_path / "merged"), "part-test", ParquetSettings(), rows_per_file=3)
    assert [rows for _, _, rows in made] == [3, 3, 2]
    merged = pa.concat_tables([pq.read_table(path) for path, _, _ in made])
    assert merged.column("a").to_pylist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert merged.column("c").to_pylist() == [None, None, None, True, False, None, True, True]


def test_maintenance_waits_for_the_commit_lock_and_names_its_holder(
    several_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, output = several_runs
    before = all_rows(output, "articles")
    with CommitLock(str(output), "a long commit"):
        assert main(["compact", "--output", str(output), "--lock-timeout", "0.3"]) == 3
    message = capsys.readouterr().err
    assert f"held by a long commit (pid {os.getpid()} on " in message and "try again" in message
    assert all_rows(output, "articles") == before
    assert main(["compact", "--output", str(output)]) == 0  # free again
    assert all_rows(output, "articles") == before
