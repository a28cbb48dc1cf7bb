"""The schema module holds the README, the Arrow schemas and the partition keys together."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from transforms.schema import (
    ARTICLE_COLUMNS,
    ARTICLE_FIELDS,
    ARTICLE_SCHEMA,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_SCHEMA,
    DEFAULT_ARTICLE_PARTITION_KEYS,
    EXCERPT_CHARS,
    FEED_FETCH_COLUMNS,
    FEED_FETCH_SCHEMA,
    PARTITIONABLE_ARTICLE_KEYS,
    SCHEMA_VERSION,
    Column,
    Outcome,
    RunInfo,
    Stage,
    dead_letter,
    excerpt,
    markdown_table,
)

README = Path(__file__).resolve().parent.parent / "README.md"
DATASETS = {
    "articles": (ARTICLE_COLUMNS, ARTICLE_SCHEMA),
    "dead_letters": (DEAD_LETTER_COLUMNS, DEAD_LETTER_SCHEMA),
    "feed_fetches": (FEED_FETCH_COLUMNS, FEED_FETCH_SCHEMA),
}


def readme_table(dataset: str) -> str:
    """The first Markdown table after the README's `### \\`dataset\\`` heading."""
    text = README.read_text(encoding="utf-8")
    heading = re.search(rf"^### `{dataset}`\s*$", text, re.M)
    assert heading, f"README has no section for {dataset}"
    lines = text[heading.end() :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| column |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line.rstrip())
    return "\n".join(table)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_the_readme_documents_the_schema(dataset: str) -> None:
    columns, _schema = DATASETS[dataset]
    assert readme_table(dataset) == markdown_table(columns), (
        f"README's `{dataset}` table is out of step with transforms/schema.py; paste markdown_table() output"
    )


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_the_arrow_schema_follows_the_columns(dataset: str) -> None:
    columns, schema = DATASETS[dataset]
    assert schema.names == [c.name for c in columns]
    assert len(set(schema.names)) == len(schema.names)
    for column in columns:
        field = schema.field(column.name)
        assert field.type == column.type
        assert field.metadata == {b"meaning": column.meaning.encode()}
        assert column.meaning and not column.meaning.endswith(".")
    assert schema.metadata == {b"newsbeam.schema_version": str(SCHEMA_VERSION).encode()}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_timestamp_is_utc_microseconds(dataset: str) -> None:
    _columns, schema = DATASETS[dataset]
    timestamps = [f for f in schema if pa.types.is_timestamp(f.type)]
    assert timestamps
    for field in timestamps:
        assert field.type == pa.timestamp("us", tz="UTC"), field.name
    assert not any(pa.types.is_date(f.type) or pa.types.is_time(f.type) for f in schema)


def test_partition_keys_are_columns() -> None:
    assert DEFAULT_ARTICLE_PARTITION_KEYS[0] == "ingest_date"
    for key in (*DEFAULT_ARTICLE_PARTITION_KEYS, *PARTITIONABLE_ARTICLE_KEYS):
        assert key in ARTICLE_FIELDS
        assert ARTICLE_SCHEMA.field(key).type == pa.string()
    assert "ingest_date" not in PARTITIONABLE_ARTICLE_KEYS
    for schema in (DEAD_LETTER_SCHEMA, FEED_FETCH_SCHEMA):
        assert schema.field("ingest_date").type == pa.string()


def test_the_issue_columns_are_there() -> None:
    required = {
        "article_id", "source", "source_type", "source_domain", "feed_title", "url", "canonical_url",
        "title", "summary", "text", "authors", "tags", "published_at", "updated_at", "ingested_at",
        "language", "language_confidence", "language_declared", "language_source", "word_count",
        "content_hash", "run_id", "pipeline_version",
    }  # fmt: skip
    assert required <= set(ARTICLE_FIELDS)
    assert {"stage", "error_type", "message", "source", "excerpt", "run_id", "failed_at"} <= set(
        DEAD_LETTER_SCHEMA.names
    )
    assert {"source", "outcome", "entries", "articles_written", "duplicates", "dead_letters"} <= set(
        FEED_FETCH_SCHEMA.names
    )


def test_outcomes_are_documented() -> None:
    meaning = next(c.meaning for c in FEED_FETCH_COLUMNS if c.name == "outcome")
    assert meaning == ", ".join(str(o) for o in Outcome)
    stages = next(c.meaning for c in DEAD_LETTER_COLUMNS if c.name == "stage")
    assert stages.endswith(", ".join(str(s) for s in Stage))


def test_markdown_table() -> None:
    table = markdown_table((Column("a", pa.int16(), "An `a`"), Column("b", pa.list_(pa.string()), "B")))
    assert table == (
        "| column | type | meaning |\n|---|---|---|\n| `a` | `int16` | An `a` |\n"
        "| `b` | `list<item: string>` | B |"
    )


def test_excerpt_is_bounded_and_lenient() -> None:
    assert excerpt(None) is None
    assert excerpt("x" * 5000) == "x" * EXCERPT_CHARS
    assert excerpt(b"\xff\xfe caf\xc3\xa9") == "\ufffd\ufffd café"
    assert len(excerpt("é".encode() * 5000) or "") == EXCERPT_CHARS


def test_dead_letter_record_fits_its_schema() -> None:
    record = dead_letter(Stage.PARSE, "html_page", "m" * 5000, "f.xml", "feed", data=b"<html>")
    run = RunInfo("r1", datetime(2026, 11, 29, tzinfo=UTC), "0.1.0")
    stamped = run.stamp(record)
    assert set(stamped) == set(DEAD_LETTER_SCHEMA.names)
    assert stamped["stage"] == "parse" and len(stamped["message"]) == 1000
    assert stamped["excerpt"] == "<html>" and stamped["entry_ref"] is None
    assert stamped["failed_at"].tzinfo is not None
    assert (stamped["ingest_date"], stamped["run_id"]) == ("2026-11-29", "r1")
    table = pa.Table.from_pylist([stamped], schema=DEAD_LETTER_SCHEMA)
    assert table.num_rows == 1
