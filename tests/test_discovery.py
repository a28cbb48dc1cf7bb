"""Feed discovery: a page listed as a feed is read through the feeds its `<link rel="alternate">` name."""

from __future__ import annotations

from typing import Any

import pytest
from apache_beam.pvalue import TaggedOutput

from tests.feedserver import FeedServer, Reply
from transforms.discover import discover_feeds
from transforms.fetch import FetchSettings, make_session
from transforms.read_feeds import read_feed
from transforms.read_outputs import DEAD_LETTERS, FETCHES
from transforms.read_settings import ReadSettings

SETTINGS = ReadSettings(fetch=FetchSettings(allow_private_hosts=True, max_attempts=1, total_timeout=10))
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Found</title>
<item><title>Discovered article</title><link>https://example.com/a</link><guid>a</guid></item></channel></rss>"""
HTML = {"Content-Type": "text/html; charset=utf-8"}


def page(*links: str) -> bytes:
    head = "".join(links)
    return f"<!doctype html><html><head><title>Home</title>{head}</head><body>Hi</body></html>".encode()


def read(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    session = make_session(SETTINGS.fetch)
    try:
        outputs = read_feed(session, url, None, SETTINGS)
    finally:
        session.close()
    rows = [o.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == FETCHES]
    dead = [o.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == DEAD_LETTERS]
    return rows, [o for o in outputs if isinstance(o, dict)], dead


@pytest.fixture
def server() -> Any:
    with FeedServer() as feed_server:
        yield feed_server


def test_a_page_with_two_alternates_one_broken_reads_the_good_one(server: FeedServer) -> None:
    server.route("/feed.xml", Reply(200, RSS, {"Content-Type": "application/rss+xml"}))
    server.route("/broken.atom", Reply(500, b"down"))
    listed = server.route(
        "/",
        Reply(
            200,
            page(
                '<link rel="alternate" type="application/rss+xml" href="/feed.xml">',
                '<link rel="alternate" type="application/atom+xml" href="broken.atom">',
                '<link rel="alternate" type="application/rss+xml" href="/feed.xml#again">',  # a repeat
                '<link rel="stylesheet" type="text/css" href="/style.css">',
            ),
            HTML,
        ),
    )
    rows, entries, dead = read(listed)
    by_source = {row["source"]: row for row in rows}
    assert list(by_source) == [listed, server.url("/feed.xml"), server.url("/broken.atom")]
    assert (by_source[listed]["outcome"], by_source[listed]["error_type"]) == ("ok", "feeds_discovered")
    assert by_source[listed].get("discovered_from") is None
    good, broken = by_source[server.url("/feed.xml")], by_source[server.url("/broken.atom")]
    assert (good["outcome"], good["entries"], good["discovered_from"]) == ("ok", 1, listed)
    assert (broken["outcome"], broken["error_type"], broken["discovered_from"]) == (
        "error",
        "http_500",
        listed,
    )
    assert [(e["title"], e["source"]) for e in entries] == [("Discovered article", server.url("/feed.xml"))]
    assert [d["error_type"] for d in dead] == ["http_500"]
    assert len(server.hits("/feed.xml")) == 1  # deduplicated, the fragment dropped


def test_a_page_naming_no_feed_stays_not_a_feed(server: FeedServer) -> None:
    listed = server.route("/plain", Reply(200, page('<link rel="icon" href="/favicon.ico">'), HTML))
    rows, entries, dead = read(listed)
    assert [(r["source"], r["outcome"], r["error_type"]) for r in rows] == [
        (listed, "not_a_feed", "html_page")
    ]
    assert entries == [] and [d["error_type"] for d in dead] == ["html_page"]


def test_a_discovered_page_is_not_followed(server: FeedServer) -> None:
    # /a names /b as its feed; /b is a page again, naming /c: /b is read once, /c never.
    server.route("/c", Reply(200, RSS, {"Content-Type": "application/rss+xml"}))
    server.route("/b", Reply(200, page('<link rel="alternate" type="application/rss+xml" href="/c">'), HTML))
    listed = server.route(
        "/a", Reply(200, page('<link rel="alternate" type="application/rss+xml" href="/b">'), HTML)
    )
    rows, entries, _dead = read(listed)
    assert [(r["source"], r["outcome"]) for r in rows] == [(listed, "ok"), (server.url("/b"), "not_a_feed")]
    assert server.hits("/c") == [] and entries == []


def test_discovery_is_bounded_and_resolves_against_base() -> None:
    links = "".join(f'<link rel="alternate" type="application/atom+xml" href="f{n}">' for n in range(10))
    html = f'<html><head><base href="https://example.com/sub/">{links}</head></html>'.encode()
    assert discover_feeds(html, "https://example.com/", limit=3) == [
        "https://example.com/sub/f0",
        "https://example.com/sub/f1",
        "https://example.com/sub/f2",
    ]
