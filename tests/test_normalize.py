"""Normalization: HTML to text, canonical URLs, timestamps with offsets, clean lists, whole entries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from transforms.normalize import (
    EmptyEntryError,
    canonical_url,
    clean_list,
    clean_text,
    html_to_text,
    normalize_entry,
    parse_timestamp,
)
from transforms.parse import RawEntry, parse_input, parse_seed_file

PROJECT = Path(__file__).resolve().parent.parent
SEEDS = PROJECT / "seeds"
GOLDEN = Path(__file__).resolve().parent / "data" / "normalized"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # the same "now" as tests/data/regenerate.py

# --- html_to_text ----------------------------------------------------------------------------


def test_block_elements_become_paragraphs() -> None:
    html = "<h1>Head</h1><p>First <b>bold</b> para.</p><div>Second</div><blockquote>Third</blockquote>"
    assert html_to_text(html) == "Head\n\nFirst bold para.\n\nSecond\n\nThird"


def test_scripts_styles_and_comments_are_dropped() -> None:
    html = (
        "<style>.promo { color: red }</style><p>Kept</p><script>alert('x')</script>"
        "<!-- a comment --><noscript></noscript><p>Also kept</p>"
    )
    text = html_to_text(html)
    assert text == "Kept\n\nAlso kept"
    assert "alert" not in text and "color" not in text and "comment" not in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("<p>Tom &amp; Jerry</p>", "Tom & Jerry"),
        ("l&#8217;eau &eacute;t&eacute; &#x2014; fin", "l’eau été — fin"),
        ("<p>a&nbsp;b</p>", "a b"),
        # escaped twice, as many feeds do
        ("Crumb &amp;amp; Crust", "Crumb & Crust"),
        ("<p>autumn&amp;#8217;s storm</p>", "autumn’s storm"),
        ("forty&amp;nbsp;million", "forty million"),
        # text that only looks like markup is kept
        ("5 < 6 and 7 > 3", "5 < 6 and 7 > 3"),
        ("AT&T and R&D", "AT&T and R&D"),
    ],
)
def test_entities_are_decoded(value: str, expected: str) -> None:
    assert html_to_text(value) == expected


def test_text_is_nfc() -> None:
    decomposed = "Cafe\u0301 Zu\u0308rich"
    assert html_to_text(decomposed) == "Café Zürich"
    assert html_to_text(f"<p>{decomposed}</p>") == "Café Zürich"


def test_control_and_zero_width_characters_are_removed() -> None:
    value = "zero\u200bwidth\u200d joiner\ufeff bom\x07 bell\x00 nul\u202e bidi\x85"
    assert html_to_text(value) == "zerowidth joiner bom bell nul bidi"


def test_whitespace_collapses_but_paragraphs_stay() -> None:
    value = "  One   line\twith\u00a0spaces\nwrapped here.\r\n\r\n\r\n  Second\n \n\nThird  "
    assert html_to_text(value) == "One line with spaces wrapped here.\n\nSecond\n\nThird"


def test_empty_values() -> None:
    assert html_to_text(None) == ""
    assert html_to_text("") == ""
    assert html_to_text("<p> </p><div>\u200b</div>") == ""
    assert clean_text(" \n\n ") == ""


def test_broken_html_does_not_crash() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>and italic") == "unclosed bold and italic"
    assert html_to_text("<<<>>> <p") == "<<<>>> <p"


# --- canonical_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/Path", "http://example.com/Path"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a#section-2", "https://example.com/a"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com./a", "https://example.com/a"),
        ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
        (
            "https://example.com/a?utm_source=rss&utm_medium=feed&id=7&fbclid=IwAR&gclid=xyz",
            "https://example.com/a?id=7",
        ),
        ("https://example.com/a?UTM_Campaign=x&mc_eid=1&_ga=2", "https://example.com/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("https://example.com/caf%C3%A9 x", "https://example.com/caf%C3%A9%20x"),
        ("https://例え.jp/パス", "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9"),
        ("http://[2001:db8::1]:8080/a", "http://[2001:db8::1]:8080/a"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "/relative/path",
        "relative.html",
        "ftp://example.com/file",
        "mailto:desk@example.com",
        "javascript:alert(1)",
        "urn:uuid:1234",
        "http://example.com:99999/",
        "http://example.com:port/",
        "http:///no-host",
    ],
)
def test_canonical_url_is_none_for_anything_but_absolute_http(url: str | None) -> None:
    assert canonical_url(url) is None


def test_urls_differing_only_in_noise_have_one_canonical_form() -> None:
    variants = [
        "https://www.Example.com/story?id=1",
        "HTTPS://WWW.EXAMPLE.COM:443/story?id=1#comments",
        "https://www.example.com/story?utm_source=x&id=1&fbclid=abc",
    ]
    assert {canonical_url(v) for v in variants} == {"https://www.example.com/story?id=1"}


# --- parse_timestamp -------------------------------------------------------------------------


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected", "offset"),
    [
        ("Mon, 04 Mar 2024 09:15:00 +0200", utc(2024, 3, 4, 7, 15), 120),
        ("Mon, 04 Mar 2024 09:15:00 -0500", utc(2024, 3, 4, 14, 15), -300),
        ("Sun, 03 Mar 2024 18:45:00 +0530", utc(2024, 3, 3, 13, 15), 330),
        ("Mon, 04 Mar 2024 09:15:00 GMT", utc(2024, 3, 4, 9, 15), 0),
        ("Mon, 04 Mar 2024 09:15:00 EST", utc(2024, 3, 4, 14, 15), -300),
        ("04 Mar 2024 09:15 +0100", utc(2024, 3, 4, 8, 15), 60),
        # RFC 2822: -0000 means "time in UTC, zone unknown"
        ("Mon, 04 Mar 2024 09:15:00 -0000", utc(2024, 3, 4, 9, 15), None),
        ("2024-03-04T08:00:00Z", utc(2024, 3, 4, 8, 0), 0),
        ("2024-03-04T08:00:00+01:00", utc(2024, 3, 4, 7, 0), 60),
        ("2024-03-04T08:00:00-03:30", utc(2024, 3, 4, 11, 30), -210),
        ("2024-03-04T08:00:00.123456+05:45", utc(2024, 3, 4, 2, 15, 0, 123456), 345),
        ("2024-03-04 08:00:00 +0100", utc(2024, 3, 4, 7, 0), 60),
        # no zone: read as UTC, offset unknown
        ("2024-03-04T08:00:00", utc(2024, 3, 4, 8, 0), None),
        ("2024-03-04", utc(2024, 3, 4), None),
        ("March 4, 2024", utc(2024, 3, 4), None),
        ("  4 Mar 2024  ", utc(2024, 3, 4), None),
    ],
)
def test_parse_timestamp(raw: str, expected: datetime, offset: int | None) -> None:
    moment, minutes = parse_timestamp(raw, None, NOW)
    assert moment == expected
    assert moment is not None and moment.tzinfo == UTC
    assert minutes == offset


@pytest.mark.parametrize(
    "raw",
    [
        "garbage",
        "not a date at all",
        "",
        "   ",
        # a date the string does not wholly give must not be completed from today
        "12",
        "March 4",
        "10:30",
        # implausible: far future, before the web
        "2099-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01",
        (NOW + timedelta(days=2)).isoformat(),
    ],
)
def test_unusable_dates_give_nothing(raw: str) -> None:
    assert parse_timestamp(raw, None, NOW) == (None, None)


def test_a_date_within_a_day_ahead_is_kept() -> None:
    soon = NOW + timedelta(hours=20)
    assert parse_timestamp(soon.isoformat(), None, NOW) == (soon, 0)


def test_the_feed_parsers_epoch_is_the_fallback_with_an_unknown_offset() -> None:
    epoch = 1709536500  # 2024-03-04 07:15 UTC
    assert parse_timestamp(None, epoch, NOW) == (utc(2024, 3, 4, 7, 15), None)
    assert parse_timestamp("Montag, vierter März", epoch, NOW) == (utc(2024, 3, 4, 7, 15), None)
    # the raw string wins when it parses: it keeps the offset
    assert parse_timestamp("Mon, 04 Mar 2024 09:15:00 +0200", epoch, NOW) == (utc(2024, 3, 4, 7, 15), 120)


def test_no_date_at_all() -> None:
    assert parse_timestamp(None, None, NOW) == (None, None)
    assert parse_timestamp(None, 10**12, NOW) == (None, None)  # an epoch far out of range


def test_an_absurd_offset_is_dropped_but_the_time_kept() -> None:
    moment, minutes = parse_timestamp("2024-03-04T08:00:00+23:00", None, NOW)
    assert moment == utc(2024, 3, 3, 9, 0)
    assert minutes is None


# --- clean_list ------------------------------------------------------------------------------


def test_clean_list() -> None:
    values = ["  Local ", "<b>Environment</b>", "local", None, "", "  ", "Cafe\u0301 &amp; Bar", "News\u200b"]
    assert clean_list(values) == ["Local", "Environment", "Café & Bar", "News"]


def test_clean_list_keeps_first_order_and_spelling() -> None:
    assert clean_list(["B", "a", "A", "b", "c"]) == ["B", "a", "c"]
    assert clean_list([]) == []


# --- normalize_entry -------------------------------------------------------------------------


def raw_entry(**values: Any) -> RawEntry:
    entry: dict[str, Any] = {
        "source": "https://example.com/feed",
        "source_type": "feed",
        "ordinal": 3,
        "feed_title": "Example &amp; Co",
        "feed_link": "https://example.com/",
        "feed_language": "en-US",
        "entry_id": " guid-1 ",
        "link": "https://Example.com/a?utm_source=x#top",
        "title": "<b>Bridge</b> opens",
        "summary": "<p>Short</p>",
        "content": "<p>Long text.</p><p>Second para.</p>",
        "content_is_html": True,
        "entry_language": None,
        "authors": ["Ann", "ann", ""],
        "tags": ["City"],
        "published": "Mon, 04 Mar 2024 09:15:00 +0200",
        "published_epoch": None,
        "published_field": "published",
        "updated": None,
        "updated_epoch": None,
        "updated_field": None,
    }
    entry.update(values)
    return entry  # type: ignore[return-value]


def test_normalize_entry() -> None:
    article = normalize_entry(raw_entry(), NOW)
    assert article == {
        "source": "https://example.com/feed",
        "source_type": "feed",
        "ordinal": 3,
        "feed_title": "Example & Co",
        "feed_url": "https://example.com/",
        "entry_id": "guid-1",
        "url": "https://Example.com/a?utm_source=x#top",
        "canonical_url": "https://example.com/a",
        "title": "Bridge opens",
        "summary": "Short",
        "text": "Long text.\n\nSecond para.",
        "authors": ["Ann"],
        "tags": ["City"],
        "published_at": utc(2024, 3, 4, 7, 15),
        "published_offset_minutes": 120,
        "published_at_source": "feed:published",
        "updated_at": None,
        "updated_offset_minutes": None,
        "updated_at_source": "none",
        "language_declared_raw": "en-US",
    }


def test_summary_becomes_text_when_there_is_no_content() -> None:
    article = normalize_entry(raw_entry(content=None, content_is_html=False), NOW)
    assert article["text"] == "Short"
    assert article["summary"] == "Short"


def test_a_summary_equal_to_the_content_is_not_kept_twice() -> None:
    article = normalize_entry(raw_entry(summary="<p>Same</p>", content="Same"), NOW)
    assert article["text"] == "Same"
    assert article["summary"] is None


def test_entry_language_wins_over_the_feeds() -> None:
    assert normalize_entry(raw_entry(entry_language="de"), NOW)["language_declared_raw"] == "de"


def test_a_title_alone_is_enough() -> None:
    article = normalize_entry(raw_entry(summary=None, content=None), NOW)
    assert article["title"] == "Bridge opens"
    assert article["text"] is None


def test_an_unparseable_date_is_null_with_source_none() -> None:
    article = normalize_entry(raw_entry(published="soon", updated="never", updated_field="updated"), NOW)
    assert article["published_at"] is None
    assert article["published_at_source"] == "none"
    assert article["updated_at_source"] == "none"


@pytest.mark.parametrize(
    "values",
    [
        {"title": None, "summary": None, "content": None},
        {"title": "  ", "summary": "<p> </p>", "content": "<script>x()</script>"},
        {"title": "\u200b", "summary": "", "content": "<br/>"},
    ],
)
def test_an_empty_entry_raises(values: dict[str, Any]) -> None:
    with pytest.raises(EmptyEntryError, match="neither a title nor any text"):
        normalize_entry(raw_entry(**values), NOW)


def test_the_seed_article_normalizes_cleanly() -> None:
    [entry] = parse_seed_file((SEEDS / "000_c847d24acf547d54.txt").read_bytes(), "s").entries
    article = normalize_entry(entry, NOW)
    assert article["title"] == (
        "The US affirms that elections in Venezuela “do not reflect the will of the people”"
    )
    text = article["text"] or ""
    assert text.count("\n\n") >= 5
    assert "<" not in text and "&" not in text
    assert article["published_at"] is None and article["published_at_source"] == "none"
    assert article["canonical_url"] is None


def test_the_html_laden_rss_seed_has_no_markup_left() -> None:
    parsed = parse_input((SEEDS / "feeds" / "rss2_en.xml").read_bytes(), "rss2_en.xml")
    articles = [normalize_entry(e, NOW) for e in parsed.entries]
    for article in articles:
        for field in ("title", "summary", "text"):
            value = article[field] or ""
            assert "<" not in value and "&amp;" not in value and "&#" not in value, (field, value)
    texts = " ".join(a["text"] or "" for a in articles)
    assert "alert(1)" not in texts and "color: red" not in texts
    assert "autumn’s storm" in texts
    assert "Crumb & Crust" in texts
    assert {a["published_offset_minutes"] for a in articles} == {120, -300, 330}


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in sorted(record.items())}


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.json")))
def test_shipped_inputs_match_their_golden_files(golden: str) -> None:
    """tests/data/regenerate.py writes the goldens; a diff here is a change in normalization."""
    name = golden.removesuffix(".json")
    path = SEEDS / name if name.endswith(".txt") else SEEDS / "feeds" / name
    source = path.relative_to(PROJECT).as_posix()
    body = path.read_bytes()
    parsed = parse_seed_file(body, source) if name.endswith(".txt") else parse_input(body, source)
    expected = json.loads((GOLDEN / golden).read_text(encoding="utf-8"))
    assert [_jsonable(normalize_entry(e, NOW)) for e in parsed.entries] == expected


def test_markup_to_text_is_html_texts_text_and_safe_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import html_text

    from transforms.normalize import markup_to_text

    fragments = [
        f"<div><p>Paragraph {i} with <b>bold</b> &amp; <a href='x'>a link</a>.</p><script>x()</script>"
        f"<ul><li>one</li><li>two {i}</li></ul><p>Last</p></div>"
        for i in range(400)
    ]
    expected = [html_text.extract_text(f, guess_layout=True) for f in fragments]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(markup_to_text, fragments)) == expected
    assert "x()" not in expected[0] and "Paragraph 0 with bold & a link." in expected[0]
