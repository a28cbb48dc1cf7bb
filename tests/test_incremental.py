"""Scheduled runs over the same feeds: nothing is written twice, a changed entry is a new version.

The end-to-end tests run the real CLI in-process on small inputs (two seed files and one RSS feed
written here) and read the output back with DuckDB and pyarrow. Helpers here are shared by
tests/test_crash.py and tests/test_maintenance.py.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from transforms.io.parquet import ParquetSettings, write_parquet
from transforms.io.staging import StagedFile
from transforms.io.versions import (
    INDEX_SCHEMA,
    StoredVersion,
    move_to_already_stored,
    next_version,
    reconcile_with_store,
    renumber_rows,
)
from transforms.schema import ARTICLE_COLUMNS, SCHEMA_VERSION

PROJECT = Path(__file__).resolve().parent.parent
SCHEMA_V0 = PROJECT / "tests" / "data" / "schema_v0"

LATEST_VERSION_SQL = """
SELECT * FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true, union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY article_id ORDER BY coalesce(version, 1) DESC) = 1
"""

BODIES = [
    "The city council approved the new budget for public libraries after a long debate on Tuesday evening.",
    "Farmers in the northern valley expect a record harvest of apples this autumn thanks to a mild spring.",
    "A new railway bridge across the river will open next month and shorten the journey by twenty minutes.",
    "Scientists at the university have published a study on how migrating birds find their way at night.",
]


def write_feed(path: Path, bodies: list[str]) -> None:
    """An RSS 2.0 feed with one item per body; item N always has the same link and guid."""
    published = format_datetime(datetime(2026, 11, 1, 9, 0, tzinfo=UTC))
    items = "".join(
        f"<item><title>Story number {n}</title><link>https://example.com/story/{n}</link>"
        f"<guid>story-{n}</guid><pubDate>{published}</pubDate><description>{body}</description></item>"
        for n, body in enumerate(bodies)
    )
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Test feed</title>'
        f"<link>https://example.com/</link><language>en</language>{items}</channel></rss>",
        encoding="utf-8",
    )


def make_inputs(folder: Path, bodies: list[str] | None = None) -> Path:
    """Two shipped seed files and one feed, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("000_c847d24acf547d54.txt", "001_de_strassenbahn-linie.txt"):
        shutil.copy(PROJECT / "seeds" / name, folder / name)
    write_feed(folder / "feed.xml", BODIES if bodies is None else bodies)
    return folder


def run(inputs: Path, output: Path, *extra: str) -> int:
    return main(["run", "--input", str(inputs), "--output", str(output), *extra])


def query(sql: str) -> list[dict[str, Any]]:
    connection = duckdb.connect()
    try:
        relation = connection.sql(sql)
        names = relation.columns
        return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
    finally:
        connection.close()


def articles(output: Path) -> list[dict[str, Any]]:
    """Every article row visible to DuckDB, as (article_id, version, content_hash) dicts."""
    if not (output / "articles").exists():
        return []
    return query(
        "SELECT article_id, coalesce(version, 1) AS version, content_hash FROM read_parquet("
        f"'{output}/articles/**/*.parquet', hive_partitioning = true, union_by_name = true) ORDER BY ALL"
    )


