"""ExtractFullText in a Beam pipeline against real local servers: every page ends as the right text.

A feed's articles link to pages on 127.0.0.1 that an article fetcher meets: a real article, a
consent wall, a paywall stub, a redirect chain, a redirect from a public host to a private address,
a wrong charset, a PDF, a 10 MB page, a page that stalls. Each article comes out (none is lost) with
the right `text_source`, page outcome and provenance; one `page_fetches` row per page request.
Articles that must not be fetched (a feed file's, a stored revision, a feed whose mode is off, a
feed text that is no teaser) make no request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import Pipeline

import transforms.fetch as fetch_module
import transforms.fetch_connection as connection_module
from benchmarks.bench_extract import comparable, feed_fields, load_pages
from tests.feedserver import FeedServer, Reply
from tests.test_extract import CONSENT, PARAGRAPHS, SUMMARY, TITLE, UMLAUT_SUMMARY, article_html, umlaut_page
from transforms.extract import extract_page
from transforms.fetch import FetchSettings
from transforms.fulltext import (
    ExtractFullText,
    FullTextMode,
    FullTextSettings,
    feed_text_source,
    page_wanted,
    with_page,
)
from transforms.pages import PageFetch, PageOutcome, PageSettings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HTML = {"Content-Type": "text/html; charset=utf-8"}
FAST = FetchSettings(
    allow_private_hosts=True,
    connect_timeout=1.0,
    read_timeout=1.0,
    total_timeout=3.0,
    max_attempts=2,
    backoff_base=0.01,
    max_concurrent=4,
)
PUBLISHED = "<meta property='article:published_time' content='2026-11-30T08:15:00+01:00'>"
AUTHOR = "<meta name='author' content='Jane Doe'>"
PAGE = article_html(body_top=f"<p class='standfirst'>{SUMMARY}</p>").encode()
ARTICLE = article_html(  # the "real" page: what the feed lacks is on it
    head=PUBLISHED + AUTHOR + "<link rel='canonical' href='/canonical/tram'>",
    body_top=f"<p class='standfirst'>{SUMMARY}</p>",
)


def feed_article(url: str, *, source: str, text: str | None = SUMMARY, **fields: Any) -> dict[str, Any]:
    """An article record as ProcessArticles hands it to the full-text stage (feed text = its summary)."""
    return {
        "source": source,
        "source_type": "feed",
        "url": url,
        "title": TITLE,
        "summary": text,
        "text": text,
        "authors": [],
        "tags": [],
        "published_at": None,
        "published_offset_minutes": None,
        "published_at_source": "none",
        "updated_at": None,
        "updated_offset_minutes": None,
        "updated_at_source": "none",
        "language_declared_raw": None,
        "article_id": url.rsplit("/", 1)[-1],
        "content_hash": f"hash-of-{url}",
        "already_stored": False,
        **fields,
    }


def run_fulltext(
    articles: list[dict[str, Any]], settings: FullTextSettings, out: Path, *options: str
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(articles by article_id, page_fetches rows) after ExtractFullText, read back from JSON lines."""
    with Pipeline(options=PipelineOptions(list(options))) as pipeline:
        result = (
            pipeline
            | "Articles" >> beam.Create(articles)
            | "Spread" >> beam.Reshuffle()
            | "FullText" >> ExtractFullText(settings, str(out / "run"), NOW)
        )
        for name, pcoll in (("articles", result.articles), ("page_fetches", result.page_fetches)):
            (
                pcoll
                | f"{name}WithPid" >> beam.Map(lambda record: {**record, "pid": os.getpid()})
                | f"{name}ToJson" >> beam.Map(json.dumps, default=str)
                | f"Write{name}" >> beam.io.WriteToText(str(out / name), shard_name_template="")
            )
    written = {
        name: [json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines()]
        for name in ("articles", "page_fetches")
    }
    return {a["article_id"]: a for a in written["articles"]}, written["page_fetches"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    tmp = tmp_path_factory.mktemp("fulltext")
    real_ip_is_private = connection_module.ip_is_private
    with FeedServer() as server, FeedServer("127.0.0.2") as public, pytest.MonkeyPatch.context() as patch:
        # 127.0.0.2 plays a public host; a redirect from it to 127.0.0.1 is to a private address.
        for module in (fetch_module, connection_module):  # the address rule, and the redirect's origin
            patch.setattr(module, "ip_is_private", lambda ip: ip != "127.0.0.2" and real_ip_is_private(ip))
        feed = server.url("/feed.xml")
        article = ARTICLE
        pages = {
            "real": Reply(200, article.encode(), HTML),
            "consent": Reply(200, f"<html><body><div>{CONSENT}</div></body></html>".encode(), HTML),
            "paywall": Reply(
                200,
                article_html(
                    paragraphs=(),
                    body_top=f"<p>{SUMMARY}</p><div class='paywall'><p>Subscribe to read on.</p></div>",
                ).encode(),
                HTML,
            ),
            "hop1": Reply(301, headers={"Location": "/hop2"}),
            "hop2": Reply(302, headers={"Location": "/hop3"}),
            "hop3": Reply(200, article.encode(), HTML),
            "charset": Reply(200, umlaut_page("windows-1252").encode("cp1252"), HTML),  # header says utf-8
            "pdf": Reply(200, b"%PDF-1.7\n" + b"0" * 2000, {"Content-Type": "application/pdf"}),
            "huge": Reply(200, b"<html><body>" + b"x" * (10 * 1024 * 1024), HTML),
            "stall": Reply(200, article.encode(), HTML, stall_after=100, stall_seconds=5),
            "shared": Reply(200, article.encode(), HTML),
        }
        urls = {name: server.route(f"/{name}", reply) for name, reply in pages.items()}
        urls["private"] = public.route("/private", Reply(302, headers={"Location": urls["real"]}))
        articles = [
            feed_article(url, source=feed, article_id=name)
            for name, url in urls.items()
            if name not in ("hop2", "hop3", "charset")
        ]
        articles.extend(
            [
                feed_article(
                    urls["charset"],
                    source=feed,
                    article_id="charset_de",
                    summary=UMLAUT_SUMMARY,
                    text=UMLAUT_SUMMARY,
                ),
                feed_article(urls["shared"], source=server.url("/other-feed.xml"), article_id="shared_again"),
                feed_article(server.url("/known"), source=feed, article_id="known", already_stored=True),
                feed_article(server.url("/from-file"), source="/data/feeds/a.xml", article_id="file"),
                feed_article(server.url("/off"), source=server.url("/quiet.xml"), article_id="off"),
                feed_article(
                    server.url("/long"), source=feed, article_id="long", text=" ".join(PARAGRAPHS * 3)
                ),
                {
                    **feed_article(server.url("/seed"), source=feed, article_id="seed"),
                    "source_type": "seed_file",
                },
            ]
        )
        settings = FullTextSettings(
            pages=PageSettings(fetch=FAST, min_interval_seconds=0.0),
            mode=FullTextMode.AUTO,
            min_words=100,
            feed_modes={server.url("/quiet.xml"): FullTextMode.OFF},
        )
        by_id, rows = run_fulltext(articles, settings, tmp)
        yield by_id, rows, server, public, urls


def test_every_article_comes_out_once(scenario: tuple[Any, ...]) -> None:
    by_id, rows, *_ = scenario
    assert sorted(by_id) == sorted(
        [
            "real",
            "consent",
            "paywall",
            "hop1",
            "pdf",
            "huge",
            "stall",
            "shared",
            "private",
            "charset_de",
            "shared_again",
            "known",
            "file",
            "off",
            "long",
            "seed",
        ]
    )
    # One row per page request or refusal: the shared page once, nothing for articles not fetched.
    assert sorted(r["url"].rsplit("/", 1)[-1] for r in rows) == sorted(
        ["real", "consent", "paywall", "hop1", "charset", "pdf", "huge", "stall", "shared", "private"]
    )


def test_a_real_article_page_gives_the_article_and_fills_what_the_feed_lacks(
    scenario: tuple[Any, ...],
) -> None:
    by_id, rows, server, *_ = scenario
    article = by_id["real"]
    assert article["text_source"] == "page" and article["page_outcome"] == "ok"
    assert "rubber mats to keep vibrations away from the medieval cellars" in article["text"]
    assert "Subscribe to our newsletter" not in article["text"]
    assert article["summary"] == SUMMARY  # the feed's teaser stays
    assert article["content_hash"] == f"hash-of-{server.url('/real')}"  # the feed's, untouched
    assert (article["page_url"], article["page_status"]) == (server.url("/real"), 200)
    assert article["page_canonical_url"] == server.url("/canonical/tram")
    assert (article["published_at"], article["published_at_source"]) == (
        "2026-11-30 07:15:00+00:00",
        "page:meta",
    )
    assert (article["authors"], article["authors_source"]) == (["Jane Doe"], "page:meta")
    assert (article["language_declared_raw"], article["language_declared_source"]) == (
        "en-GB",
        "page:html_lang",
    )
    assert article["extractor"] == "trafilatura" and article["extractor_version"].endswith("+rules.1")
    row = next(r for r in rows if r["url"].endswith("/real"))
    assert (row["outcome"], row["robots"], row["http_status"], row["reason"]) == (
        "ok",
        "no_robots",
        200,
        "short",
    )
    assert row["bytes"] == len(ARTICLE.encode())


@pytest.mark.parametrize(
    ("article_id", "outcome", "rejection"),
    [
        ("consent", "extract_rejected", "off_topic"),
        ("paywall", "extract_rejected", "no_gain"),
        ("pdf", "not_html", None),
        ("huge", "too_large", None),
        ("stall", "timeout", None),
        ("private", "private_address", None),
    ],
)
def test_a_page_that_is_no_upgrade_keeps_the_feeds_text_and_says_why(
    scenario: tuple[Any, ...], article_id: str, outcome: str, rejection: str | None
) -> None:
    by_id, rows, *_ = scenario
    article = by_id[article_id]
    assert (article["text"], article["summary"]) == (SUMMARY, SUMMARY)
    assert (article["text_source"], article["page_outcome"]) == ("feed_summary", outcome)
    assert article["extractor"] is None
    row = next(r for r in rows if r["url"].endswith(f"/{article_id}"))
    assert (row["outcome"], row["rejection"]) == (outcome, rejection)


def test_the_private_redirect_target_is_never_requested(scenario: tuple[Any, ...]) -> None:
    _by_id, rows, server, public, _urls = scenario
    row = next(r for r in rows if r["url"].endswith("/private"))
    assert row["error_type"] == "private_redirect" and len(public.hits("/private")) == 1
    assert len(server.hits("/real")) == 1  # only the "real" article's own fetch


def test_a_redirect_chain_records_the_page_after_redirects(scenario: tuple[Any, ...]) -> None:
    by_id, _rows, server, *_ = scenario
    article = by_id["hop1"]
    assert (article["text_source"], article["page_url"]) == ("page", server.url("/hop3"))
    assert "medieval cellars" in article["text"]


def test_a_wrong_charset_header_is_overruled_by_the_meta_charset(scenario: tuple[Any, ...]) -> None:
    by_id, rows, *_ = scenario
    article = by_id["charset_de"]
    assert article["text_source"] == "page" and "heißt es im Rathaus" in article["text"]
    assert "\ufffd" not in article["text"]
    row = next(r for r in rows if r["url"].endswith("/charset") and r["article_id"] == "charset_de")
    assert (row["charset"], row["charset_source"]) == ("cp1252", "meta")


def test_a_page_linked_by_two_feeds_is_fetched_once(scenario: tuple[Any, ...]) -> None:
    by_id, _rows, server, *_ = scenario
    assert len(server.hits("/shared")) == 1
    assert by_id["shared"]["text"] == by_id["shared_again"]["text"]
    assert by_id["shared"]["text_source"] == by_id["shared_again"]["text_source"] == "page"


def test_articles_not_to_fetch_make_no_request(scenario: tuple[Any, ...]) -> None:
    by_id, _rows, server, *_ = scenario
    assert [
        r.path for r in server.requests if r.path in ("/known", "/from-file", "/off", "/long", "/seed")
    ] == []
    expected = {
        "known": "feed_summary",
        "file": "feed_summary",
        "off": "feed_summary",
        "long": "feed_summary",
        "seed": "seed_file",
    }
    assert {k: by_id[k]["text_source"] for k in expected} == expected
    assert all(by_id[k]["page_outcome"] is None and by_id[k]["page_url"] is None for k in expected)


def test_the_per_host_limit_holds_with_two_worker_processes(tmp_path: Path) -> None:
    with FeedServer(latency=0.2) as server:
        feed = server.url("/feed.xml")
        articles = [
            feed_article(server.route(f"/a{i}", Reply(200, PAGE, HTML)), source=feed) for i in range(12)
        ]
        settings = FullTextSettings(pages=PageSettings(fetch=FAST, min_interval_seconds=0.0, max_per_host=2))
        by_id, rows = run_fulltext(
            articles, settings, tmp_path, "--direct_num_workers=2", "--direct_running_mode=multi_processing"
        )
    assert {a["text_source"] for a in by_id.values()} == {"page"} and len(by_id) == 12
    assert len({row["pid"] for row in rows}) == 2  # the pages were fetched by two processes
    assert server.max_in_flight == 2


# --- the record rules, without Beam ---------------------------------------------------------------


def test_which_articles_want_their_page() -> None:
    feed = "https://news.example/feed.xml"
    settings = FullTextSettings(
        min_words=50,
        feed_modes={"https://always.example/feed.xml": FullTextMode.ALWAYS},
    )
    whole = " ".join(PARAGRAPHS)
    assert page_wanted(feed_article("https://news.example/a", source=feed), settings) == "short"
    assert page_wanted(feed_article("https://news.example/a", source=feed, text=whole), settings) is None
    assert page_wanted(
        feed_article("https://news.example/a", source=feed, text=whole + " Read more"), settings
    ) == ("truncated")
    always = feed_article("https://news.example/a", source="https://always.example/feed.xml", text=whole)
    assert page_wanted(always, settings) == "always"
    assert page_wanted(feed_article("/relative/link", source=feed), settings) is None
    assert (
        page_wanted(
            feed_article("https://news.example/a", source=feed), replace(settings, mode=FullTextMode.OFF)
        )
        is None
    )


def test_the_feeds_text_stays_as_the_summary_when_the_page_replaces_it() -> None:
    # An entry with content and no summary of its own: the content is the teaser the page replaces.
    article = feed_article("https://news.example/a", source="https://news.example/feed.xml", summary=None)
    assert feed_text_source(article) == "feed_content"
    page = PageFetch(
        "https://news.example/a", PageOutcome.OK, NOW, final_url="https://news.example/a", http_status=200
    )
    extraction = extract_page(
        PAGE,
        content_type="text/html",
        page_url=page.final_url,
        feed_title=TITLE,
        feed_summary=SUMMARY,
        now=NOW,
    )
    record = with_page(article, page, extraction)
    assert (record["text_source"], record["summary"]) == ("page", SUMMARY)
    assert "medieval cellars" in record["text"] and article["text"] == SUMMARY  # the input unchanged


@pytest.mark.corpus
def test_real_corpus_pages_served_locally_give_their_must_contain_snippets(
    corpus: Path, tmp_path: Path
) -> None:
    names = ("netzpolitik.org.abmahnungen.html", "scmp.com.playbook.html", "nhk.or.jp.k100.html")
    pages = {page.file: page for page in load_pages(corpus) if page.file in names}
    with FeedServer() as server:
        articles = []
        for index, name in enumerate(names):
            title, summary = feed_fields(pages[name].body)
            url = server.route(
                f"/corpus/{index}", Reply(200, pages[name].body, {"Content-Type": "text/html"})
            )
            articles.append(
                {
                    **feed_article(url, source=server.url("/feed.xml"), text=summary),
                    "title": title,
                    "article_id": name,
                }
            )
        settings = FullTextSettings(pages=PageSettings(fetch=FAST))
        by_id, rows = run_fulltext(articles, settings, tmp_path)
    assert {r["outcome"] for r in rows} == {"ok"}
    for name in names:
        text = comparable(by_id[name]["text"])
        assert by_id[name]["text_source"] == "page", name
        assert [s for s in pages[name].must if comparable(s) not in text] == [], name
