"""Feeds over HTTP through the whole batch job: `newsbeam run` against a real server on 127.0.0.1.

Every broken feed ends as its named `feed_fetches` row (and a dead letter when it failed) while the
good feeds of the same run are written in full; a second run sends the stored validators and
writes nothing new; fresh and failing feeds are skipped until due; `--force` polls them anyway.
Outputs are read back with DuckDB and pyarrow, the way users read them.
"""

from __future__ import annotations

import resource
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main
from tests.conftest import sql
from tests.feedserver import FeedServer, Reply, conditional, gzip_bomb
from transforms.feed_state import (
    FeedState,
    StatePolicy,
    _WriteStateFn,
    load_states,
    poll_decision,
    rss_ttl_seconds,
    state_after,
    state_path,
    write_states,
)
from transforms.fetch import FetchSettings
from transforms.io.lock import CommitLock
from transforms.read import ReadSettings, ReadSources

pytestmark = pytest.mark.e2e

FETCH = {
    "connect_timeout": 1,
    "read_timeout": 0.5,
    "total_timeout": 4,
    "max_attempts": 2,
    "backoff_base": 0.01,
    "max_retry_after": 2,
    "max_bytes": 65536,
    "allow_private_hosts": True,  # the test server is on 127.0.0.1
    "max_concurrent": 8,
    "max_per_host": 4,
}
SENTENCES = (
    "The city council approved the new budget for public transport after a long debate on Tuesday.",
    "Farmers in the valley expect a good harvest this autumn thanks to the mild and rainy spring.",
    "The museum opens a new exhibition of modern photography from around the world next month.",
    "Scientists measured the water temperature of the lake every week during the whole summer.",
    "Local schools will receive more teachers and new computers at the start of the school year.",
)


def rss(
    name: str, entries: int, *, ttl: int | None = None, encoding: str = "utf-8", title: str = ""
) -> bytes:
    items = "".join(
        f"<item><title>{title or name} story {i}: {SENTENCES[i % len(SENTENCES)][:40]}</title>"
        f"<link>http://news.example/{name}/{i}</link><guid>http://news.example/{name}/{i}</guid>"
        f"<description>{SENTENCES[i % len(SENTENCES)]} {SENTENCES[(i + 1) % len(SENTENCES)]}</description>"
        "</item>"
        for i in range(entries)
    )
    ttl_element = f"<ttl>{ttl}</ttl>" if ttl is not None else ""
    return (
        f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://news.example/{name}</link><language>en</language>{ttl_element}{items}</channel></rss>"
    ).encode(encoding)


def feed_reply(body: bytes, **headers: str) -> Reply:
    return Reply(200, body, {"Content-Type": "application/rss+xml", **headers})


