"""Event-time logic of the streaming job: windows, lateness and de-duplication.

Pure functions first, then `TestStream` pipelines (imported as `EventStream`, so that pytest does
not collect it) on Beam's bundle-based direct runner, which runs `TestStream` and event-time
timers faithfully, writing real Parquet that is read back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream as EventStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.dedupe import (
    DeduplicateStream,
    SeenIds,
    dedupe_bucket,
    forget_expired,
    load_seed,
    stream_version,
)
from transforms.feed_state import FeedSource
from transforms.fetch import FetchResult
from transforms.poll import (
    PollSchedule,
    conditions_after,
    feeds_due,
    schedule_from_json,
    schedule_to_json,
    tick_seconds_for,
    total_ticks,
)
from transforms.schema import ARTICLE_SCHEMA
from transforms.store import StoredVersion, list_index_files
from transforms.write import (
    WindowFileSpec,
    WriteWindowedParquet,
    publish_window_file,
    rows_digest,
    window_file_name,
    window_start,
)

T0 = 1_764_374_400  # 2025-11-29T00:00:00Z, a multiple of every window length used here
WINDOW = 10


def article(
    article_id: str, content_hash: str = "h1", *, updated: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "article_id": article_id,
        "content_hash": content_hash,
        "updated_at": updated,
        "source": "http://feeds.test/a.xml",
        "source_type": "feed",
        "title": f"title {article_id}",
        "language": "en",
        "ingest_date": "2025-11-29",
        "run_id": "run-1",
        **extra,
    }


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)


def read_dataset(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pylist()


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


# --- pure functions -------------------------------------------------------------------------------


def test_window_start_and_file_names() -> None:
    assert window_start(T0 + 9.999, WINDOW) == T0
    assert window_start(T0 + 10, WINDOW) == T0 + 10
    assert window_start(T0 + 299, 300) == T0
    name = window_file_name(T0 + 300, "run-7", 2, "abc")
    assert name == "part-20251129T000500Z-run-7-p002-abc.parquet"


def test_rows_digest_is_order_independent_and_content_sensitive() -> None:
    rows = [article("a"), article("b")]
    assert rows_digest(rows) == rows_digest(list(reversed(rows)))
    assert rows_digest(rows) != rows_digest([article("a"), article("b", "h2")])


def test_dedupe_bucket_is_stable_and_in_range() -> None:
    assert dedupe_bucket("ffffffff00", 1024) == 0xFFFFFFFF % 1024
    assert 0 <= dedupe_bucket("not-hex", 7) < 7
    assert dedupe_bucket("not-hex", 7) == dedupe_bucket("not-hex", 7)


def test_stream_version_new_duplicate_changed() -> None:
    seen: SeenIds = {}
    assert stream_version(article("a"), seen, {}, now=T0) == 1
    assert stream_version(article("a"), seen, {}, now=T0 + 5) == 0  # polled again
    assert seen["a"][3] == T0 + 5  # last seen moves on
    assert stream_version(article("a", "h2"), seen, {}, now=T0 + 6) == 2  # content changed
    newer = datetime(2025, 11, 29, 1, tzinfo=UTC)
    assert stream_version(article("a", "h2", updated=newer), seen, {}, now=T0 + 7) == 3  # updated later
    assert stream_version(article("a", "h2", updated=newer), seen, {}, now=T0 + 8) == 0


def test_stream_version_uses_the_seed_when_the_state_has_no_entry() -> None:
    seed = {"a": StoredVersion("h1", None, 4)}
    seen: SeenIds = {}
    assert stream_version(article("a"), seen, seed, now=T0) == 0
    assert seen["a"][2] == 4  # the stored version is remembered
    assert stream_version(article("a", "h9"), seen, seed, now=T0 + 1) == 5


def test_forget_expired_bounds_the_state() -> None:
    seen: SeenIds = {"old": ("h", None, 1, T0), "recent": ("h", None, 1, T0 + 90)}
    assert forget_expired(seen, now=T0 + 100, expire_after=50) == 1
    assert list(seen) == ["recent"]


def test_feeds_due_on_their_own_intervals() -> None:
    feeds = (FeedSource("http://a.test/", poll_interval=2), FeedSource("http://b.test/", poll_interval=6))
    tick = tick_seconds_for(feeds, default=300)
    assert tick == 2
    due = [feeds_due(feeds, index, tick, 300) for index in range(4)]
    assert due == [
        ["http://a.test/", "http://b.test/"],
        ["http://a.test/"],
        ["http://a.test/"],
        feeds_due(feeds, 0, tick, 300),
    ]
    assert feeds_due((FeedSource("http://c.test/"),), 3, 60, default=60) == ["http://c.test/"]


def test_schedule_round_trip_and_tick_count() -> None:
    schedule = PollSchedule(tick_seconds=2, start_at=T0, stop_at=T0 + 7, stop_file="/tmp/x.stop")
    assert schedule_from_json(schedule_to_json(schedule)) == schedule
    assert total_ticks(schedule) == 4  # T0, +2, +4, +6
    assert total_ticks(PollSchedule(tick_seconds=2, start_at=T0)) > 10**15


def test_conditions_after_keeps_validators_of_the_last_200() -> None:
    first = conditions_after({}, FetchResult(url="u", status=200, body=b"x", etag='"1"', last_modified="Mon"))
    assert first == {"etag": '"1"', "last_modified": "Mon"}
    assert conditions_after(first, FetchResult(url="u", status=304)) == first
    failed = FetchResult(url="u", status=500, error_type="http_500")
    assert conditions_after(first, failed) == first
    moved = FetchResult(url="u", status=200, body=b"x", permanent_redirect="http://new.test/")
    assert conditions_after(first, moved)["target"] == "http://new.test/"


# --- TestStream: windows and lateness ----------------------------------------------------------------


def spec_for(output: Path, with_index: bool = False) -> WindowFileSpec:
    return WindowFileSpec(
        str(output),
        "articles",
        ARTICLE_SCHEMA,
        ("ingest_date", "language"),
        "run-1",
        WINDOW,
        with_index=with_index,
    )


def test_records_are_written_per_fetch_time_window(tmp_path: Path) -> None:
    stream = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(article("a"), T0 + 1), TimestampedValue(article("b"), T0 + 4)])
        .add_elements([TimestampedValue(article("c", language="fr"), T0 + 12)])
        .advance_watermark_to(T0 + 30)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        files = p | stream | WriteWindowedParquet(spec_for(tmp_path))
        assert_that(
            files | beam.Map(lambda f: (f["window_start"] - T0, f["pane"], f["rows"])),
            equal_to([(0, 0, 2), (10, 0, 1)]),
        )
    names = sorted(p.relative_to(tmp_path).as_posix() for p in parquet_files(tmp_path))
    assert len(names) == 2
    assert names[0].startswith(
        "articles/ingest_date=2025-11-29/language=en/part-20251129T000000Z-run-1-p000-"
    )
    assert names[1].startswith(
        "articles/ingest_date=2025-11-29/language=fr/part-20251129T000010Z-run-1-p000-"
    )
    rows = read_dataset(tmp_path / "articles")
    assert sorted(r["article_id"] for r in rows) == ["a", "b", "c"]
    assert {r["language"] for r in rows} == {"en", "fr"}  # partition columns from the folder names
    assert not (tmp_path / "_staging" / "run-1").exists() or not any(
        (tmp_path / "_staging").rglob("*.parquet")
    )


def test_late_records_are_written_as_a_further_pane_never_dropped(tmp_path: Path) -> None:
    stream = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(article("a"), T0 + 1)])
        .advance_watermark_to(T0 + 25)  # window [T0, T0+10) is written
        .add_elements([TimestampedValue(article("late"), T0 + 3)])  # behind the watermark
        .advance_watermark_to(T0 + 40)
        .add_elements([TimestampedValue(article("later"), T0 + 5)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        files = p | stream | WriteWindowedParquet(spec_for(tmp_path))
        assert_that(
            files | beam.Map(lambda f: (f["window_start"] - T0, f["pane"], f["rows"], f["late_rows"])),
            equal_to([(0, 0, 1, 0), (0, 1, 1, 1), (0, 2, 1, 1)]),
        )
    names = [p.name for p in parquet_files(tmp_path / "articles")]
    assert sorted(n.split("-p")[1][:3] for n in names) == ["000", "001", "002"]
    assert all("20251129T000000Z-run-1" in n for n in names)  # all in the window of their fetch time
    assert sorted(r["article_id"] for r in read_dataset(tmp_path / "articles")) == ["a", "late", "later"]


def test_a_retried_flush_rewrites_the_same_file_and_a_new_run_never_overwrites(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, with_index=True)
    rows = [{**article("a"), "version": 1}, {**article("b"), "version": 1}]
    first = publish_window_file(spec, "ingest_date=2025-11-29/language=en", T0, 0, rows)
    again = publish_window_file(spec, "ingest_date=2025-11-29/language=en", T0, 0, list(reversed(rows)))
    assert first == again  # same rows, same name: no second copy
    other_run = WindowFileSpec(**{**spec.__dict__, "run_id": "run-2"})
    publish_window_file(other_run, "ingest_date=2025-11-29/language=en", T0, 0, rows)
    assert len(parquet_files(tmp_path / "articles")) == 2
    assert len(list_index_files(str(tmp_path))) == 2
    assert sorted(load_seed(str(tmp_path))) == ["a", "b"]
    assert not any((tmp_path / "_staging").rglob("*.parquet"))


# --- TestStream: de-duplication -----------------------------------------------------------------------


def test_duplicates_across_polls_are_dropped_and_changes_kept() -> None:
    stream = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(article("a"), T0 + 1), TimestampedValue(article("b"), T0 + 1)])
        .advance_watermark_to(T0 + 2)
        .add_elements([TimestampedValue(article("a"), T0 + 3), TimestampedValue(article("b", "h2"), T0 + 3)])
        .advance_watermark_to(T0 + 4)
        .add_elements([TimestampedValue(article("a"), T0 + 5), TimestampedValue(article("b", "h2"), T0 + 5)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        unique, duplicates = p | stream | DeduplicateStream(None, expire_after=3600, buckets=4)
        assert_that(
            unique | "Kept" >> beam.Map(lambda a: (a["article_id"], a["content_hash"], a["version"])),
            equal_to([("a", "h1", 1), ("b", "h1", 1), ("b", "h2", 2)]),
            label="kept",
        )
        assert_that(
            duplicates | "Dropped" >> beam.Map(lambda d: d["article_id"]),
            equal_to(["a", "a", "b"]),
            label="dropped",
        )


def test_ids_unseen_for_longer_than_expire_after_are_forgotten() -> None:
    stream = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(article("a"), T0)])
        .add_elements([TimestampedValue(article("a"), T0 + 50)])  # within 60 s: a duplicate
        .add_elements([TimestampedValue(article("z"), T0 + 200)])  # same bucket touched much later
        .add_elements([TimestampedValue(article("a"), T0 + 201)])  # forgotten: written again
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        unique, _ = p | stream | DeduplicateStream(None, expire_after=60, buckets=1)
        assert_that(unique | beam.Map(lambda a: a["article_id"]), equal_to(["a", "z", "a"]))


def test_a_restart_is_seeded_from_the_store(tmp_path: Path) -> None:
    publish_window_file(
        spec_for(tmp_path, with_index=True),
        "ingest_date=2025-11-29/language=en",
        T0,
        0,
        [{**article("stored"), "version": 1}],
    )
    stream = (
        EventStream()
        .advance_watermark_to(T0 + 100)
        .add_elements(
            [TimestampedValue(article("stored"), T0 + 101), TimestampedValue(article("fresh"), T0 + 101)]
        )
        .add_elements([TimestampedValue(article("stored", "h2"), T0 + 102)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        unique, _ = p | stream | DeduplicateStream(str(tmp_path), expire_after=3600, buckets=2)
        assert_that(
            unique | beam.Map(lambda a: (a["article_id"], a["version"])),
            equal_to([("fresh", 1), ("stored", 2)]),
        )


@pytest.mark.parametrize("expire_after,buckets", [(0, 4), (10, 0)])
def test_deduplicate_stream_rejects_bad_settings(expire_after: float, buckets: int) -> None:
    with pytest.raises(ValueError, match="expire_after"):
        DeduplicateStream(None, expire_after, buckets)
