"""The story index of transforms/io/story_index.py, without Beam: decided against real Parquet deltas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.story_texts import FOOTER, OTHER, WIRE
from transforms.io.parquet import ParquetSettings, read_table_file, write_table_file
from transforms.io.story_index import (
    BANDS,
    PRINTS,
    StoryFile,
    StorySettings,
    decide_stories,
    index_files,
    prune_index,
    read_bands,
    story_file_path,
)
from transforms.stories import fingerprint

AT = datetime(2026, 11, 2, 8, tzinfo=UTC)


def row(
    article_id: str, title: str, paragraphs: list[str], hours: float = 0, content: str = "1"
) -> dict[str, Any]:
    return {
        "article_id": article_id,
        "content_hash": content,
        "published_at": AT + timedelta(hours=hours),
        "source_domain": f"{article_id}.test",
        "ingest_date": "2026-11-02",
        "fingerprint": fingerprint(title, "\n\n".join(paragraphs), "en").to_bytes(),
    }


def publish(output: Path, files: list[StoryFile], name: str, band_format: str = "arrow") -> dict[str, str]:
    """Write the files as a commit would publish them (or, with `band_format="parquet"`, as commits
    wrote band deltas before they were Arrow files); the stories rows as article_id -> story_id."""
    stories: dict[str, str] = {}
    for story_file in files:
        folder = output / story_file.dataset / story_file.partition
        folder.mkdir(parents=True, exist_ok=True)
        if band_format == "parquet":
            pq.write_table(story_file.table, folder / name)
        else:
            write_table_file(
                story_file.table, story_file_path(str(output), story_file, name), ParquetSettings()
            )
        if story_file.dataset == "stories":
            stories.update(
                zip(
                    story_file.table["article_id"].to_pylist(),
                    story_file.table["story_id"].to_pylist(),
                    strict=True,
                )
            )
    return stories


@pytest.mark.parametrize("band_format", ["arrow", "parquet"])
def test_a_commit_files_its_articles_and_the_next_finds_them_by_band_keys(
    tmp_path: Path, band_format: str
) -> None:
    """Also against band deltas in Parquet, as commits wrote them before: an older index still reads."""
    settings = StorySettings()
    first = decide_stories(str(tmp_path), [row("a", "Central bank raises rates", WIRE)], "r1", settings, AT)
    assert publish(tmp_path, first, "part-r1.parquet", band_format) == {"a": "a"}
    suffixes = {Path(p).suffix for p in index_files(str(tmp_path)) if f"/{BANDS}/" in p}
    assert suffixes == {".arrow" if band_format == "arrow" else ".parquet"}
    assert {f.dataset for f in first} == {"stories", BANDS, PRINTS}
    copy = row("b", "Rates up again", [*WIRE[1:], FOOTER], hours=2)
    other = row("c", "Footbridge opens", [*OTHER, FOOTER], hours=1)
    second = decide_stories(str(tmp_path), [copy, other], "r2", settings, AT)
    assert publish(tmp_path, second, "part-r2.parquet") == {"b": "a", "c": "c"}
    # A rerun, and a new version of a stored article (another content hash): no row, no delta.
    again = [copy, row("a", "Central bank raises rates", WIRE[:4], content="2")]
    assert decide_stories(str(tmp_path), again, "r3", settings, AT) == []


def test_only_the_buckets_of_the_band_keys_asked_for_are_matched(tmp_path: Path) -> None:
    files = decide_stories(
        str(tmp_path), [row("a", "Central bank raises rates", WIRE)], "r1", StorySettings(), AT
    )
    publish(tmp_path, files, "part-r1.parquet")
    bands = [f.table for f in files if f.dataset == BANDS]
    some = bands[0]["band"].to_pylist()[:3]
    found = read_bands(str(tmp_path), [*some, 12345])
    assert set(found) == set(some) and all(len(keys) == 1 for keys in found.values())


def test_candidates_older_than_the_window_are_not_read_and_prune_drops_them(tmp_path: Path) -> None:
    settings = StorySettings(window_seconds=86_400)
    publish(
        tmp_path,
        decide_stories(str(tmp_path), [row("old", "Central bank raises rates", WIRE)], "r1", settings, AT),
        "part-r1.parquet",
    )
    late = row("late", "Central bank raises rates", WIRE, hours=48)
    assert publish(
        tmp_path, decide_stories(str(tmp_path), [late], "r2", settings, AT), "part-r2.parquet"
    ) == {"late": "late"}
    for bucket in prune_index(str(tmp_path), AT + timedelta(hours=24)):  # as the prune publishes it
        for path in bucket.replaced:
            Path(path).unlink()
        if bucket.table is not None:
            path = story_file_path(
                str(tmp_path), StoryFile(bucket.dataset, bucket.partition, bucket.table), "part-prune.parquet"
            )
            write_table_file(bucket.table, path, ParquetSettings())
    prints = [pq.read_table(p) for p in index_files(str(tmp_path)) if f"/{PRINTS}/" in p]
    assert sorted(a for t in prints for a in t["article_id"].to_pylist()) == ["late"]
    bands = [read_table_file(p) for p in index_files(str(tmp_path)) if f"/{BANDS}/" in p]
    assert sum(t.num_rows for t in bands) == 58  # the late article's band keys only
