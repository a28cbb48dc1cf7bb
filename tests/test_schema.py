"""The schema module holds the README, the Arrow schemas and the partition keys together."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from transforms.schema import (
    ARTICLE_COLUMNS,
    ARTICLE_FIELDS,
    ARTICLE_SCHEMA,
    ARTICLES,
    CARRIED_KEYS,
    DATASETS,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_SCHEMA,
    DEAD_LETTERS,
    DEFAULT_ARTICLE_PARTITION_KEYS,
    EXCERPT_CHARS,
    FEED_FETCH_COLUMNS,
    FEED_FETCH_SCHEMA,
    FEED_FETCHES,
    PAGE_FETCH_COLUMNS,
    PAGE_FETCH_SCHEMA,
    PAGE_FETCHES,
    PARTITIONABLE_ARTICLE_KEYS,
    SCHEMA_VERSION,
    STORIES,
    STORY_COLUMNS,
    STORY_SCHEMA,
    Article,
    Column,
    DeadLetter,
    FeedFetch,
    Outcome,
    PageFetchRow,
    RunInfo,
    Stage,
    StoryRow,
    dead_letter,
    excerpt,
    markdown_table,
)

README = Path(__file__).resolve().parent.parent / "README.md"
TABLES = {
    "articles": (ARTICLE_COLUMNS, ARTICLE_SCHEMA),
    "dead_letters": (DEAD_LETTER_COLUMNS, DEAD_LETTER_SCHEMA),
    "feed_fetches": (FEED_FETCH_COLUMNS, FEED_FETCH_SCHEMA),
    "page_fetches": (PAGE_FETCH_COLUMNS, PAGE_FETCH_SCHEMA),
    "stories": (STORY_COLUMNS, STORY_SCHEMA),
}


RECORDS: dict[str, tuple[Any, tuple[Column, ...]]] = {
    "articles": (Article, ARTICLE_COLUMNS),
    "dead_letters": (DeadLetter, DEAD_LETTER_COLUMNS),
    "feed_fetches": (FeedFetch, FEED_FETCH_COLUMNS),
    "page_fetches": (PageFetchRow, PAGE_FETCH_COLUMNS),
    "stories": (StoryRow, STORY_COLUMNS),
}
# Which Arrow types hold a Python value of each annotated type.
ARROW_FAMILY: dict[Any, Callable[[pa.DataType], bool]] = {
    str: pa.types.is_string,
    int: pa.types.is_integer,
    float: pa.types.is_floating,
    datetime: pa.types.is_timestamp,
    list[str]: lambda t: pa.types.is_list(t) and pa.types.is_string(t.value_type),
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


@pytest.mark.parametrize("dataset", sorted(TABLES))
def test_the_readme_documents_the_schema(dataset: str) -> None:
    columns, _schema = TABLES[dataset]
    assert readme_table(dataset) == markdown_table(columns), (
        f"README's `{dataset}` table is out of step with transforms/schema.py; paste markdown_table() output"
    )


@pytest.mark.parametrize("dataset", sorted(TABLES))
def test_the_arrow_schema_follows_the_columns(dataset: str) -> None:
    columns, schema = TABLES[dataset]
    assert schema.names == [c.name for c in columns]
    assert len(set(schema.names)) == len(schema.names)
    for column in columns:
        field = schema.field(column.name)
        assert field.type == column.type
        assert field.metadata == {b"meaning": column.meaning.encode()}
        assert column.meaning and not column.meaning.endswith(".")
    assert schema.metadata == {b"newsbeam.schema_version": str(SCHEMA_VERSION).encode()}


@pytest.mark.parametrize("dataset", sorted(TABLES))
def test_every_timestamp_is_utc_microseconds(dataset: str) -> None:
    _columns, schema = TABLES[dataset]
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


def test_the_datasets_are_named_once() -> None:
    assert DATASETS == (ARTICLES, DEAD_LETTERS, FEED_FETCHES, PAGE_FETCHES, STORIES) == tuple(TABLES)


@pytest.mark.parametrize("dataset", sorted(RECORDS))
def test_the_typed_record_matches_the_columns(dataset: str) -> None:
    """Each column is a key of the record's TypedDict, of a Python type its Arrow type holds; the
    other keys are the few an article carries on its way and the writers leave out."""
    record_type, columns = RECORDS[dataset]
    hints = typing.get_type_hints(record_type)
    carried = CARRIED_KEYS if dataset == "articles" else frozenset()
    assert set(hints) - carried == {c.name for c in columns}
    assert carried <= set(hints)
    for column in columns:
        annotated = hints[column.name]
        if isinstance(annotated, types.UnionType):  # `X | None`: a nullable column of X
            (annotated,) = [a for a in typing.get_args(annotated) if a is not type(None)]
        assert ARROW_FAMILY[annotated](column.type), f"{column.name}: {annotated} in {column.type}"
