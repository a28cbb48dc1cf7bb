"""Partition paths that no input can escape, and records to Arrow tables with UTC microsecond times."""

from __future__ import annotations

import os
import posixpath
import unicodedata
import weakref
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import sql
from transforms.io.commit import without_source_counts
from transforms.io.parquet import ParquetSettings, records_to_table
from transforms.io.paths import (
    MAX_PARTITION_SEGMENT_BYTES,
    NULL_PARTITION,
    child,
    escape_partition_value,
    join_path,
    partition_path,
)
from transforms.io.staging import CONVERT_EVERY, StagedFile, StagingTarget, _StageFilesFn
from transforms.schema import ARTICLE_SCHEMA, DEAD_LETTER_SCHEMA, TIMESTAMP

HOSTILE = [
    "../",
    "../../etc",
    "..",
    ".",
    "/",
    "/etc/passwd",
    "a/b",
    "%2F",
    "..%2F..%2Fx",
    "\\..\\windows",
    ".hidden",
    "a\x00b",
    "line\nbreak",
    "key=value",
    "C:\\temp",
    "~user",
    "*?[]",
    "日本語",
    "a\u202eb",  # a right-to-left override
    "a\u2028b",  # a line separator
    "a\uff0fb",  # a fullwidth solidus
    "a\u2215b",  # a division slash
    "\u200d",  # a zero-width joiner
    "x" * 1000,
    "д" * 1000,
]


def _kept_raw(ch: str) -> bool:
    return ch.isascii() or unicodedata.category(ch)[0] in "LMN"


@pytest.mark.parametrize("value", HOSTILE)
def test_an_escaped_value_is_one_safe_segment(value: str) -> None:
    escaped = escape_partition_value(value)
    assert escaped not in ("", ".", "..")
    assert not escaped.startswith(".")
    assert "/" not in escaped and "\\" not in escaped and "\x00" not in escaped and "\n" not in escaped
    assert "=" not in escaped
    assert len(escaped.encode("utf-8")) <= MAX_PARTITION_SEGMENT_BYTES
    assert all(_kept_raw(ch) for ch in escaped)  # letters, marks, digits of any script; all else %XX


@pytest.mark.parametrize("value", HOSTILE)
def test_no_value_writes_outside_the_dataset(tmp_path: Path, value: str) -> None:
    dataset = tmp_path / "out" / "articles"
    path = dataset / partition_path(
        {"ingest_date": "2026-11-29", "language": value}, ("ingest_date", "language")
    )
    resolved = Path(os.path.normpath(path))
    assert resolved.parent.parent == dataset
    assert posixpath.normpath(partition_path({"language": value}, ("language",))).count("/") == 0
    resolved.mkdir(parents=True)  # a real folder can be made with this name
    assert [p.name for p in dataset.iterdir()] == ["ingest_date=2026-11-29"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("en", "en"),
        ("example.com", "example.com"),
        ("../", "%2E.%2F"),
        ("/", "%2F"),
        ("%2F", "%252F"),
        (".", "%2E"),
        ("..", "%2E."),
        ("a b", "a%20b"),
        ("日本", "日本"),
        ("日本 語", "日本%20語"),
        ("a\u202eb", "a%E2%80%AEb"),
        ("a\uff0fb", "a%EF%BC%8Fb"),
        ("", NULL_PARTITION),
        (None, NULL_PARTITION),
        (42, "42"),
    ],
)
def test_hive_escapes(value: object, expected: str) -> None:
    assert escape_partition_value(value) == expected


@pytest.mark.parametrize(
    "value", ["en", "a b", "%2F", "../x", "日本語", "key=value", "C:\\temp", "a\u202eb", "é" * 120]
)
def test_short_values_round_trip(value: str) -> None:
    assert unquote(escape_partition_value(value)) == value


@pytest.mark.parametrize("unit", ["x", "~", "é", "日本", "a~"])
def test_very_long_values_are_bounded_distinct_and_decodable(unit: str) -> None:
    first = unit * 300 + "1"
    second = unit * 300 + "2"
    one, two = escape_partition_value(first), escape_partition_value(second)
    assert (
        len(one.encode()) <= MAX_PARTITION_SEGMENT_BYTES and len(two.encode()) <= MAX_PARTITION_SEGMENT_BYTES
    )
    assert one != two
    assert escape_partition_value(first) == one  # stable
    head, _, digest = one.rpartition("~")
    assert len(digest) == 16
    # the truncated head never splits an escape or a multi-byte character
    decoded = unquote(head, errors="strict")
    assert first.startswith(decoded)
    assert "\ufffd" not in decoded


