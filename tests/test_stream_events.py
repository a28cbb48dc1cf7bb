"""Event-time logic of the streaming job: windows, lateness and de-duplication.

Pure functions first, then `TestStream` pipelines (imported as `EventStream`, so that pytest does
not collect it) on Beam's bundle-based direct runner, which runs `TestStream` and event-time
timers faithfully, writing real Parquet that is read back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import Pipeline
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream as EventStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from tests.conftest import PROJECT
from tests.feedserver import FeedServer, InFlight, KeyState, Reply
from tests.story_texts import AT, WIRE
from transforms.feed_state import FeedSource, FeedState, StatePolicy, state_after
from transforms.fetch import FetchSettings
from transforms.io.committed import (
    ALREADY_STORED,
    STALE,
    CommittedEntries,
    CommittedVersions,
    body_digest,
    decide_revisions,
    entry_fingerprint,
    fetch_millis,
    report_records_committed,
    shared_entries,
    shared_versions,
)
from transforms.io.faults import PAUSE_ENV
from transforms.io.parquet import read_table_file
from transforms.io.story_check import story_index_damage
from transforms.io.story_index import MAX_DELTAS, StorySettings, index_files, story_print
from transforms.io.versions import list_index_files
from transforms.io.window import (
    WindowFileSpec,
    WriteWindowedParquet,
    commit_pane,
    recover_panes,
    rows_digest,
    window_file_name,
    window_start,
)
from transforms.known_revisions import DeduplicateStream
from transforms.poll import _PollShardFn, too_soon
from transforms.poll_schedule import (
    PollSchedule,
    feeds_due,
    next_tick_due,
    schedule_from_json,
    schedule_to_json,
    tick_seconds_for,
    total_ticks,
)
from transforms.read_outputs import FETCHES
from transforms.schema import ARTICLE_SCHEMA, STORY_PRINT
from transforms.stories import Fingerprint, band_keys

T0 = 1_764_374_400  # 2025-11-29T00:00:00Z, a multiple of every window length used here
T = datetime.fromtimestamp(T0, UTC)
RSS_ONE = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>One</title>
<item><title>A title</title><link>https://example.com/a</link><guid>a</guid></item></channel></rss>"""
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


def streaming_pipeline() -> Pipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return Pipeline(runner=BundleBasedDirectRunner(), options=options)


