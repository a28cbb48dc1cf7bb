"""A batch commit's stories decided a chunk at a time (transforms/io/run_stories.py), on real Parquet."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from tests.story_texts import FOOTER, OTHER, WIRE
from transforms.io.parquet import ParquetSettings, write_parquet
from transforms.io.paths import INDEX_DATASET
from transforms.io.run_stories import _published, arrival_ranks, decide_run_stories, spill_chunks
from transforms.io.staging import StagedFile
from transforms.io.story_index import PRINT_SCHEMA, STAGED_PRINTS, StoryFile, StorySettings, decide_stories
from transforms.stories import fingerprint

AT = datetime(2026, 11, 2, 8, tzinfo=UTC)
SETTINGS = StorySettings()


def row(
    article_id: str,
    paragraphs: list[str],
    hours: float | None,
    content: str | None = "1",
    title: str = "Rates",
) -> dict[str, Any]:
    return {
        "article_id": article_id,
        "content_hash": content,
        "published_at": None if hours is None else AT + timedelta(hours=hours),
        "source_domain": f"{article_id}.test",
        "ingest_date": "2026-11-02",
        "fingerprint": fingerprint(title, "\n\n".join(paragraphs), "en").to_bytes(),
    }


def staged(folder: Path, dataset: str, name: str, table: pa.Table) -> StagedFile:
    path = str(folder / dataset / name)
    write_parquet(table, path, ParquetSettings())
    return StagedFile(dataset, "", path, path, table.num_rows)


def run_prints(folder: Path) -> tuple[list[StagedFile], list[StagedFile], list[dict[str, Any]]]:
    """Three staged print files of wire copies (some undated, one id staged twice, one version not
    published), the index delta, and the rows the commit publishes in staged order."""
    files = [
        [row("c1", WIRE, 3), row("o1", OTHER, 1), row("dup", WIRE, 2), row("old", WIRE, 2, content="0")],
        [row("c2", WIRE, 5), row("u1", WIRE, None), row("f1", [OTHER[0], FOOTER], 4, content=None)],
        [row("dup", WIRE[:2], 2), row("c3", WIRE, 3), row("u2", OTHER, None), row("o2", OTHER, 1.5)],
    ]
    prints = [
        staged(folder, STAGED_PRINTS, f"p{n}.parquet", pa.Table.from_pylist(rows, schema=PRINT_SCHEMA))
        for n, rows in enumerate(files)
    ]
    published = [r for rows in files for r in rows if r["article_id"] != "old"]
    ids = sorted({r["article_id"] for r in published})
    delta = pa.table({"article_id": ids, "content_hash": [None if i == "f1" else "1" for i in ids]})
    return prints, [staged(folder, INDEX_DATASET, "delta.parquet", delta)], published


def as_rows(files: Iterable[StoryFile]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {(f.dataset, f.partition): f.table.to_pylist() for f in files}


def test_stories_decided_in_chunks_are_those_of_the_whole_commit(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    prints, delta, published = run_prints(tmp_path / "staging")
    whole = as_rows(decide_stories(output, published, "r1", SETTINGS, AT))
    assert {r["article_id"] for r in whole["stories", "ingest_date=2026-11-02"]} == {
        "c1", "c2", "c3", "dup", "o1", "o2", "u1", "u2", "f1"
    }  # fmt: skip
    for chunk in (1, 2, 3, 100):
        chunked = decide_run_stories(output, prints, _published(delta), "r1", SETTINGS, AT, chunk)
        assert as_rows(chunked) == whole, chunk


def test_a_commit_holds_at_most_one_chunk_of_prints_in_arrival_order(tmp_path: Path) -> None:
    prints, delta, published = run_prints(tmp_path / "staging")
    ranks = arrival_ranks(prints, _published(delta))
    chunks = list(spill_chunks(prints, ranks, tmp_path, 2))
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 2, 1]
    order = [r["article_id"] for chunk in chunks for r in chunk]
    assert order == ["o1", "o2", "dup", "c1", "c3", "f1", "c2", "u1", "u2"]
    dup = next(r for chunk in chunks for r in chunk if r["article_id"] == "dup")
    assert dup["fingerprint"] == min(r["fingerprint"] for r in published if r["article_id"] == "dup")
    assert not list(tmp_path.glob("chunk-*.arrows"))  # each chunk's spill is removed once read


def test_a_commit_merges_its_story_partitions_one_at_a_time(tmp_path: Path) -> None:
    """The merged partitions are the run's whole story-index delta (~2 KB per article): a commit of
    100,000 articles that held them all before writing the first kept ~200 MB more than it needed."""
    words = [f"w{n}" for n in range(5_000)]
    chooser = random.Random(20261203)
    rows = [
        row(f"a{n}", [" ".join(chooser.choices(words, k=60)) for _ in range(3)], n / 10, title=f"t{n}")
        for n in range(600)
    ]
    prints = [
        staged(
            tmp_path / "staging",
            STAGED_PRINTS,
            f"p{n}.parquet",
            pa.Table.from_pylist(part, schema=PRINT_SCHEMA),
        )
        for n, part in enumerate((rows[:300], rows[300:]))
    ]
    delta = pa.table({"article_id": [r["article_id"] for r in rows], "content_hash": ["1"] * len(rows)})
    before = pa.total_allocated_bytes()
    partitions = iter(
        decide_run_stories(
            str(tmp_path / "out"),
            prints,
            _published([staged(tmp_path / "staging", INDEX_DATASET, "delta.parquet", delta)]),
            "r1",
            SETTINGS,
            AT,
        )
    )
    first = next(partitions)
    held = pa.total_allocated_bytes() - before
    sizes = [first.table.nbytes] + [story_file.table.nbytes for story_file in partitions]
    assert len(sizes) == 2 * 16 + 1  # bands and prints in 16 buckets each, one stories partition
    assert held < sum(sizes) / 8, (held, sum(sizes))
