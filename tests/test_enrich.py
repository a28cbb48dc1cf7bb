"""Enrichment: stable article ids, source domains, word counts, reading time, content hashes."""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from transforms.enrich import (
    WORDS_PER_MINUTE,
    content_hash,
    count_words,
    enrich_article,
    identify_article,
    make_article_id,
    source_domain,
)
from transforms.normalize import canonical_url, normalize_entry
from transforms.parse import parse_input
from transforms.schema import (
    ARTICLE_FIELDS,
    SCHEMA_VERSION,
    Article,
    DetectedArticle,
    NormalizedArticle,
    RunInfo,
)

PROJECT = Path(__file__).resolve().parent.parent
RUN = RunInfo("run-1", datetime(2026, 11, 29, 8, 30, tzinfo=UTC), "0.1.0")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def article_id_of(url: str | None, source: str = "feed.xml", entry_id: str | None = None) -> tuple[str, str]:
    return make_article_id(canonical_url(url), source, entry_id, content_hash("t", "x"))


def test_the_id_comes_from_the_canonical_url() -> None:
    article_id, made_from = article_id_of("https://example.com/a")
    assert made_from == "url"
    assert HEX32.match(article_id)


def test_urls_differing_only_in_noise_give_one_id() -> None:
    variants = [
        "https://www.example.com/story?id=1",
        "https://WWW.EXAMPLE.com/story?id=1#comments",
        "https://www.example.com:443/story?utm_source=rss&id=1&fbclid=xyz",
        "https://www.example.com/story?gclid=1&id=1&utm_medium=email",
    ]
    ids = {article_id_of(v, source=f"feed-{i}.xml")[0] for i, v in enumerate(variants)}
    assert len(ids) == 1


def test_different_urls_give_different_ids() -> None:
    ids = {
        article_id_of(url)[0]
        for url in (
            "https://example.com/story?id=1",
            "https://example.com/story?id=2",
            "http://example.com/story?id=1",
            "https://example.org/story?id=1",
            "https://example.com/Story?id=1",
        )
    }
    assert len(ids) == 5


def test_without_a_url_the_id_comes_from_source_and_entry_id() -> None:
    first, made_from = article_id_of(None, "https://a.example/feed", "guid-7")
    assert made_from == "entry_id"
    assert article_id_of(None, "https://a.example/feed", "guid-7")[0] == first
    # the same guid in another feed is another article
    assert article_id_of(None, "https://b.example/feed", "guid-7")[0] != first


def test_without_url_or_entry_id_the_id_comes_from_the_content() -> None:
    one = make_article_id(None, "s.txt", None, content_hash("Title", "Body"))
    same = make_article_id(None, "other.txt", None, content_hash("Title", "Body"))
    other = make_article_id(None, "s.txt", None, content_hash("Title", "Body changed"))
    assert one[1] == "content"
    assert one == same
    assert one[0] != other[0]


@pytest.mark.parametrize("link", ["/news/1", "news/1", "../1", "?id=1", "#top", "ftp://example.com/1"])
def test_a_relative_link_never_makes_an_id(link: str) -> None:
    with_guid = article_id_of(link, "feed.xml", "guid-1")
    assert with_guid[1] == "entry_id"
    assert article_id_of(link, "feed.xml", None)[1] == "content"
    # two feeds with the same relative link do not collide
    assert article_id_of(link, "a.xml", "1")[0] != article_id_of(link, "b.xml", "1")[0]


def test_a_relative_link_in_a_local_feed_gives_no_url_id() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        b"<item><title>A</title><link>/news/a</link><guid isPermaLink='false'>g-1</guid>"
        b"<description>Body.</description></item></channel></rss>"
    )
    [entry] = parse_input(body, "local.xml").entries
    article = identified_and_enriched(normalize_entry(entry, RUN.started_at))
    assert article["url"] == "/news/a"
    assert article["canonical_url"] is None
    assert article["article_id_source"] == "entry_id"


def test_the_id_is_stable_across_runs() -> None:
    # A literal value: an id that changes between releases would break deduplication across runs.
    assert (
        article_id_of("https://example.com/a")[0]
        == make_article_id("https://example.com/a", "x", "y", "z")[0]
    )
    # The README's definition: the first 128 bits of sha256 of the canonical URL (with a domain tag).
    expected = hashlib.sha256(b"url\x1fhttps://example.com/a\x1f").hexdigest()[:32]
    assert make_article_id("https://example.com/a", "x", None, "")[0] == expected