def run(
    tmp_path: Path, feeds: list[str], run_id: str, *extra: str, state: dict[str, Any] | None = None
) -> None:
    config = {
        "runner": "direct",
        "output": str(tmp_path / "out"),
        "inputs": [],
        "feeds": [{"url": url} for url in feeds],
        "fetch": FETCH,
        "state": state or {},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", "--config", str(path), "--run-id", run_id, *extra]) == 0


def rows(tmp_path: Path, dataset: str, run_id: str) -> list[dict[str, Any]]:
    files = sorted(str(p) for p in (tmp_path / "out" / dataset).glob("**/*.parquet"))
    if not files:
        return []
    relation = sql(
        f"SELECT * FROM read_parquet({files!r}, hive_partitioning = true) WHERE run_id = '{run_id}'"
    )
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def by_source(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(record["source"], []).append(record)
    return grouped


def test_broken_feeds_end_as_named_rows_while_the_others_are_written_in_full(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = feed_server
    good = [s.route(f"/good{i}", feed_reply(rss(f"good{i}", 3))) for i in range(2)]
    flaky = s.route("/flaky", Reply(500, b"busy"), feed_reply(rss("flaky", 3)))
    limited = s.route("/limited", Reply(429, headers={"Retry-After": "1"}), feed_reply(rss("limited", 3)))
    cp1252 = rss("charset", 2, encoding="windows-1252", title="Café crème")
    charset = s.route("/charset", Reply(200, cp1252, {"Content-Type": "application/rss+xml; charset=utf-8"}))
    s.route("/loop-b", Reply(302, headers={"Location": "/loop-a"}))
    page = b"<!DOCTYPE html><html><body><h1>Hello</h1></body></html>"
    html = Reply(200, page, {"Content-Type": "text/html"})
    stall = Reply(200, rss("stall", 3), stall_after=40, stall_seconds=3)
    to_file = Reply(302, headers={"Location": "file:///etc/passwd"})
    bomb = Reply(200, gzip_bomb(50 * 1024 * 1024), {"Content-Encoding": "gzip"})
    broken = {  # name: (url, outcome, error_type)
        "reset": (s.route("/reset", Reply(reset=True)), "error", "connection_error"),
        "stall": (s.route("/stall", stall), "error", "read_timeout"),
        "big": (s.route("/big", feed_reply(rss("big", 400))), "error", "too_large"),
        "bomb": (s.route("/bomb", bomb), "error", "too_large"),
        "loop": (s.route("/loop-a", Reply(302, headers={"Location": "/loop-b"})), "error", "redirect_loop"),
        "passwd": (s.route("/passwd", to_file), "error", "bad_redirect_scheme"),
        "html": (s.route("/html", html), "not_a_feed", "html_page"),
        "empty": (s.route("/empty", feed_reply(b"")), "not_a_feed", "empty_body"),
        "missing": (s.route("/missing", Reply(404, b"not found")), "error", "http_404"),
    }  # fmt: skip
    run(tmp_path, [*good, flaky, limited, charset, *(url for url, _o, _e in broken.values())], "r1")

    fetches = {row["source"]: row for row in rows(tmp_path, "feed_fetches", "r1")}
    articles = by_source(rows(tmp_path, "articles", "r1"))
    dead = by_source(rows(tmp_path, "dead_letters", "r1"))
    assert len(fetches) == 14

    for url in (*good, flaky, limited):
        row = fetches[url]
        assert (row["outcome"], row["http_status"], row["entries"], row["articles_written"]) == (
            "ok",
            200,
            3,
            3,
        )
        assert len(articles[url]) == 3 and url not in dead
        assert row["bytes"] > 0 and row["error_type"] is None
    assert (fetches[flaky]["attempts"], fetches[limited]["attempts"], fetches[good[0]]["attempts"]) == (
        2,
        2,
        1,
    )

    # A wrong charset header: parsed with the right encoding anyway, and the warning kept.
    assert fetches[charset]["outcome"] == "ok_with_warnings" and fetches[charset]["articles_written"] == 2
    assert all(a["title"].startswith("Café crème story") for a in articles[charset])

    for name, (url, outcome, error_type) in broken.items():
        row = fetches[url]
        assert (row["outcome"], row["error_type"]) == (outcome, error_type), name
        assert row["entries"] == 0 and url not in articles, name
        assert [d["error_type"] for d in dead[url]] == [error_type], name
    assert (
        fetches[broken["reset"][0]]["attempts"] == 2
        and fetches[broken["reset"][0]]["error_class"] == "network"
    )
    assert fetches[broken["stall"][0]]["error_class"] == "timeout"
    assert fetches[broken["bomb"][0]]["error_class"] == "body"
    assert fetches[broken["passwd"][0]]["error_class"] == "policy"
    assert fetches[broken["missing"][0]]["http_status"] == 404
    assert (
        dead[broken["html"][0]][0]["stage"] == "parse"
        and "<h1>Hello" in dead[broken["html"][0]][0]["excerpt"]
    )
    assert dead[broken["reset"][0]][0]["stage"] == "read"
    assert not s.hits("/etc/passwd")
    report = capsys.readouterr().out
    assert "failing inputs:    9" in report
    assert f"{broken['reset'][0]}: connection_error (2 attempts)" in report
    assert f"{broken['missing'][0]}: http_404 (HTTP 404, 1 attempts)" in report


def test_second_run_sends_validators_and_writes_nothing_new_then_force_polls_all(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = feed_server
    tagged = s.route("/tagged", conditional(rss("tagged", 4), '"v1"', "Sat, 28 Nov 2026 10:00:00 GMT"))
    fresh = s.route("/fresh", feed_reply(rss("fresh", 2, ttl=60)))
    s.route("/new-home", conditional(rss("moved", 2), '"m1"'))
    moved = s.route("/moved", Reply(301, headers={"Location": "/new-home"}))
    failing = s.route("/failing", Reply(500, b"down"))
    feeds = [tagged, fresh, moved, failing]
    policy = {"backoff_after": 1, "backoff_base": "10m"}

    run(tmp_path, feeds, "r1", state=policy)
    first = {row["source"]: row for row in rows(tmp_path, "feed_fetches", "r1")}
    assert first[tagged]["etag"] == '"v1"' and first[tagged]["articles_written"] == 4
    assert first[moved]["final_url"] == s.url("/new-home") and first[moved]["articles_written"] == 2
    states = load_states(state_path(str(tmp_path / "out")))
    assert states[tagged].etag == '"v1"' and states[moved].fetch_url == s.url("/new-home")
    assert states[failing].consecutive_failures == 1 and states[failing].next_poll_at is not None
    assert states[fresh].next_poll_at is not None  # its <ttl> of 60 minutes

    run(tmp_path, feeds, "r2", state=policy)
    second = {row["source"]: row for row in rows(tmp_path, "feed_fetches", "r2")}
    assert rows(tmp_path, "articles", "r2") == []  # nothing new written
    assert (second[tagged]["outcome"], second[tagged]["http_status"], second[tagged]["bytes"]) == (
        "not_modified",
        304,
        None,
    )
    assert s.hits("/tagged")[-1].headers["if-none-match"] == '"v1"'
    assert second[moved]["outcome"] == "not_modified" and second[moved]["url"] == s.url("/new-home")
    assert len(s.hits("/moved")) == 1  # the permanent redirect was remembered
    assert (second[fresh]["outcome"], second[fresh]["error_type"]) == ("skipped", "fresh")
    assert (second[failing]["outcome"], second[failing]["error_type"]) == ("skipped", "backing_off")
    assert len(s.hits("/fresh")) == 1 and len(s.hits("/failing")) == 2  # r1's two attempts only
    assert rows(tmp_path, "dead_letters", "r2") == []
    report = capsys.readouterr().out.split("newsbeam run r2")[1]
    assert "not_modified 2" in report and "skipped 2" in report
    assert (
        f"backing off:       1 failing feeds not polled this run\n    {failing}: not polled until" in report
    )

    run(tmp_path, feeds, "r3", "--force", state=policy)
    third = {row["source"]: row for row in rows(tmp_path, "feed_fetches", "r3")}
    assert third[fresh]["outcome"] == "ok" and len(s.hits("/fresh")) == 2
    assert third[failing]["outcome"] == "error" and len(s.hits("/failing")) == 4
    assert load_states(state_path(str(tmp_path / "out")))[failing].consecutive_failures == 2


def test_state_is_kept_when_the_run_did_not_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "_state" / "feeds.parquet")
    write_states(path, [FeedState(url="http://a.example/feed", etag='"old"')])
    before = Path(path).read_bytes()
    fn = _WriteStateFn(path)
    assert (
        list(fn.process([FeedState(url="http://a.example/feed", etag='"new"')], {"status": "committing"}))
        == []
    )
    assert Path(path).read_bytes() == before
    written = list(fn.process([FeedState(url="http://b.example/feed")], {"status": "committed"}))
    assert written == [{"path": path, "feeds": 2}]  # merged: a feed not in this run keeps its state
    assert load_states(path)["http://a.example/feed"].etag == '"old"'
    assert [p.name for p in (tmp_path / "_state").iterdir()] == ["feeds.parquet"]  # no temporary left
    assert pq.read_table(path).num_rows == 2


def test_the_state_merge_waits_for_the_commit_lock(tmp_path: Path) -> None:
    """Two runs finishing together: the second merges into what the first wrote, under the lock."""
    output = str(tmp_path / "out")
    path = state_path(output)
    write_states(path, [FeedState(url="http://a.example/feed", etag='"a"')])
    results: list[Any] = []
    with CommitLock(output, "another run"):
        writer = threading.Thread(
            target=lambda: results.extend(
                _WriteStateFn(path, output).process(
                    [FeedState(url="http://b.example/feed")], {"status": "committed", "run_id": "r2"}
                )
            )
        )
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and results == []  # waiting for the lock
        # What the lock holder writes meanwhile must survive the waiting run's merge.
        write_states(path, [*load_states(path).values(), FeedState(url="http://c.example/feed")])
    writer.join(10)
    assert results == [{"path": path, "feeds": 3}]
    assert sorted(load_states(path)) == [
        "http://a.example/feed",
        "http://b.example/feed",
        "http://c.example/feed",
    ]


def test_an_unreadable_state_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "_state" / "feeds.parquet"
    path.parent.mkdir()
    path.write_bytes(b"not parquet")
    assert load_states(str(path)) == {}
    written = list(
        _WriteStateFn(str(path)).process([FeedState(url="http://a.example/")], {"status": "committed"})
    )
    assert written == [{"path": str(path), "feeds": 1}] and list(load_states(str(path))) == [
        "http://a.example/"
    ]


def test_200_feeds_in_one_run_are_all_written(feed_server: FeedServer, tmp_path: Path) -> None:
    feeds = [feed_server.route(f"/feed{i}", feed_reply(rss(f"feed{i}", 5))) for i in range(200)]
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(tmp_path, feeds, "big")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    fetches = rows(tmp_path, "feed_fetches", "big")
    assert len(fetches) == 200 and {r["outcome"] for r in fetches} == {"ok"}
    assert sum(r["articles_written"] for r in fetches) == 1000
    articles = by_source(rows(tmp_path, "articles", "big"))
    assert sorted(articles) == sorted(feeds) and {len(a) for a in articles.values()} == {5}
    # 200 small feeds must not grow the process by more than a generous bound.
    assert grown_mib < 400, f"peak RSS grew by {grown_mib:.0f} MiB"


# --- the state rules, as pure functions ----------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
POLICY = StatePolicy(
    backoff_after=2, backoff_base_seconds=600, backoff_max_seconds=3600, max_fresh_seconds=7200
)


def after(previous: FeedState | None, outcome: str, **values: Any) -> FeedState:
    defaults: dict[str, Any] = {
        "status": 200,
        "error_type": None,
        "etag": None,
        "last_modified": None,
        "permanent_redirect": None,
        "fresh_seconds": None,
        "poll_interval": None,
    }
    return state_after(
        previous, "http://a.example/feed", NOW, outcome=outcome, policy=POLICY, **(defaults | values)
    )


def test_success_stores_validators_and_the_feeds_own_freshness() -> None:
    state = after(None, "ok", etag='"e"', last_modified="Sat, 28 Nov 2026 10:00:00 GMT", fresh_seconds=1800)
    assert (state.etag, state.consecutive_failures, state.next_poll_at) == (
        '"e"',
        0,
        NOW + timedelta(minutes=30),
    )
    assert poll_decision(state, NOW + timedelta(minutes=10)) == "fresh"
    assert poll_decision(state, NOW + timedelta(minutes=10), force=True) is None
    assert poll_decision(state, NOW + timedelta(minutes=30)) is None
    # a ttl of a week is shortened to max_fresh; the config's poll_interval counts too
    assert after(None, "ok", fresh_seconds=7 * 86400).next_poll_at == NOW + timedelta(seconds=7200)
    assert after(None, "ok", poll_interval=900).next_poll_at == NOW + timedelta(seconds=900)
    assert after(None, "ok").next_poll_at is None


def test_a_304_keeps_the_stored_validators_and_a_failure_keeps_them_too() -> None:
    stored = after(None, "ok", etag='"e"', last_modified="lm")
    assert (after(stored, "not_modified", status=304).etag, after(stored, "not_modified").last_modified) == (
        '"e"',
        "lm",
    )
    failed = after(stored, "error", status=500, error_type="http_500", etag='"from-error-page"')
    assert (failed.etag, failed.last_error_type, failed.last_success_at) == ('"e"', "http_500", NOW)


def test_failing_feeds_back_off_for_a_growing_interval() -> None:
    state: FeedState | None = None
    waits = []
    for _ in range(5):
        state = after(state, "error", status=500, error_type="http_500")
        waits.append(None if state.next_poll_at is None else (state.next_poll_at - NOW).total_seconds())
    assert waits == [None, 600, 1200, 2400, 3600]  # from the 2nd failure, doubling, capped
    assert state is not None and poll_decision(state, NOW + timedelta(minutes=5)) == "backing_off"
    assert after(state, "ok").consecutive_failures == 0


def test_permanent_redirect_is_remembered() -> None:
    moved = after(None, "ok", permanent_redirect="http://b.example/feed")
    assert moved.target == "http://b.example/feed"
    assert after(moved, "not_modified").fetch_url == "http://b.example/feed"


def test_rss_ttl() -> None:
    assert rss_ttl_seconds(b"<rss><channel><ttl> 60 </ttl></channel></rss>") == 3600
    assert rss_ttl_seconds(b"<rss><channel></channel></rss>") is None
    assert rss_ttl_seconds(None) is None


def test_per_host_limit_holds_across_workers_while_hosts_are_fetched_at_once() -> None:
    settings = ReadSettings(
        fetch=FetchSettings(allow_private_hosts=True, max_concurrent=8, max_per_host=2, max_attempts=1)
    )
    with FeedServer("127.0.0.1", latency=0.1) as first, FeedServer("127.0.0.2", latency=0.1) as second:
        urls = [
            server.route(f"/f{i}", feed_reply(rss(f"{server.host}-{i}", 1)))
            for server in (first, second)
            for i in range(12)
        ]
        options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_threading")
        with Pipeline(runner=FnApiRunner(), options=options) as p:
            entries, fetch_parts, dead, _states = p | beam.Create(urls) | ReadSources(settings)
            fetches = fetch_parts | "AllFetchRows" >> beam.Flatten()
            assert_that(
                fetches | beam.Map(lambda r: (r["source"], r["outcome"])),
                equal_to([(url, "ok") for url in urls]),
                label="EveryFeedFetched",
            )
            assert_that(entries | beam.Map(lambda e: e["source"]), equal_to(urls), label="OneEntryEach")
            assert_that(dead, equal_to([]), label="NoDeadLetters")
        assert (first.max_in_flight, second.max_in_flight) == (2, 2)
        assert len(first.requests) == len(second.requests) == 12
        # Both hosts were served at the same time, not one after the other.
        assert min(r.at for r in second.requests) < max(r.at for r in first.requests)
