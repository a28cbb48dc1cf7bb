"""The de-duplication refs spilled to staging and decided in hash buckets (transforms/dedupe.py).

The refs no longer wait in the runner's memory: each staged file's refs go to a Parquet file of
their own, and the decision reads them back bucket by bucket. These tests hold the two ends
together: the refs read back are the refs written, and any number of buckets decides exactly as
one bucket does, against an empty store and against stored versions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.combiners import Count

import transforms.dedupe
from tests.test_composites import StageAndDeduplicate, enriched, pipeline, winners
from transforms.dedupe import REFS_DIR, SpillRefs, article_ref, bucket_of, refs_of_table, refs_table
from transforms.io.versions import INDEX_SCHEMA, renumber_rows


def test_refs_read_back_from_their_table_are_the_refs_written() -> None:
    articles = [
        {
            **enriched("feed-a", "id-1", None),
            "published_at": None,
        },  # no time at all: the rank starts with -inf
        enriched("feed-b", "id-2", datetime(2024, 3, 5, 12, 30, 1, 123456, tzinfo=UTC), text="Ünïcode ✓"),
        {**enriched("feed-c", "id-3", None), "content_hash": None, "ordinal": 7, "ingest_date": None},
    ]
    refs = [
        article_ref(a, "gs://bucket/out/_staging/r/articles/part-1.parquet", n)
        for n, a in enumerate(articles)
    ]
    assert refs_of_table(refs_table(refs)) == refs
    assert refs[0].rank[0] == float("-inf")


def test_spilled_refs_lie_in_the_runs_staging_one_file_per_staged_file(tmp_path: Path) -> None:
    spill = SpillRefs(str(tmp_path / "out"), "run-1")
    articles = [enriched("feed-a", "id-1", None), enriched("feed-b", "id-2", None)]
    staged = str(tmp_path / "out" / "_staging" / "run-1" / "articles" / "ingest_date=x" / "part-9.parquet")
    path, count = spill(articles, staged)
    assert (count, Path(path)) == (2, tmp_path / "out" / "_staging" / "run-1" / REFS_DIR / "part-9.parquet")
    assert refs_of_table(pq.read_table(path)) == [article_ref(a, staged, n) for n, a in enumerate(articles)]


def test_buckets_are_stable_and_spread_the_ids() -> None:
    ids = [f"id-{n}" for n in range(1000)]
    assert bucket_of(ids, 7) == bucket_of(list(ids), 7)  # crc32: the same in every worker process
    assert set(bucket_of(ids, 7)) == set(range(7))
    assert bucket_of(ids, 1) == [0] * 1000


def many_articles() -> list[dict[str, Any]]:
    """40 ids, most seen from two or three feeds, so that losers and winners fall in every bucket."""
    articles = []
    for n in range(40):
        articles.append(enriched("feed-a", f"id-{n}", None))
        if n % 2 == 0:
            articles.append(enriched("feed-b", f"id-{n}", datetime(2024, 3, 5, tzinfo=UTC)))  # newer: wins
        if n % 3 == 0:
            articles.append(enriched("feed-c", f"id-{n}", None, text="A longer body than feed-a's."))
    return articles


def expected_winners() -> list[tuple[str, str, int]]:
    result = []
    for n in range(40):
        source = "feed-b" if n % 2 == 0 else "feed-c" if n % 3 == 0 else "feed-a"
        version = 1
        if n == 5:  # stored before with another hash: a new version
            version = 4
        if n != 7:  # stored before unchanged: not written again
            result.append((f"id-{n}", source, version))
    return result


@pytest.mark.parametrize("bucket_rows", [1, 7, 50_000])
def test_any_number_of_buckets_decides_as_one_bucket_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket_rows: int
) -> None:
    monkeypatch.setattr(transforms.dedupe, "BUCKET_ROWS", bucket_rows)
    output = tmp_path / "out"
    index = output / "_state" / "articles"
    index.mkdir(parents=True)
    stored = [
        {"article_id": "id-5", "content_hash": "h-old", "updated_at": None, "version": 3},
        {"article_id": "id-7", "content_hash": "h-feed-a", "updated_at": None, "version": 1},
        {"article_id": "elsewhere", "content_hash": "h", "updated_at": None, "version": 1},
    ]
    pq.write_table(
        pa.Table.from_pylist(
            [row | {"run_id": "earlier", "ingest_date": "2026-11-28"} for row in stored], schema=INDEX_SCHEMA
        ),
        index / "part-earlier.parquet",
    )
    articles = many_articles()
    winners_expected = expected_winners()
    losers = len(articles) - 40
    with pipeline() as p:
        deduplicated = p | beam.Create(articles) | StageAndDeduplicate(str(output), ("ingest_date",))
        assert_that(
            deduplicated.files | "Winners" >> beam.FlatMap(lambda f: winners(f.staged_path)),
            equal_to(winners_expected),
            label="Winners",
        )
        assert_that(
            deduplicated.duplicates | "CountLosers" >> Count.Globally(),
            equal_to([losers]),
            label="Losers",
        )
        assert_that(
            deduplicated.already_stored,
            equal_to([{"source": "feed-a", "article_id": "id-7"}]),
            label="AlreadyStored",
        )
        assert_that(
            deduplicated.index_rows | "IndexRows" >> beam.Map(lambda r: (r["article_id"], r["version"])),
            equal_to([(article_id, version) for article_id, _source, version in winners_expected]),
            label="IndexRows",
        )
        assert_that(
            deduplicated.store_snapshot | "Snapshot" >> beam.Map(lambda files: [Path(f).name for f in files]),
            equal_to([["part-earlier.parquet"]]),
            label="Snapshot",
        )


def test_edits_applied_a_batch_at_a_time_give_the_whole_files_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edit of a staged file reads it a batch at a time (memory: one batch and the kept rows, not the
    file twice); rows, order, versions and schema (with its metadata) are `renumber_rows` on the file."""
    schema = pa.schema(
        [("article_id", pa.string()), ("version", pa.int32()), ("text", pa.string())],
        metadata={b"about": b"articles"},
    )
    table = pa.table(
        {
            "article_id": [f"id-{n}" for n in range(7)],
            "version": [1] * 7,
            "text": [f"t{n}" for n in range(7)],
        },
        schema=schema,
    )
    path = tmp_path / "part-1.parquet"
    pq.write_table(table, path, row_group_size=3)
    decided = {0: 0, 2: 3, 3: 0, 6: 2}  # drop rows 0 and 3, renumber rows 2 and 6
    monkeypatch.setattr(transforms.dedupe, "EDIT_BATCH_ROWS", 2)
    edited = transforms.dedupe.edited_table(str(path), decided)
    whole = renumber_rows(pq.read_table(path), [decided.get(row) for row in range(7)])
    assert edited.equals(whole, check_metadata=True)
    assert edited.column("article_id").to_pylist() == ["id-1", "id-2", "id-4", "id-5", "id-6"]
    assert edited.column("version").to_pylist() == [1, 3, 1, 1, 2]
    dropped_all = transforms.dedupe.edited_table(str(path), dict.fromkeys(range(7), 0))
    assert dropped_all.num_rows == 0 and dropped_all.schema.equals(schema, check_metadata=True)