def fetch_rows(output: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    where = f"WHERE run_id = '{run_id}'" if run_id else ""
    return query(
        f"SELECT * FROM read_parquet('{output}/feed_fetches/**/*.parquet', hive_partitioning = true, "
        f"union_by_name = true) {where}"
    )


def manifests(output: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(p.read_text()) for p in sorted((output / "_runs").glob("*.json"))]


# --- pure rules -----------------------------------------------------------------------------------


def test_next_version_new_same_changed_and_newer() -> None:
    t1 = datetime(2026, 11, 1, tzinfo=UTC)
    t2 = datetime(2026, 11, 2, tzinfo=UTC)
    stored = StoredVersion("hash-a", t1, 3)
    assert next_version("hash-a", t1, None) == 1
    assert next_version("hash-a", t1, stored) == 0  # polled again
    assert next_version("hash-a", None, stored) == 0
    assert next_version("hash-a", t2, stored) == 4  # newer update time
    assert next_version("hash-b", t1, stored) == 4  # different content
    assert next_version("hash-a", datetime(2026, 10, 1, tzinfo=UTC), stored) == 0  # older: same article


def test_renumbering_drops_decided_zero_and_keeps_the_undecided() -> None:
    table = pa.table({"article_id": ["a", "b", "c", "d"], "version": pa.array([1, 1, 1, 1], pa.int32())})
    kept = renumber_rows(table, [0, None, 3, None])
    assert kept.to_pylist() == [
        {"article_id": "b", "version": 1},
        {"article_id": "c", "version": 3},
        {"article_id": "d", "version": 1},
    ]
    assert kept.schema == table.schema
    assert renumber_rows(table, [0, 0, 0, 0]).num_rows == 0


def test_moving_dropped_entries_to_already_stored() -> None:
    fetches = pa.table({"source": ["s1", "s2"], "articles_written": [2, 1], "already_stored": [0, 0]})
    moved = move_to_already_stored(fetches, {"s1": 1}).to_pylist()
    assert moved == [
        {"source": "s1", "articles_written": 1, "already_stored": 1},
        {"source": "s2", "articles_written": 1, "already_stored": 0},
    ]


def test_dropped_entries_move_once_for_a_source_with_several_fetch_rows() -> None:
    """The same input listed twice: its counts are on one row, zeros on the other, and the entries
    dropped at the commit move on the row that counted them, not on both (which doubled them)."""
    fetches = pa.table(
        {"source": ["s1", "s1", "s2"], "articles_written": [0, 3, 1], "already_stored": [0, 0, 0]}
    )
    moved = move_to_already_stored(fetches, {"s1": 2}).to_pylist()
    assert moved == [
        {"source": "s1", "articles_written": 0, "already_stored": 0},
        {"source": "s1", "articles_written": 1, "already_stored": 2},
        {"source": "s2", "articles_written": 1, "already_stored": 0},
    ]


def test_reconciling_with_a_run_committed_meanwhile_keeps_the_runs_parquet_settings(tmp_path: Path) -> None:
    """Another run stored `a` (same content) and `b` (older) after this run read the index: the
    commit drops `a`, renumbers `b` and rewrites the staged files with the run's own settings."""
    output = str(tmp_path / "out")
    settings = ParquetSettings(compression="gzip", compression_level=9, row_group_size=2)
    day = datetime(2026, 11, 29, tzinfo=UTC)
    ids = ["a", "b", "c", "d", "e"]
    index_rows = [
        {"article_id": i, "content_hash": f"h-{i}", "updated_at": day, "version": 1, "run_id": "r2"}
        for i in ids
    ]
    committed = pa.Table.from_pylist(
        [index_rows[0] | {"run_id": "r1"}, index_rows[1] | {"content_hash": "h-old", "run_id": "r1"}],
        schema=INDEX_SCHEMA,
    )
    write_parquet(committed, f"{output}/_state/articles/part-r1.parquet", ParquetSettings())
    staging = f"{output}/_staging/r2"

    def staged(dataset: str, partition: str, table: pa.Table) -> StagedFile:
        path = f"{staging}/{dataset}/{partition}/part-r2.parquet"
        write_parquet(table, path, settings)
        return StagedFile(
            dataset, partition, path, f"{output}/{dataset}/{partition}/part-r2.parquet", len(table)
        )

    articles = pa.table(
        {"article_id": ids, "version": pa.array([1] * 5, pa.int32()), "source": ["s1"] * 5, "text": ids}
    )
    fetches = pa.table({"source": ["s1"], "articles_written": [5], "already_stored": [0]})
    files = [
        staged("articles", "ingest_date=2026-11-29", articles),
        staged("_state/articles", "", pa.Table.from_pylist(index_rows, schema=INDEX_SCHEMA)),
        staged("feed_fetches", "ingest_date=2026-11-29", fetches),
    ]

    reconciled, changed = reconcile_with_store(output, files, [], settings)

    assert changed == 2
    by_dataset = {f.dataset: f for f in reconciled}
    rewritten = pq.read_table(by_dataset["articles"].staged_path)
    assert rewritten.select(["article_id", "version"]).to_pylist() == [
        {"article_id": "b", "version": 2},
        *({"article_id": i, "version": 1} for i in "cde"),
    ]
    assert pq.read_table(by_dataset["feed_fetches"].staged_path).to_pylist() == [
        {"source": "s1", "articles_written": 4, "already_stored": 1}
    ]
    for dataset in ("articles", "_state/articles", "feed_fetches"):
        metadata = pq.ParquetFile(by_dataset[dataset].staged_path).metadata
        assert metadata.row_group(0).column(0).compression == "GZIP", dataset
    assert (
        pq.ParquetFile(by_dataset["articles"].staged_path).metadata.num_row_groups == 2
    )  # 4 rows, 2 a group


# --- runs -----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_same_inputs_twice_then_one_changed_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs, output = make_inputs(tmp_path / "in"), tmp_path / "out"
    assert run(inputs, output, "--run-id", "r1") == 0
    first = articles(output)
    assert len(first) == 2 + len(BODIES)
    assert {row["version"] for row in first} == {1}

    capsys.readouterr()
    assert run(inputs, output, "--run-id", "r2") == 0
    report = capsys.readouterr().out
    assert "articles written:  0" in report
    assert f"already stored:    {len(first)} " in report
    assert articles(output) == first  # the second run adds nothing
    second = fetch_rows(output, "r2")
    assert len(second) == 3
    for row in second:
        assert row["articles_written"] == 0
        assert (
            row["entries"]
            == row["articles_written"] + row["duplicates"] + row["dead_letters"] + (row["already_stored"])
        )
    assert sum(row["already_stored"] for row in second) == len(first)
    r2 = next(m for m in manifests(output) if m["run_id"] == "r2")
    assert r2["status"] == "committed" and "articles" not in r2["counts"]

    changed = [*BODIES]
    changed[2] = (
        "The railway bridge opening has been postponed until spring because of a late delivery of steel."
    )
    write_feed(inputs / "feed.xml", changed)
    assert run(inputs, output, "--run-id", "r3") == 0
    after = articles(output)
    assert len(after) == len(first) + 1  # exactly one new version
    new = [row for row in after if row not in first]
    assert len(new) == 1 and new[0]["version"] == 2
    assert sum(row["articles_written"] for row in fetch_rows(output, "r3")) == 1

    latest = query(LATEST_VERSION_SQL.format(output=output))
    assert len(latest) == len(first)  # one row per article id
    bridge = [row for row in latest if row["url"] == "https://example.com/story/2"]
    assert bridge[0]["version"] == 2 and "postponed" in bridge[0]["text"]
    assert bridge[0]["schema_version"] == SCHEMA_VERSION


@pytest.mark.e2e
def test_rerun_of_a_committed_run_id_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, output = make_inputs(tmp_path / "in"), tmp_path / "out"
    assert run(inputs, output, "--run-id", "same") == 0
    before = (articles(output), fetch_rows(output))
    capsys.readouterr()
    assert run(inputs, output, "--run-id", "same") == 0
    assert "already committed" in capsys.readouterr().out
    assert (articles(output), fetch_rows(output)) == before
    assert [m["run_id"] for m in manifests(output)] == ["same"]


# --- schema evolution -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_old_schema_files_read_together_with_new_ones(tmp_path: Path) -> None:
    inputs, output = make_inputs(tmp_path / "in"), tmp_path / "out"
    assert run(inputs, output) == 0
    shutil.copytree(SCHEMA_V0 / "articles", output / "articles", dirs_exist_ok=True)
    new_rows = 2 + len(BODIES)

    rows = query(
        "SELECT article_id, schema_version, version, ingest_date FROM read_parquet("
        f"'{output}/articles/**/*.parquet', hive_partitioning = true, union_by_name = true)"
    )
    old = [r for r in rows if r["schema_version"] == 1]
    assert len(old) == 3 and len(rows) == 3 + new_rows
    assert {r["version"] for r in old} == {None}  # read as 1 by the latest-version query
    assert {str(r["ingest_date"]) for r in old} == {"2026-01-15"}
    assert len(query(LATEST_VERSION_SQL.format(output=output))) == 3 + new_rows

    partition_keys = ("ingest_date", "language")
    file_schema = pa.schema(
        [pa.field(c.name, c.type) for c in ARTICLE_COLUMNS if c.name not in partition_keys]
    )
    partitioning = ds.partitioning(
        pa.schema([pa.field("ingest_date", pa.string()), pa.field("language", pa.string())]), flavor="hive"
    )
    table = ds.dataset(output / "articles", schema=file_schema, partitioning=partitioning).to_table()
    assert table.num_rows == 3 + new_rows
    by_version = table.group_by("schema_version").aggregate([("article_id", "count")]).to_pylist()
    assert sorted((r["schema_version"], r["article_id_count"]) for r in by_version) == [
        (1, 3),
        (SCHEMA_VERSION, new_rows),
    ]
