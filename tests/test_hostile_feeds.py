"""Hostile and careless feeds through the batch job, against a real server on 127.0.0.1.

A slowloris feed (an honest Content-Length, one byte at a time) ends at its total deadline as a
`timeout` fetch row and a dead letter while the other feeds of the run are read in full. A feed
URL with credentials in it (`http://user:password@host/feed`) is fetched with them (basic auth),
but neither the user nor the password is written anywhere: not in a dataset, a manifest, the feed
state, a log line or the report; nor in what a streaming poll emits or keeps in its state.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.pipeline import Pipeline
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.feeds import check_feed_url, unique_feeds
from tests.feedserver import FeedServer, KeyState, Reply, Request
from tests.test_http_pipeline import feed_reply, rows, rss, run
from transforms.feed_state import FeedSource, load_states, state_path
from transforms.fetch import FetchSettings, redact_url
from transforms.poll import _PollShardFn
from transforms.read import ReadSettings, ReadSources
from transforms.read_outputs import FETCHES

pytestmark = pytest.mark.e2e

USER, PASSWORD = "feeduser42", "s3cr3t-Pa55w0rd"


def test_a_slowloris_feed_ends_at_its_deadline_while_the_other_feeds_are_read(
    feed_server: FeedServer,
) -> None:
    settings = ReadSettings(
        fetch=FetchSettings(allow_private_hosts=True, read_timeout=2, total_timeout=1.5, max_attempts=3)
    )
    good = [feed_server.route(f"/good{i}", feed_reply(rss(f"good{i}", 2))) for i in range(3)]
    # 2 KB at one byte every 20 ms: 40 s for the body, and never a pause long enough to time out.
    drip = feed_server.route("/drip", Reply(200, rss("drip", 8), drip_every=0.02))
    with Pipeline(runner=FnApiRunner()) as p:
        entries, fetch_parts, dead, _states = p | beam.Create([*good, drip]) | ReadSources(settings)
        fetches = fetch_parts | "AllFetchRows" >> beam.Flatten()
        assert_that(
            fetches
            | beam.Map(
                lambda r: (r["source"], r["outcome"], r["error_type"], r["error_class"], r["entries"])
            ),
            equal_to(
                [(url, "ok", None, None, 2) for url in good] + [(drip, "error", "timeout", "timeout", 0)]
            ),
            label="OneRowPerFeed",
        )
        assert_that(
            fetches | beam.Filter(lambda r: r["source"] == drip) | beam.Map(lambda r: r["elapsed_ms"] < 2500),
            equal_to([True]),
            label="TheDripEndsAtTheDeadline",
        )
        assert_that(
            dead | beam.Map(lambda d: (d["source"], d["stage"], d["error_type"])),
            equal_to([(drip, "read", "timeout")]),
            label="OneDeadLetter",
        )
        assert_that(entries | beam.Map(lambda e: e["source"]), equal_to(sorted(good * 2)), label="Entries")
    assert len(feed_server.hits("/drip")) == 1  # a deadline is not retried


def _basic_auth(request: Request) -> bool:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return request.headers.get("authorization") == expected


def _behind_basic_auth(reply: Reply) -> Any:
    def answer(request: Request) -> Reply:
        if not _basic_auth(request):
            return Reply(401, b"who are you?", {"WWW-Authenticate": 'Basic realm="feeds"'})
        return reply

    return answer


def _every_written_text(root: Path) -> dict[str, str]:
    """Every file under `root` as text: Parquet read back with pyarrow, the rest as bytes."""
    texts: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            texts[str(path)] = json.dumps(table.to_pylist(), default=str) + str(table.schema)
        else:
            texts[str(path)] = path.read_bytes().decode("latin-1")
    return texts


LINKLESS = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Members</title>'
    b"<link>http://news.example/members</link><language>en</language>"
    b"<item><title>Members only: the council approved the new budget for public transport</title>"
    b'<guid isPermaLink="false">members-1</guid><description>The city council approved the new budget '
    b"for public transport after a long debate on Tuesday.</description></item></channel></rss>"
)


def test_credentials_in_a_feed_url_are_used_but_never_written(
    feed_server: FeedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    s = feed_server
    s.route("/members", _behind_basic_auth(feed_reply(rss("members", 2))))
    s.route("/linkless", _behind_basic_auth(feed_reply(LINKLESS)))
    s.route("/new-home", _behind_basic_auth(feed_reply(rss("moved", 1))))
    s.route("/moved", _behind_basic_auth(Reply(301, headers={"Location": "/new-home"})))
    s.route("/gone", _behind_basic_auth(Reply(404, b"gone")))
    listed = {
        name: f"http://{USER}:{PASSWORD}@{s.host}:{s.port}/{name}"
        for name in ("members", "linkless", "moved", "gone")
    }
    recorded = {name: f"http://***@{s.host}:{s.port}/{name}" for name in listed}
    feeds = [*listed.values(), listed["members"]]  # listed twice: the duplicate is reported, redacted

    run(tmp_path, feeds, "r1")
    run(tmp_path, feeds, "r2", "--force")  # the stored state (by recorded URL) is found and used

    for request in s.requests:
        assert _basic_auth(request), request.path  # every request carried the credentials
    assert len(s.hits("/moved")) == 1 and len(s.hits("/new-home")) == 2  # r2 went to where it moved
    fetches = {row["source"]: row for row in rows(tmp_path, "feed_fetches", "r1")}
    assert set(fetches) == set(recorded.values())
    assert fetches[recorded["members"]]["articles_written"] == 2
    assert fetches[recorded["moved"]]["final_url"] == s.url("/new-home")
    assert fetches[recorded["gone"]]["error_type"] == "http_404"
    articles = rows(tmp_path, "articles", "r1")
    assert sorted(a["source"] for a in articles) == sorted(
        [recorded["members"]] * 2 + [recorded["linkless"], recorded["moved"]]
    )
    (linkless,) = [a for a in articles if a["source"] == recorded["linkless"]]
    assert linkless["article_id_source"] == "entry_id"  # made from the recorded (redacted) source
    dead = rows(tmp_path, "dead_letters", "r1")
    assert [(d["source"], d["error_type"]) for d in dead] == [(recorded["gone"], "http_404")]
    states = load_states(state_path(str(tmp_path / "out")))
    assert set(states) == set(recorded.values())
    assert states[recorded["moved"]].fetch_url == s.url("/new-home")
    second = {row["source"]: row for row in rows(tmp_path, "feed_fetches", "r2")}
    assert second[recorded["members"]]["outcome"] == "ok"
    assert rows(tmp_path, "articles", "r2") == []  # the same ids: already stored

    written = _every_written_text(tmp_path / "out")
    assert any(p.endswith(".json") for p in written) and any(p.endswith(".parquet") for p in written)
    captured = capsys.readouterr()
    written |= {"stdout": captured.out, "stderr": captured.err, "log": caplog.text}
    assert "duplicate of" in captured.err and recorded["members"] in captured.err
    assert recorded["gone"] in captured.out  # the report names the failing feed
    for where, text in written.items():
        assert PASSWORD not in text, where
        assert USER not in text, where


def test_stream_polls_of_a_feed_with_credentials_use_them_and_record_them_redacted(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transforms import poll as poll_module

    # The two ticks come at once in real time, which a real job would see as a backlog (one poll).
    monkeypatch.setattr(poll_module, "wait_before_poll", lambda *_: 0.0)
    s = feed_server
    s.route("/new-home", _behind_basic_auth(feed_reply(rss("moved", 1))))
    s.route("/moved", _behind_basic_auth(Reply(301, headers={"Location": "/new-home"})))
    listed = f"http://{USER}:{PASSWORD}@{s.host}:{s.port}/moved"
    poll = _PollShardFn(FetchSettings(allow_private_hosts=True, max_attempts=1), (FeedSource(listed),), 1)
    poll.setup()
    conditions = KeyState()
    try:  # two ticks a poll interval apart; the outputs come timestamped with their fetch
        polled = [o for tick in (0, 1) for o in poll.process(("0", tick), conditions, tick=float(tick))]
    finally:
        poll.teardown()
    outputs = [TaggedOutput(o.tag, o.value.value) if isinstance(o, TaggedOutput) else o.value for o in polled]
    assert [r.path for r in s.requests] == ["/moved", "/new-home", "/new-home"]  # the move is kept
    assert all(_basic_auth(r) for r in s.requests)
    fetches = [o.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == FETCHES]
    entries = [o for o in outputs if isinstance(o, dict)]
    assert [(r["source"], r["outcome"]) for r in fetches] == [(redact_url(listed), "ok")] * 2
    assert [e["source"] for e in entries] == [redact_url(listed)] * 2
    recorded = json.dumps([fetches, entries, conditions.value], default=str)
    assert PASSWORD not in recorded and USER not in recorded


def test_listings_that_differ_only_in_credentials_are_one_feed_reported_redacted() -> None:
    listings = [
        ("feeds[0]", FeedSource("https://alice:first-secret@news.example/feed")),
        ("feeds[1]", FeedSource("https://bob:second-secret@News.Example:443/feed")),
    ]
    feeds = unique_feeds(listings)
    assert [feed.url for feed in feeds.feeds] == ["https://alice:first-secret@news.example/feed"]
    assert feeds.problems == [
        "feeds[1]: duplicate of feeds[0] (https://***@news.example/feed): https://***@News.Example:443/feed"
    ]
    with pytest.raises(ValueError, match=r"'ftp://\*\*\*@news.example/' is not an http\(s\) URL") as error:
        check_feed_url("ftp://carol:third-secret@news.example/")
    assert "secret" not in str(error.value)