def test_partition_path() -> None:
    record = {"ingest_date": "2026-11-29", "language": "en", "source_domain": None}
    assert partition_path(record, ("ingest_date", "language")) == "ingest_date=2026-11-29/language=en"
    assert (
        partition_path(record, ("ingest_date", "source_domain"))
        == f"ingest_date=2026-11-29/source_domain={NULL_PARTITION}"
    )


def test_records_to_table_round_trips_through_parquet(tmp_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    records: list[dict[str, Any]] = [
        {
            "article_id": "a" * 32,
            "source": "feed.xml",
            "title": "Café",
            "authors": ["Ann", "Bo"],
            "tags": [],
            "published_at": datetime(2024, 3, 4, 9, 15, 0, 123456, tzinfo=plus_two),
            "published_offset_minutes": 120,
            "ingested_at": datetime(2026, 11, 29, 8, 30, tzinfo=UTC),
            "language_confidence": 0.75,
            "word_count": 12,
            "schema_version": 1,
            "not_a_column": "ignored",
        },
        {"article_id": "b" * 32, "source": "s.txt", "authors": None, "published_at": None},
    ]
    table = records_to_table(records, ARTICLE_SCHEMA)
    assert table.schema.equals(ARTICLE_SCHEMA, check_metadata=False)
    assert "not_a_column" not in table.column_names
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    back = pq.read_table(path)
    assert back.schema.field("published_at").type == pa.timestamp("us", tz="UTC")
    assert back.schema.field("ingested_at").type == TIMESTAMP
    rows = back.to_pylist()
    assert rows[0]["published_at"] == datetime(2024, 3, 4, 7, 15, 0, 123456, tzinfo=UTC)
    assert rows[0]["published_at"].tzinfo is not None
    assert rows[0]["ingested_at"] == datetime(2026, 11, 29, 8, 30, tzinfo=UTC)
    assert rows[0]["authors"] == ["Ann", "Bo"]
    assert rows[0]["title"] == "Café"
    assert rows[0]["language_confidence"] == pytest.approx(0.75)
    assert rows[1]["published_at"] is None and rows[1]["authors"] is None and rows[1]["title"] is None


def test_records_to_table_rejects_a_wrong_type() -> None:
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        records_to_table([{"stage": "read", "failed_at": "yesterday"}], DEAD_LETTER_SCHEMA)


def test_a_full_writer_buffer_writes_its_largest_partition(tmp_path: Path) -> None:
    """The writer holds at most `max_buffered_rows` records; full, it writes the partition with the most."""
    schema = pa.schema([pa.field("language", pa.string()), pa.field("source", pa.string())])
    target = StagingTarget(
        str(tmp_path), "articles", schema, ("language",), "run", ParquetSettings(max_buffered_rows=5)
    )
    fn = _StageFilesFn(target)
    fn.start_bundle()
    languages = ["en", "en", "fr", "en", "de", "en", "en", "en", "fr", "en", "en", "en", "en", "en", "en"]
    staged: list[StagedFile] = []
    for language in languages:
        staged += [
            s for s in fn.process({"language": language, "source": "feed"}) if isinstance(s, StagedFile)
        ]
        assert fn._buffered < 5
    staged += [s.value for s in fn.finish_bundle()]
    assert [(s.partition, s.rows) for s in staged] == [
        ("language=en", 3),  # full at the 5th record (en 3, fr 1, de 1)
        ("language=en", 3),  # full at the 8th
        ("language=fr", 2),  # full at the 11th: en 2, fr 2 (the first of equals)
        ("language=en", 4),  # full at the 13th
        ("language=de", 1),  # the end of the bundle writes every partition left
        ("language=en", 2),
    ]
    assert sum(pq.read_table(s.staged_path).num_rows for s in staged) == len(languages)


class _Record(dict[str, Any]):
    """A record the test can hold a weak reference to (plain dicts take none)."""


def test_the_writer_holds_its_buffer_in_arrow_not_as_the_records_given(tmp_path: Path) -> None:
    """Buffered records become Arrow rows `CONVERT_EVERY` at a time per partition (an article takes
    ~11 KB as a dict, ~4 KB in Arrow): the writer keeps no more of the dicts it was given, and writes
    the same rows in the same order."""
    schema = pa.schema(
        [pa.field("language", pa.string()), pa.field("source", pa.string()), pa.field("text", pa.string())]
    )
    target = StagingTarget(str(tmp_path), "articles", schema, ("language",), "run", ParquetSettings())
    fn = _StageFilesFn(target)
    fn.start_bundle()
    given = 3 * CONVERT_EVERY + 7
    alive = []
    for n in range(given):
        record = _Record(language="en" if n % 4 else "fr", source=f"feed-{n % 3}", text=f"text {n}")
        alive.append(weakref.ref(record))
        assert list(fn.process(record)) == []  # far from `max_buffered_rows`: nothing written yet
        del record
    # Two partitions, each holding fewer than `CONVERT_EVERY` dicts not yet converted (all 1,507 before).
    assert sum(ref() is not None for ref in alive) <= 2 * (CONVERT_EVERY - 1)
    staged = [s.value for s in fn.finish_bundle()]
    assert sorted((s.partition, s.rows) for s in staged) == [
        ("language=en", given - len(range(0, given, 4))),
        ("language=fr", len(range(0, given, 4))),
    ]
    for s in staged:
        language = s.partition.removeprefix("language=")
        expected = [n for n in range(given) if (language == "fr") == (n % 4 == 0)]
        assert pq.read_table(s.staged_path).column("text").to_pylist() == [f"text {n}" for n in expected]
        assert s.rows_per_source == {f"feed-{k}": sum(n % 3 == k for n in expected) for k in range(3)}


def test_a_whole_segment_with_its_key_fits_the_filesystems_name_limit(tmp_path: Path) -> None:
    fits, too_long = "a" * (MAX_PARTITION_SEGMENT_BYTES - len("source_domain=")), "д" * 200
    assert partition_path({"source_domain": fits}, ("source_domain",)) == f"source_domain={fits}"
    segment = partition_path({"source_domain": too_long}, ("source_domain",))
    assert len(segment.encode()) <= MAX_PARTITION_SEGMENT_BYTES and "~" in segment
    (tmp_path / segment).mkdir()  # the filesystem takes the name


CYRILLIC_HOST = "мвд.министерство-образования-и-науки-российской-федерации.рф"


@pytest.mark.e2e
def test_a_long_idn_host_reads_back_exactly_from_its_partition_folder(tmp_path: Path) -> None:
    """`source_domain` lives only in the folder names: DuckDB and pyarrow.dataset must decode the host."""
    import pyarrow.dataset as ds

    from pipeline.cli import main
    from tests.test_incremental import write_feed

    assert len(CYRILLIC_HOST) == 60
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    write_feed(inputs / "feed.xml", ["Учёные описали, как перелётные птицы находят дорогу ночью над морем."])
    feed = (inputs / "feed.xml").read_text(encoding="utf-8")
    (inputs / "feed.xml").write_text(feed.replace("example.com", CYRILLIC_HOST), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"output: {output}\ninputs: [{inputs}]\npartition_by: [source_domain]\n", encoding="utf-8"
    )

    assert main(["run", "--config", str(config)]) == 0

    glob = f"{output}/articles/**/*.parquet"
    read_back = sql(f"SELECT source_domain FROM read_parquet('{glob}', hive_partitioning = true)")
    assert read_back.fetchall() == [(CYRILLIC_HOST,)]
    dataset = ds.dataset(output / "articles", format="parquet", partitioning="hive")
    assert dataset.to_table(columns=["source_domain"]).column("source_domain").to_pylist() == [CYRILLIC_HOST]


# --- one joiner -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("gs://b/out", "/abs"), "gs://b/out/abs"),
        (("s3://b/out", "/abs"), "s3://b/out/abs"),
        (("/data/out", "/abs"), "/data/out/abs"),
        (("gs://b/out/", "_staging/", "r1"), "gs://b/out/_staging/r1"),
        (
            ("s3://b/out", "_state/articles", "", "part-1.parquet"),
            "s3://b/out/_state/articles/part-1.parquet",
        ),
        (("/data/out/", "articles", "", "part-1.parquet"), "/data/out/articles/part-1.parquet"),
        (("out", "articles"), "out/articles"),
        (("/", "data"), "/data"),
        (("gs://b/out",), "gs://b/out"),
    ],
)
def test_one_joiner_for_local_folders_and_object_stores(parts: tuple[str, ...], expected: str) -> None:
    assert join_path(*parts) == expected


@pytest.mark.parametrize("folder", ["gs://b/out", "s3://b/out/", "/data/out", "/data/out/", "out"])
def test_child_and_join_path_agree(folder: str) -> None:
    assert child(folder, "r1") == join_path(folder, "r1")


def test_the_commit_gathers_staged_files_without_their_rows_per_source() -> None:
    """The rows per source are counted before the commit and never published: the one gathered
    list of every staged file of the run does not carry them."""
    staged = StagedFile("articles", "language=en", "s/part.parquet", "f/part.parquet", 3, {"a": 2, "b": 1})
    gathered = without_source_counts(staged)
    assert gathered.rows_per_source == {}
    assert replace(gathered, rows_per_source=staged.rows_per_source) == staged