def read_dataset(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = (
        ds.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pylist()
    )
    return rows


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


# --- pure functions -------------------------------------------------------------------------------


def test_window_start_and_file_names() -> None:
    assert window_start(T0 + 9.999, WINDOW) == T0
    assert window_start(T0 + 10, WINDOW) == T0 + 10
    assert window_start(T0 + 299, 300) == T0
    name = window_file_name(T0 + 300, "run-7", "abc")
    assert name == "part-20251129T000500Z-run-7-abc.parquet"


def test_rows_digest_is_order_independent_and_content_sensitive() -> None:
    rows = [article("a"), article("b")]
    assert rows_digest(rows) == rows_digest(list(reversed(rows)))
    assert rows_digest(rows) != rows_digest([article("a"), article("b", "h2")])


def committed_in(output: Path, *rows: dict[str, Any]) -> CommittedVersions:
    """A committed store holding `rows` (each already with its version), read back through the cache."""
    if rows:
        commit_pane(spec_for(output, with_index=True), "ingest_date=2025-11-29/language=en", T0, list(rows))
    committed = CommittedVersions(str(output))
    committed.refresh()
    return committed


def test_decide_revisions_never_stores_a_stored_content_again(tmp_path: Path) -> None:
    committed = committed_in(tmp_path, article("a", "h1"), article("a", "h2"))  # a: v1 h1, v2 h2
    kept, dropped = decide_revisions(
        [article("a", "h1"), article("a", "h2"), article("a", "h3"), article("b")], committed
    )
    assert [(r["article_id"], r["content_hash"], r["version"]) for r in kept] == [
        ("a", "h3", 3),
        ("b", "h1", 1),
    ]
    assert sorted((r["content_hash"], reason) for r, reason in dropped) == [
        ("h1", ALREADY_STORED),
        ("h2", ALREADY_STORED),
    ]


def test_decide_revisions_numbers_revisions_in_fetch_order_and_refuses_older_texts(tmp_path: Path) -> None:
    early, late = datetime(2025, 11, 29, 1, tzinfo=UTC), datetime(2025, 11, 29, 2, tzinfo=UTC)
    kept, dropped = decide_revisions(
        [
            article("a", "second", ingested_at=late),
            article("a", "first", ingested_at=early),
            article("a", "first", ingested_at=late),  # the first text polled again
        ],
        committed_in(tmp_path),
    )
    assert [(r["content_hash"], r["version"]) for r in kept] == [("first", 1), ("second", 2)]
    assert [reason for _, reason in dropped] == [ALREADY_STORED]
    updated = committed_in(tmp_path / "u", article("c", "new", updated=late))
    kept, dropped = decide_revisions([article("c", "old", updated=early)], updated)
    assert kept == [] and [reason for _, reason in dropped] == [STALE]


def test_the_cache_follows_new_index_files_and_a_compaction(tmp_path: Path) -> None:
    committed = committed_in(tmp_path, article("a"))
    other = CommittedVersions(str(tmp_path))  # another worker's cache
    other.refresh()
    commit_pane(
        spec_for(tmp_path, with_index=True), "ingest_date=2025-11-29/language=en", T0 + 10, [article("b")]
    )
    other.refresh()
    assert other.known("b") is not None and len(other) == 2
    for path in list_index_files(str(tmp_path)):  # a compaction: all deltas replaced by one file
        Path(path).unlink()
    commit_pane(
        spec_for(tmp_path, with_index=True), "ingest_date=2025-11-29/language=en", T0 + 20, [article("c")]
    )
    other.refresh()
    assert other.known("a") is None and other.known("c") is not None
    del committed


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
    schedule = PollSchedule(tick_seconds=2, duration=7, stop_file="/tmp/x.stop")
    assert schedule_from_json(schedule_to_json(schedule)) == schedule
    assert total_ticks(schedule) == 4  # 0, +2, +4, +6 after the first real tick
    assert total_ticks(PollSchedule(tick_seconds=2)) > 10**15


def test_ticks_start_at_the_first_real_poll_and_never_catch_up() -> None:
    """A runner that starts late (Flink: 25-48 s) or stalls gets one tick now, not every missed one."""
    assert next_tick_due(None, None, 5, now=T0 + 40) == T0 + 40  # the first tick: at once
    assert next_tick_due(Timestamp.of(T0 + 5), None, 5, now=T0 + 60) == T0 + 5  # one overdue tick, then...
    assert next_tick_due(Timestamp.of(T0 + 5), T0 + 60, 5, now=T0 + 60) == T0 + 65  # ...a tick after it
    assert next_tick_due(Timestamp.of(T0 + 65), T0 + 60, 5, now=T0 + 61) == T0 + 65


def test_a_replayed_tick_polls_nothing() -> None:
    assert too_soon(T0 + 4.9, T0, interval=5)
    assert not too_soon(T0 + 5, T0, interval=5)
    assert not too_soon(T0, None, interval=5)


def _poll_ticks(
    url: str, ticks: range, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[dict[str, Any]], str | None]:
    """The fetch rows of polling one feed at `ticks` (one second apart, its interval).

    The ticks come at once in real time, which a real job would see as a backlog (one poll): the
    spacing in real time is switched off here and left to the exactly-once scenario to check.
    """
    from transforms import poll as poll_module

    monkeypatch.setattr(poll_module, "wait_before_poll", lambda *_: 0.0)
    poll = _PollShardFn(FetchSettings(allow_private_hosts=True, max_attempts=1), (FeedSource(url),), 1)
    poll.setup()
    state = KeyState()
    try:
        outputs = [o for tick in ticks for o in poll.process(("0", tick), state, tick=float(tick))]
    finally:
        poll.teardown()
    return [o.value.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == FETCHES], state.value


# One poll of a feed at tick 0 in a process of its own: an SDK worker that the next poll's never heard of.
_POLL_IN_ANOTHER_PROCESS = """
import sys
from tests.feedserver import KeyState
from transforms.feed_state import FeedSource
from transforms.fetch import FetchSettings
from transforms.poll import _PollShardFn

settings = FetchSettings(allow_private_hosts=True, max_attempts=1)
poll = _PollShardFn(settings, (FeedSource(sys.argv[1]),), 1, hosts_folder=sys.argv[2])
poll.setup()
list(poll.process(("0", 0), KeyState(), tick=0.0))
poll.teardown()
"""


def test_a_poll_waits_its_interval_after_the_answer_another_process_got(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """On Flink three feeds reached the server 998-1000 ms apart (interval 1 s): the poll's process had
    never polled them and read a state from before their last poll, so it went by its tick alone. The
    machine's worker processes now share each feed's last answer (beside the per-host slots)."""
    url = feed_server.route("/feed.xml", Reply(200, RSS_ONE, {"Content-Type": "application/rss+xml"}))
    hosts = str(tmp_path / "hosts")
    subprocess.run(
        [sys.executable, "-c", _POLL_IN_ANOTHER_PROCESS, url, hosts], cwd=PROJECT, check=True, timeout=120
    )
    settings = FetchSettings(allow_private_hosts=True, max_attempts=1)
    poll = _PollShardFn(settings, (FeedSource(url),), 1, hosts_folder=hosts)
    poll.setup()
    try:
        stale = KeyState()  # the shard's state as it was before the other process's poll
        list(poll.process(("0", 1), stale, tick=1.0))  # at once: too soon after the other's answer
        # Then a tick every 0.1 s: one of them comes within the early slack of the interval and polls.
        for tick in range(2, 40):
            if len(feed_server.hits("/feed.xml")) >= 2:
                break
            time.sleep(0.1)
            list(poll.process(("0", tick), stale, tick=float(tick)))
    finally:
        poll.teardown()
    times = [request.at for request in feed_server.hits("/feed.xml")]
    assert len(times) == 2, times
    assert times[1] - times[0] >= 1.0, times


def test_a_ticks_feeds_are_fetched_at_once_within_each_hosts_limit(tmp_path: Path) -> None:
    """Prism ran a key per feed one after another, so a tick's polls took the sum of the feeds' response
    times (the poll stage fell behind its ticks). Now one element per shard fetches its feeds at once,
    each request in one of its host's `max_per_host` slots, and keeps every feed's state."""
    gauge = InFlight()
    servers = [FeedServer(f"127.0.0.{n + 1}", shared=gauge).start() for n in range(2)]
    try:
        urls = [
            servers[n % 2].route(
                f"/slow{n}.xml",
                Reply(200, RSS_ONE, {"ETag": f'"e{n}"', "Content-Type": "application/rss+xml"}, delay=0.4),
            )
            for n in range(6)
        ]
        settings = FetchSettings(allow_private_hosts=True, max_attempts=1, max_concurrent=8, max_per_host=2)
        poll = _PollShardFn(settings, tuple(map(FeedSource, urls)), 1, hosts_folder=str(tmp_path / "hosts"))
        poll.setup()
        state = KeyState()
        try:
            outputs = list(poll.process(("0", 0), state, tick=0.0))
        finally:
            poll.teardown()
    finally:
        for server in servers:
            server.stop()
    fetches = [o.value.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == FETCHES]
    assert sorted(row["source"] for row in fetches) == sorted(urls)
    assert [server.max_in_flight for server in servers] == [2, 2]  # each host's limit, and no less
    assert gauge.most == 4  # both hosts at once: 6 polls of 0.4 s one after another would be 1
    kept = json.loads(state.value or "{}")
    assert {url: kept[url]["feed_state"]["etag"] for url in urls} == {
        url: f'"e{n}"' for n, url in enumerate(urls)
    }


def test_a_feed_failing_in_streaming_backs_off_as_in_batch(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feed_server.route("/down", Reply(500, b"down"))
    rows, _state = _poll_ticks(url, range(4), monkeypatch)
    # Batch's policy (StatePolicy defaults): skipped after two consecutive failures, for 10 minutes.
    assert len(feed_server.hits("/down")) == 2
    assert [(r["outcome"], r["error_type"]) for r in rows] == [
        ("error", "http_500"),
        ("error", "http_500"),
        ("skipped", "backing_off"),
        ("skipped", "backing_off"),
    ]

    def failed(previous: FeedState | None) -> FeedState:  # batch's rule, after one more HTTP 500
        return state_after(
            previous,
            url,
            T,
            outcome="error",
            status=500,
            error_type="http_500",
            etag=None,
            last_modified=None,
            permanent_redirect=None,
            fresh_seconds=None,
            poll_interval=None,
            policy=StatePolicy(),
        )

    batch = failed(failed(None))
    assert batch.next_poll_at == T + timedelta(seconds=600) and batch.consecutive_failures == 2
    assert "after 2 failures" in rows[2]["message"]


def test_streaming_sends_the_validators_batch_would(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 200 that is no feed (an error page) brings no validators worth keeping, in batch and here.
    feed = Reply(200, RSS_ONE, {"ETag": '"v1"', "Content-Type": "application/rss+xml"})
    not_a_feed = Reply(200, b"<html><body>oops</body></html>", {"ETag": '"v2"', "Content-Type": "text/html"})
    url = feed_server.route("/feed", feed, not_a_feed)
    rows, state = _poll_ticks(url, range(2), monkeypatch)
    assert [r["outcome"] for r in rows] == ["ok", "not_a_feed"]
    kept = json.loads(state or "{}").get(url, {}).get("feed_state") or {}
    assert (kept.get("etag"), kept.get("consecutive_failures")) == ('"v1"', 1)


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
    assert names[0].startswith("articles/ingest_date=2025-11-29/language=en/part-20251129T000000Z-run-1-")
    assert names[1].startswith("articles/ingest_date=2025-11-29/language=fr/part-20251129T000010Z-run-1-")
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
    assert len(set(names)) == 3
    assert all("20251129T000000Z-run-1" in n for n in names)  # all in the window of their fetch time
    assert sorted(r["article_id"] for r in read_dataset(tmp_path / "articles")) == ["a", "late", "later"]


PARTITION = "ingest_date=2025-11-29/language=en"


def test_a_commit_notes_its_rows_in_the_shared_cache_even_while_that_is_empty(tmp_path: Path) -> None:
    """An empty cache is falsy (it has a length): the commit must still use it, not a throwaway one."""
    cache = CommittedVersions(str(tmp_path))
    commit_pane(spec_for(tmp_path, with_index=True), PARTITION, T0, [article("a")], cache)
    known = cache.known("a")  # without a refresh
    assert known is not None and known.latest is not None and known.latest.version == 1


def test_a_duplicated_pane_adds_nothing_and_a_new_run_never_overwrites(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, with_index=True)
    rows = [article("a"), article("b")]
    first = commit_pane(spec, PARTITION, T0, rows)
    assert first.rows == 2 and len(first.paths) == 2  # the articles and their index delta
    again = commit_pane(spec, PARTITION, T0, list(reversed(rows)))  # a retried or split-off bundle
    assert again.paths == [] and again.already_stored == 2
    later_pane = commit_pane(spec, PARTITION, T0, [article("a"), article("c")])
    assert later_pane.rows == 1 and later_pane.already_stored == 1
    other_run = WindowFileSpec(**{**spec.__dict__, "run_id": "run-2"})
    assert commit_pane(other_run, PARTITION, T0, rows).paths == []
    stored = read_dataset(tmp_path / "articles")
    assert sorted((r["article_id"], r["version"]) for r in stored) == [("a", 1), ("b", 1), ("c", 1)]
    assert len(list_index_files(str(tmp_path))) == 2
    assert not any((tmp_path / "_staging").rglob("*.parquet"))


def test_an_older_text_never_becomes_a_newer_version(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, with_index=True)
    commit_pane(spec, PARTITION, T0, [article("a", "first")])
    commit_pane(spec, PARTITION, T0 + 10, [article("a", "second")])
    stale = commit_pane(spec, PARTITION, T0, [article("a", "first")])  # a stale copy of the first pane
    assert stale.paths == []
    stored = sorted((r["content_hash"], r["version"]) for r in read_dataset(tmp_path / "articles"))
    assert stored == [("first", 1), ("second", 2)]


def kill_a_pane_commit_at(fault: str, output: Path, imports: str, call: str) -> None:
    """Run `call` (a `commit_pane` into `output`, as `Path(sys.argv[2])`) in a process of its own and
    kill it -9 once it reaches the fault point `fault`."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        f"from tests.test_stream_events import {imports}, PARTITION, T0;"
        "from transforms.io.window import commit_pane; from pathlib import Path;"
        f"{call}"
    )
    marker = output / "paused"
    env = {**os.environ, PAUSE_ENV: fault, "NEWSBEAM_PAUSE_MARKER": str(marker)}
    process = subprocess.Popen([sys.executable, "-c", script, str(PROJECT), str(output)], env=env)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), f"the commit never reached {fault}"
    process.kill()
    process.wait(timeout=30)


def test_a_pane_decided_before_a_crash_is_rolled_forward_whole(tmp_path: Path) -> None:
    """Killed between the decision (marker written) and the renames: the next commit publishes both files."""
    kill_a_pane_commit_at(
        "pane.decided",
        tmp_path,
        "article, spec_for",
        "commit_pane(spec_for(Path(sys.argv[2]), with_index=True), PARTITION, T0, [article('a')])",
    )
    assert read_dataset(tmp_path / "articles") == [] and list_index_files(str(tmp_path)) == []
    assert recover_panes(str(tmp_path)) == 1
    assert [r["article_id"] for r in read_dataset(tmp_path / "articles")] == ["a"]
    assert len(list_index_files(str(tmp_path))) == 1
    assert commit_pane(spec_for(tmp_path, with_index=True), PARTITION, T0, [article("a")]).paths == []


def story_spec(output: Path) -> WindowFileSpec:
    return WindowFileSpec(**{**spec_for(output, with_index=True).__dict__, "stories": StorySettings()})


def wire_copy(n: int) -> dict[str, Any]:
    """Outlet n's copy of the wire story: the same body, so the same band keys and buckets every time."""
    row = article(
        f"o{n}.test/rates",
        f"h{n}",
        title=f"Central bank raises rates, take {n}",
        text=" ".join(WIRE),
        published_at=AT + timedelta(minutes=n),
        source_domain=f"o{n}.test",
    )
    return {**row, STORY_PRINT: story_print(row)}


def band_rows(output: Path) -> tuple[Counter[Path], list[tuple[int, int]]]:
    """The story index's band deltas per bucket folder, and all their (band, article_key) rows."""
    per_bucket: Counter[Path] = Counter()
    rows: list[tuple[int, int]] = []
    for path in index_files(str(output)):
        if "/bands/" in path:
            table = read_table_file(path)
            assert table["band"].to_pylist() == sorted(table["band"].to_pylist())  # binary search needs it
            per_bucket[Path(path).parent] += 1
            rows += zip(table["band"].to_pylist(), table["article_key"].to_pylist(), strict=True)
    return per_bucket, rows


def test_stream_panes_keep_each_story_bucket_bounded_and_lose_no_index_row(tmp_path: Path) -> None:
    """Each pane files story deltas; a long stream must not grow a bucket past MAX_DELTAS (+1) files."""
    panes = MAX_DELTAS + 6
    for n in range(panes):
        commit_pane(story_spec(tmp_path), PARTITION, T0 + 10 * n, [wire_copy(n)])
    per_bucket, rows = band_rows(tmp_path)
    assert per_bucket and max(per_bucket.values()) <= MAX_DELTAS
    assert (
        len(rows)
        == len(set(rows))
        == panes * len(band_keys(Fingerprint.from_bytes(wire_copy(0)[STORY_PRINT])))
    )
    prints = [
        r for p in index_files(str(tmp_path)) if "/prints/" in p for r in read_table_file(p).to_pylist()
    ]
    assert sorted(r["article_id"] for r in prints) == sorted(f"o{n}.test/rates" for n in range(panes))
    stories = pq.read_table(tmp_path / "stories").to_pylist()
    assert {r["story_id"] for r in stories} == {"o0.test/rates"} and len(stories) == panes
    assert story_index_damage(str(tmp_path)) == []


def test_a_pane_killed_after_publishing_its_merged_deltas_deletes_the_old_ones_on_recovery(
    tmp_path: Path,
) -> None:
    """The merge of a bucket's pane deltas is in the pane's decision: rolled forward whole after a kill."""
    for n in range(MAX_DELTAS):
        commit_pane(story_spec(tmp_path), PARTITION, T0 + 10 * n, [wire_copy(n)])
    before, rows_before = band_rows(tmp_path)
    assert max(before.values()) == MAX_DELTAS  # the next pane merges
    kill_a_pane_commit_at(
        "pane.published",
        tmp_path,
        "story_spec, wire_copy",
        f"commit_pane(story_spec(Path(sys.argv[2])), PARTITION, T0 + 100, [wire_copy({MAX_DELTAS})])",
    )
    assert max(band_rows(tmp_path)[0].values()) == MAX_DELTAS + 1  # merged file in, old ones not yet out
    assert recover_panes(str(tmp_path)) == 1
    after, rows_after = band_rows(tmp_path)
    assert max(after.values()) <= MAX_DELTAS and len(rows_after) == len(set(rows_after))
    assert set(rows_before) < set(rows_after)
    assert story_index_damage(str(tmp_path)) == []


def test_an_undecided_pane_is_removed_from_an_output_named_like_a_pattern(tmp_path: Path) -> None:
    """Recovery lists the pending panes; it never matches a pattern built from the output's name."""
    output = tmp_path / "out[1]"
    undecided = output / "_runs" / "_pending_panes" / "pane-1"
    undecided.mkdir(parents=True)
    (undecided / "part.parquet").write_bytes(b"PAR1 staged before the decision")
    (undecided.parent / "stray.tmp").write_bytes(b"")
    assert recover_panes(str(output)) == 0
    assert list(undecided.parent.iterdir()) == []


# --- TestStream: de-duplication -----------------------------------------------------------------------


def test_only_committed_revisions_are_dropped_as_seen(tmp_path: Path) -> None:
    """Polled again before its pane committed, an entry passes again: the runner may have lost it."""
    commit_pane(spec_for(tmp_path, with_index=True), PARTITION, T0, [article("a")])
    stream = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(article("a"), T0 + 1), TimestampedValue(article("b"), T0 + 1)])
        .advance_watermark_to(T0 + 2)
        .add_elements([TimestampedValue(article("a"), T0 + 3), TimestampedValue(article("b", "h2"), T0 + 3)])
        .advance_watermark_to(T0 + 4)
        .add_elements([TimestampedValue(article("b"), T0 + 5), TimestampedValue(article("a", "h9"), T0 + 5)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        unique, duplicates = p | stream | DeduplicateStream(str(tmp_path))
        assert_that(
            unique | "Kept" >> beam.Map(lambda a: (a["article_id"], a["content_hash"], a["version"])),
            equal_to([("b", "h1", 1), ("b", "h2", 1), ("b", "h1", 1), ("a", "h9", 2)]),
            label="kept",
        )
        assert_that(
            duplicates | "Dropped" >> beam.Map(lambda d: d["article_id"]),
            equal_to(["a", "a"]),
            label="dropped",
        )


def test_without_a_store_nothing_is_dropped() -> None:
    stream = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(article("a"), T0), TimestampedValue(article("a"), T0 + 1)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        unique, _ = p | stream | DeduplicateStream(None)
        assert_that(unique | beam.Map(lambda a: a["article_id"]), equal_to(["a", "a"]))


# --- polls: one at a time, never too often, costing what is new -------------------------------------


def raw_entry(guid: str, text: str, ordinal: int = 0) -> dict[str, Any]:
    return {
        "entry_id": guid,
        "link": f"http://news.test/{guid}",
        "title": guid,
        "summary": text,
        "ordinal": ordinal,
    }


def test_known_entries_skip_the_stages_and_a_committed_body_is_not_parsed() -> None:
    known = CommittedEntries()
    feed, body = "http://feeds.test/a.xml", b"<rss>v1</rss>"
    first = [raw_entry("a", "one", 0), raw_entry("b", "two", 1)]
    assert known.entries_to_process(feed, body_digest(body), 1000, first) == first
    assert not known.body_committed(feed, body_digest(body))
    known.report_committed(feed, 1000, 0)  # a's revision committed; b's was lost by the runner
    again = known.entries_to_process(feed, body_digest(body), 2000, first)
    assert again == [first[1]]  # b is sent on again, a skips normalize, detect and enrich
    known.report_committed(feed, 2000, 1)
    assert known.entries_to_process(feed, body_digest(body), 3000, first) == []
    assert known.body_committed(feed, body_digest(body))  # from now on this body is not even parsed
    edited = [raw_entry("a", "one, edited", 0), first[1]]
    assert known.entries_to_process(feed, body_digest(b"<rss>v2</rss>"), 4000, edited) == [edited[0]]
    assert entry_fingerprint(edited[0]) != entry_fingerprint(first[0])


def test_an_entry_that_keeps_its_guid_but_moves_to_a_new_link_is_processed_again() -> None:
    """The article id comes from the canonical link before the guid (transforms/enrich.py), so a
    moved link is a new article: a fingerprint hit would drop it without it ever being stored."""
    known = CommittedEntries()
    feed = "http://feeds.test/moved.xml"
    entry = raw_entry("a", "one", 0)
    assert known.entries_to_process(feed, "d1", 1000, [entry]) == [entry]
    known.report_committed(feed, 1000, 0)
    moved = {**entry, "link": "http://news.test/a-moved"}
    assert entry_fingerprint(moved) != entry_fingerprint(entry)
    assert known.entries_to_process(feed, "d2", 2000, [moved]) == [moved]


def test_a_prune_of_the_store_makes_the_poll_forget_what_it_knew_committed(tmp_path: Path) -> None:
    """After `prune` retired a partition, an entry still served comes back as version 1 (README);
    fingerprints and committed bodies learnt before would keep it out of the stream for good."""
    from pipeline.maintenance import prune

    feed, entries = "http://feeds.test/pruned.xml", shared_entries()
    entry = raw_entry("pruned", "text", 0)
    assert entries.entries_to_process(feed, "body-1", 1000, [entry]) == [entry]
    commit_pane(spec_for(tmp_path, with_index=True), PARTITION, T0, [article("pruned")])
    entries.report_committed(feed, 1000, 0)
    assert entries.entries_to_process(feed, "body-1", 2000, [entry]) == []
    assert entries.body_committed(feed, "body-1")
    versions = shared_versions(str(tmp_path))
    versions.refresh()
    assert versions.known("pruned") is not None

    prune(str(tmp_path), timedelta(days=30), today=date(2026, 1, 15))
    versions.refresh()
    assert versions.known("pruned") is None
    assert not entries.body_committed(feed, "body-1")
    assert entries.entries_to_process(feed, "body-1", 3000, [entry]) == [entry]


def test_records_report_their_poll_as_committed() -> None:
    feed = "http://feeds.test/reported.xml"
    fetched = datetime(2025, 11, 29, 0, 0, 1, 234000, tzinfo=UTC)
    entries = shared_entries()
    assert entries.entries_to_process(feed, "d1", fetch_millis(fetched), [raw_entry("x", "t", 3)])
    report_records_committed([{"source": feed, "ordinal": 3, "ingested_at": fetched}])
    assert (
        entries.entries_to_process(feed, "d1", fetch_millis(fetched) + 1000, [raw_entry("x", "t", 3)]) == []
    )


def test_polls_of_a_feed_skip_replayed_ticks_and_ask_no_304_before_a_commit(
    feed_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sink reports the entries committed here, so every poll is a full GET that sends them on."""
    from tests.feedserver import conditional
    from tests.test_stream_e2e import ONE, TWO, rss
    from transforms import poll
    from transforms.fetch import FetchSettings
    from transforms.poll import PollFeeds

    # TestStream hands over ticks 2 s apart in event time at once in real time, which a real job would
    # see as a backlog (one poll); the spacing in real time is the exactly-once scenario's to check.
    monkeypatch.setattr(poll, "wait_before_poll", lambda *_: 0.0)

    url = feed_server.route("/etag.xml", conditional(rss(ONE, TWO), '"v1"'))
    ticks = (
        EventStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue(0, T0)])
        .add_elements([TimestampedValue(0, T0)])  # the same tick again: a replayed bundle
        .add_elements([TimestampedValue(1, T0 + 2)])
        .add_elements([TimestampedValue(2, T0 + 4)])
        .advance_watermark_to_infinity()
    )
    settings = FetchSettings(allow_private_hosts=True, max_attempts=1)
    with streaming_pipeline() as p:
        entries, fetches, _ = p | ticks | PollFeeds((FeedSource(url),), 2, 2, settings)
        assert_that(fetches | beam.Map(lambda row: row["outcome"]), equal_to(["ok"] * 3), label="fetches")
        assert_that(entries | beam.Map(lambda e: e["title"]), equal_to([ONE[1], TWO[1]] * 3), label="entries")
    hits = feed_server.hits("/etag.xml")
    assert len(hits) == 3
    assert all("if-none-match" not in hit.headers for hit in hits)