@pytest.mark.parametrize(
    ("url", "source", "expected"),
    [
        ("https://www.example.com/a", "feed.xml", "example.com"),
        ("https://WWW.Example.COM./a", "feed.xml", "example.com"),
        ("https://news.example.co.uk/a", "feed.xml", "news.example.co.uk"),
        ("https://www2.example.com/a", "feed.xml", "www2.example.com"),
        (None, "https://www.feeds.example.org/rss", "feeds.example.org"),
        ("/relative", "https://feeds.example.org/rss", "feeds.example.org"),
        ("/relative", "/data/feed.xml", None),
        (None, "seeds/a.txt", None),
    ],
)
def test_source_domain(url: str | None, source: str, expected: str | None) -> None:
    assert source_domain(url, source) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", 0),
        ("The quick brown fox", 4),
        ("  spaced   out\n\nparagraphs  ", 3),
        ("Der schnelle braune Fuchs springt über den faulen Hund.", 9),
        ("Straßenbahnlinie „Linie 9“ verbindet Nordstadt", 5),
        ("don't stop-the-music, l’eau", 3),
        ("3 days in 2024", 4),
        ("— … !!! ???", 0),
        ("東京都の天気", 6),
        ("市议会批准了预算", 8),
        ("青葉台市立図書館、平日の夜間開館", 15),
        ("Tokyo 東京 news", 4),
        ("한국어 뉴스 기사", 3),
    ],
)
def test_count_words(text: str, words: int) -> None:
    assert count_words(text) == words


def test_content_hash() -> None:
    digest = content_hash("Title", "Body")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert content_hash("Title", "Body") == digest
    assert content_hash("Title", "Body ") != digest
    # the separator keeps title and text apart
    assert content_hash("TitleB", "ody") != digest
    assert content_hash(None, None) == content_hash("", "")


def normalized(**values: object) -> dict[str, object]:
    article: dict[str, object] = {
        "source": "https://example.com/feed",
        "source_type": "feed",
        "url": "https://www.example.com/a?utm_source=x",
        "canonical_url": "https://www.example.com/a",
        "entry_id": "g-1",
        "title": "Bridge opens",
        "text": "word " * 459 + "end",
    }
    article.update(values)
    return article


def identified_and_enriched(article: Mapping[str, object]) -> Article:
    """The article as identify then enrich make it (detect adds nothing either of them reads)."""
    return enrich_article(cast(DetectedArticle, identify_article(cast(NormalizedArticle, article))), RUN)


def test_enrich_article() -> None:
    article = identified_and_enriched(normalized())
    assert article["article_id"] == make_article_id("https://www.example.com/a", "", None, "")[0]
    assert article["article_id_source"] == "url"
    assert article["source_domain"] == "example.com"
    assert article["word_count"] == 2 + 460
    assert article["char_count"] == len("Bridge opens") + len("word " * 459 + "end")
    assert article["reading_time_seconds"] == math.ceil(462 * 60 / WORDS_PER_MINUTE) == 121
    assert article["content_hash"] == content_hash("Bridge opens", "word " * 459 + "end")
    assert article["ingested_at"] == RUN.started_at
    assert article["ingest_date"] == "2026-11-29"
    assert (article["run_id"], article["pipeline_version"]) == ("run-1", "0.1.0")
    assert article["schema_version"] == SCHEMA_VERSION
    assert set(article) - set(ARTICLE_FIELDS) <= {"ordinal"} | set(normalized())


def test_a_title_only_article() -> None:
    article = identified_and_enriched(normalized(text=None, canonical_url=None, entry_id=None))
    assert article["word_count"] == 2
    assert article["reading_time_seconds"] == 1
    assert article["article_id_source"] == "content"


def test_japanese_reading_time() -> None:
    article = identified_and_enriched(normalized(title="図書館", text="夜間開館" * 115))
    assert article["word_count"] == 3 + 460
    assert article["reading_time_seconds"] == math.ceil(463 * 60 / WORDS_PER_MINUTE)


def test_identify_and_enrich_leave_their_input_unchanged() -> None:
    """Beam forbids a DoFn to change its input: each stage returns a new record."""
    article = {**normalized(), "article_id": "a1", "article_id_source": "url", "content_hash": "h1"}
    given = copy.deepcopy(article)
    enriched = enrich_article(cast(DetectedArticle, article), RUN)
    assert article == given
    assert enriched is not article and enriched["word_count"] == 462
    identified = identify_article(cast(NormalizedArticle, normalized()))
    assert identified is not normalized() and set(normalized()) < set(identified)
