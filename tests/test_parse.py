"""Parsing inputs into raw entries: every feed format, feed metadata, links, outcomes and seed files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from transforms.parse import (
    RawEntry,
    absolute_link,
    decode_text,
    parse_input,
    parse_seed_file,
)
from transforms.parse_json import parse_json_feed
from transforms.schema import Outcome, SourceType

PROJECT = Path(__file__).resolve().parent.parent
SEEDS = PROJECT / "seeds"
FEEDS = SEEDS / "feeds"
GOLDEN = Path(__file__).resolve().parent / "data" / "parsed"
ENTRY_KEYS = set(get_type_hints(RawEntry))

# One article in every format: the shape of the entries must not depend on the format.
RSS20 = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
<title>Sample Feed</title><link>https://example.com/</link><language>en-GB</language>
<item>
  <title>Council approves new bridge</title>
  <link>https://example.com/news/bridge</link>
  <guid isPermaLink="false">bridge-1</guid>
  <description>&lt;p&gt;The council &lt;b&gt;approved&lt;/b&gt; the bridge.&lt;/p&gt;</description>
  <dc:creator>Ann Writer</dc:creator>
  <category>Local</category>
  <pubDate>Mon, 04 Mar 2024 09:15:00 +0200</pubDate>
</item></channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en-GB">
<title>Sample Feed</title><link rel="alternate" href="https://example.com/"/>
<id>urn:sample</id><updated>2024-03-04T09:15:00+02:00</updated>
<entry>
  <title>Council approves new bridge</title>
  <link rel="alternate" href="https://example.com/news/bridge"/>
  <id>bridge-1</id>
  <published>2024-03-04T09:15:00+02:00</published>
  <updated>2024-03-05T10:00:00Z</updated>
  <author><name>Ann Writer</name></author>
  <category term="Local"/>
  <summary>The council approved the bridge.</summary>
  <content type="html">&lt;p&gt;The council &lt;b&gt;approved&lt;/b&gt; the bridge.&lt;/p&gt;</content>
</entry></feed>"""

RDF = b"""<?xml version="1.0" encoding="utf-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
  xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.com/"><title>Sample Feed</title><link>https://example.com/</link>
  <dc:language>en-GB</dc:language>
  <items><rdf:Seq><rdf:li rdf:resource="https://example.com/news/bridge"/></rdf:Seq></items>
</channel>
<item rdf:about="https://example.com/news/bridge">
  <title>Council approves new bridge</title>
  <link>https://example.com/news/bridge</link>
  <description>The council approved the bridge.</description>
  <dc:creator>Ann Writer</dc:creator>
  <dc:subject>Local</dc:subject>
  <dc:date>2024-03-04T09:15:00+02:00</dc:date>
</item></rdf:RDF>"""


def json_feed(version: str = "https://jsonfeed.org/version/1.1", **item: Any) -> bytes:
    document = {
        "version": version,
        "title": "Sample Feed",
        "home_page_url": "https://example.com/",
        "feed_url": "https://example.com/feed.json",
        "language": "en-GB",
        "authors": [{"name": "Desk"}],
        "items": [
            {
                "id": "bridge-1",
                "url": "https://example.com/news/bridge",
                "title": "Council approves new bridge",
                "content_html": "<p>The council <b>approved</b> the bridge.</p>",
                "date_published": "2024-03-04T09:15:00+02:00",
                "authors": [{"name": "Ann Writer"}],
                "tags": ["Local"],
                **item,
            }
        ],
    }
    return json.dumps(document).encode("utf-8")


JSON10 = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1",
        "title": "Sample Feed",
        "home_page_url": "https://example.com/",
        "items": [
            {
                "id": "bridge-1",
                "url": "https://example.com/news/bridge",
                "title": "Council approves new bridge",
                "content_text": "The council approved the bridge.",
                "author": {"name": "Ann Writer"},
                "tags": ["Local"],
                "date_published": "2024-03-04T09:15:00+02:00",
            }
        ],
    }
).encode("utf-8")


@pytest.mark.parametrize(
    ("body", "feed_format"),
    [(RSS20, "rss20"), (ATOM, "atom10"), (RDF, "rss10"), (json_feed(), "json11"), (JSON10, "json10")],
    ids=["rss20", "atom10", "rdf", "jsonfeed11", "jsonfeed10"],
)
def test_every_format_gives_the_same_entry_shape(body: bytes, feed_format: str) -> None:
    parsed = parse_input(body, "https://example.com/feed")
    assert parsed.outcome == Outcome.OK
    assert parsed.feed_format == feed_format
    assert parsed.feed_title == "Sample Feed"
    [entry] = parsed.entries
    assert set(entry) == ENTRY_KEYS
    assert entry["source"] == "https://example.com/feed"
    assert entry["source_type"] == SourceType.FEED
    assert entry["ordinal"] == 0
    assert entry["feed_title"] == "Sample Feed"
    assert entry["feed_link"] == "https://example.com/"
    assert entry["link"] == "https://example.com/news/bridge"
    assert entry["title"] == "Council approves new bridge"
    assert entry["authors"] == ["Ann Writer"]
    assert entry["tags"] == ["Local"]
    assert "approved" in (entry["content"] or entry["summary"] or "")
    assert isinstance(entry["content_is_html"], bool)


@pytest.mark.parametrize("body", [RSS20, ATOM, RDF, json_feed()], ids=["rss20", "atom", "rdf", "jsonfeed"])
def test_the_declared_language_is_kept(body: bytes) -> None:
    [entry] = parse_input(body, "feed").entries
    assert (entry["entry_language"] or entry["feed_language"] or "").lower() == "en-gb"


def test_rss_dates_keep_the_raw_string_and_the_parsers_epoch() -> None:
    [entry] = parse_input(RSS20, "feed").entries
    assert entry["published"] == "Mon, 04 Mar 2024 09:15:00 +0200"
    assert entry["published_epoch"] == 1709536500  # 07:15 UTC
    assert entry["published_field"] == "published"


def test_an_rss_item_without_an_update_time_has_no_update_time() -> None:
    # feedparser 6 answers `updated` with the pubDate; an update time must not be invented from it.
    [entry] = parse_input(RSS20, "feed").entries
    assert entry["updated"] is None
    assert entry["updated_epoch"] is None
    assert entry["updated_field"] is None


def test_atom_keeps_published_and_updated_apart() -> None:
    [entry] = parse_input(ATOM, "feed").entries
    assert entry["published"] == "2024-03-04T09:15:00+02:00"
    assert entry["updated"] == "2024-03-05T10:00:00Z"
    assert entry["updated_field"] == "updated"
    assert entry["content_is_html"] is True
    assert entry["summary"] == "The council approved the bridge."


def test_json_feed_adapter() -> None:
    [entry] = parse_input(json_feed(summary="Short."), "https://example.com/feed.json").entries
    assert entry["entry_id"] == "bridge-1"
    assert entry["content"] == "<p>The council <b>approved</b> the bridge.</p>"
    assert entry["content_is_html"] is True
    assert entry["summary"] == "Short."
    assert entry["published"] == "2024-03-04T09:15:00+02:00"
    assert entry["published_field"] == "date_published"
    assert entry["feed_language"] == "en-GB"


def test_json_feed_falls_back_to_content_text_and_feed_authors() -> None:
    [entry] = parse_json_feed(
        json_feed(content_html=None, content_text="Plain body.", authors=None), "f"
    ).entries
    assert entry["content"] == "Plain body."
    assert entry["content_is_html"] is False
    assert entry["authors"] == ["Desk"]


def test_json_feed_items_that_are_not_objects_are_a_warning() -> None:
    document = json.loads(json_feed())
    document["items"].append("not an item")
    parsed = parse_json_feed(json.dumps(document).encode(), "f")
    assert parsed.outcome == Outcome.OK_WITH_WARNINGS
    assert len(parsed.entries) == 1
    assert parsed.message == "1 items are not JSON objects"


# --- relative links --------------------------------------------------------------------------

RELATIVE_RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>/home</link>
<item><title>A</title><link>/news/a?id=1</link><guid isPermaLink="false">a-1</guid>
<description>Body.</description></item></channel></rss>"""


def test_relative_links_resolve_against_the_feed_url() -> None:
    parsed = parse_input(
        RELATIVE_RSS, "https://news.example/feeds/rss", base_url="https://news.example/feeds/rss"
    )
    [entry] = parsed.entries
    assert entry["link"] == "https://news.example/news/a?id=1"
    assert entry["feed_link"] == "https://news.example/home"


def test_relative_json_feed_links_resolve_against_feed_url() -> None:
    body = json_feed(url="/news/bridge")
    [entry] = parse_input(body, "f").entries
    assert entry["link"] == "https://example.com/news/bridge"


def test_without_a_base_a_relative_link_stays_relative() -> None:
    # A local file has no URL to resolve against: the link is kept as given, and the enrich stage
    # never makes an id of it (tested in test_enrich).
    [entry] = parse_input(RELATIVE_RSS, "/data/feed.xml").entries
    assert entry["link"] == "/news/a?id=1"


def test_atom_xml_base_resolves_relative_links_in_the_shipped_feed() -> None:
    parsed = parse_input((FEEDS / "atom_de.xml").read_bytes(), "atom_de.xml")
    links = [e["link"] for e in parsed.entries]
    assert "https://beispiel.de/artikel/3" in links
    assert all(link and link.startswith("https://") for link in links)


@pytest.mark.parametrize(
    ("link", "base", "expected"),
    [
        ("/a", "https://x.example/feed", "https://x.example/a"),
        ("b", "https://x.example/dir/feed", "https://x.example/dir/b"),
        (" https://y.example/c ", "https://x.example/", "https://y.example/c"),
        ("/a", None, "/a"),
        ("/a", "/local/file.xml", "/a"),
        ("", "https://x.example/", None),
        (None, "https://x.example/", None),
    ],
)
def test_absolute_link(link: str | None, base: str | None, expected: str | None) -> None:
    assert absolute_link(link, base) == expected


# --- outcomes --------------------------------------------------------------------------------


def test_a_bozo_feed_with_entries_is_ok_with_warnings() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Broken &bogus;</title>'
        b"<item><title>Still here</title><link>https://e.example/1</link></item></channel></rss>"
    )
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.OK_WITH_WARNINGS
    assert [e["title"] for e in parsed.entries] == ["Still here"]
    assert parsed.error_type == "SAXParseException"
    assert parsed.message and "undefined entity" in parsed.message


def test_a_valid_feed_without_entries_is_empty() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>'
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.EMPTY
    assert parsed.feed_format == "rss20"
    assert parsed.feed_title == "Quiet"
    assert parsed.entries == []


def test_a_json_feed_without_items_is_empty() -> None:
    body = json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "Q", "items": []}).encode()
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.EMPTY
    assert parsed.feed_format == "json11"


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Hi</p></body></html>",
        b"  <!-- generated --> <html lang='en'><body>Hi</body></html>",
        b"<HTML><BODY>shouting</BODY></HTML>",
    ],
)
def test_an_html_page_is_not_a_feed(body: bytes) -> None:
    parsed = parse_input(body, "https://example.com/")
    assert parsed.outcome == Outcome.NOT_A_FEED
    assert parsed.error_type == "html_page"
    assert parsed.entries == []


@pytest.mark.parametrize(
    ("body", "content_type", "error_type"),
    [
        (b"", None, "empty_body"),
        (b"   \n\t ", None, "empty_body"),
        (b"{not json", None, "invalid_json"),
        (b'{"title": "x", "entries": []}', None, "not_a_json_feed"),
        (b'{"version": "https://example.com/version/1", "items": []}', None, "not_a_json_feed"),
        (b"[1, 2, 3]", None, "not_a_json_feed"),
        (b"plain words", "application/json", "invalid_json"),
        (b'{"version": "https://jsonfeed.org/version/1"}', None, "no_items"),
        (b"just some text, not XML at all", None, "malformed_feed"),
    ],
)
def test_inputs_that_are_not_feeds(body: bytes, content_type: str | None, error_type: str) -> None:
    parsed = parse_input(body, "f", content_type=content_type)
    assert parsed.outcome == Outcome.NOT_A_FEED
    assert parsed.error_type == error_type
    assert parsed.message
    assert parsed.entries == []


# --- shipped feeds against golden files ------------------------------------------------------


def _jsonable(entries: list[RawEntry]) -> list[dict[str, Any]]:
    return [{k: (str(v) if k == "source_type" else v) for k, v in sorted(e.items())} for e in entries]


@pytest.mark.parametrize("name", sorted(p.name for p in FEEDS.iterdir()))
def test_shipped_feeds_match_their_golden_files(name: str) -> None:
    """tests/data/regenerate.py writes the goldens; a diff here is a change in parsing."""
    golden = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    parsed = parse_input((FEEDS / name).read_bytes(), f"seeds/feeds/{name}")
    assert str(parsed.outcome) == golden["outcome"]
    assert parsed.feed_format == golden["feed_format"]
    assert parsed.feed_title == golden["feed_title"]
    assert _jsonable(parsed.entries) == golden["entries"]


def test_the_cp1251_feed_is_decoded() -> None:
    parsed = parse_input((FEEDS / "rss2_ru_cp1251.xml").read_bytes(), "ru")
    assert parsed.feed_title == "Пример новостей Newsbeam"
    assert parsed.entries[0]["title"] == "В Заречном открылся новый культурный центр"
    assert parsed.entries[0]["feed_language"] == "ru"


# --- seed files ------------------------------------------------------------------------------


def test_the_reference_seed_file() -> None:
    parsed = parse_seed_file((SEEDS / "000_c847d24acf547d54.txt").read_bytes(), "seeds/000.txt")
    assert parsed.outcome == Outcome.OK
    assert parsed.feed_format == "text"
    [entry] = parsed.entries
    assert set(entry) == ENTRY_KEYS
    assert entry["source_type"] == SourceType.SEED_FILE
    assert entry["title"] == (
        "The US affirms that elections in Venezuela “do not reflect the will of the people”"
    )
    body = entry["content"] or ""
    assert body.startswith("The US Secretary of State Antony blinken He affirmed")
    assert "\n\n" in body  # paragraphs kept for the normalize stage
    assert not body.startswith("\n")


def test_a_seed_file_with_a_bom_has_a_clean_title() -> None:
    [entry] = parse_seed_file((SEEDS / "002_fr_festival-jardins.txt").read_bytes(), "fr").entries
    assert entry["title"] == (
        "À Valmont-sur-Loire, le festival des jardins partagés bat son record de fréquentation"
    )


def test_a_windows_1252_seed_file_is_detected() -> None:
    body = (SEEDS / "003_es_cooperativa-olivar.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    [entry] = parse_seed_file(body, "es").entries
    assert entry["title"] == "¿Puede una cooperativa salvar el olivar tradicional de la Sierra Alta?"
    assert "Begoña Martínez" in (entry["content"] or "")


def test_decode_text() -> None:
    assert decode_text("héllo".encode()) == ("héllo", "utf-8")
    assert decode_text(b"\xef\xbb\xbfh\xc3\xa9llo") == ("héllo", "utf-8")
    text, encoding = decode_text(
        "Ésta es una frase en español con acentos, eñes y “comillas” típicas.".encode("cp1252")
    )
    assert "eñes" in text
    assert "“comillas”" in text
    assert encoding == "cp1252"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Le café était très bon, à mon avis. Œuvre « ici » et là-bas.", "cp1252"),
        ("В субботу в городе Заречный открылся новый культурный центр.", "cp1251"),
        ("В субботу в городе Заречный открылся новый культурный центр.", "koi8_r"),
        ("Η κυβέρνηση ανακοίνωσε νέα μέτρα για την οικονομία.", "cp1253"),
        ("市議会は火曜日の夜、長い議論の末に新しい予算を承認した。", "shift_jis"),
        ("Belediye meclisi uzun bir tartışmanın ardından salı akşamı yeni bütçeyi onayladı.", "cp1254"),
    ],
)
def test_legacy_encodings_are_detected(text: str, encoding: str) -> None:
    decoded, _detected = decode_text(text.encode(encoding))
    assert decoded == text


def test_binary_bytes_are_an_undecodable_error() -> None:
    body = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    parsed = parse_seed_file(body, "image.txt")
    assert parsed.outcome == Outcome.ERROR
    assert parsed.error_type == "undecodable"
    assert parsed.message and "NUL" in parsed.message
    assert parsed.entries == []


def test_seed_title_is_the_first_non_empty_line() -> None:
    body = b"\r\n   \r\n  Title here  \r\n\r\nFirst paragraph\r\nwraps.\r\n\r\n\r\nSecond paragraph.\r\n"
    [entry] = parse_seed_file(body, "s.txt").entries
    assert entry["title"] == "Title here"
    assert entry["content"] == "First paragraph\nwraps.\n\n\nSecond paragraph."


def test_a_seed_file_with_only_a_title() -> None:
    [entry] = parse_seed_file(b"Only a title\n", "s.txt").entries
    assert entry["title"] == "Only a title"
    assert entry["content"] == ""


@pytest.mark.parametrize("body", [b"", b"\n\n  \n", b"\xef\xbb\xbf\n"])
def test_an_empty_seed_file_is_empty(body: bytes) -> None:
    parsed = parse_seed_file(body, "s.txt")
    assert parsed.outcome == Outcome.EMPTY
    assert parsed.entries == []
    assert parsed.message == "the file holds no text"


# --- what other feed readers make of the same input (gofeed, rss-parser) ---------------------

RSS20_DC_DATE = b"""<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:dcterms="http://purl.org/dc/terms/"><channel><title>T</title>
<item><title>Only dc:date</title><link>https://e.example/1</link>
  <dc:date>2024-03-04T09:15:00+02:00</dc:date></item>
<item><title>Both</title><link>https://e.example/2</link>
  <pubDate>Mon, 04 Mar 2024 09:15:00 +0200</pubDate><dc:date>2024-03-05T10:00:00Z</dc:date></item>
<item><title>Modified only</title><link>https://e.example/3</link>
  <dcterms:modified>2024-03-06T10:00:00Z</dcterms:modified></item>
<item><title>dc:date, then modified</title><link>https://e.example/4</link>
  <dc:date>2024-03-04T09:15:00+02:00</dc:date><dcterms:modified>2024-03-06T10:00:00Z</dcterms:modified></item>
<item><title>modified, then dc:date</title><link>https://e.example/5</link>
  <dcterms:modified>2024-03-06T10:00:00Z</dcterms:modified><dc:date>2024-03-04T09:15:00+02:00</dc:date></item>
</channel></rss>"""


def test_an_rdf_item_dated_only_by_dc_date_is_published_then() -> None:
    # feedparser files dc:date as `updated`; every other reader takes it as the publication date.
    [entry] = parse_input(RDF, "feed").entries
    assert entry["published"] == "2024-03-04T09:15:00+02:00"
    assert entry["published_epoch"] == 1709536500
    assert entry["published_field"] == "dc:date"
    assert (entry["updated"], entry["updated_epoch"], entry["updated_field"]) == (None, None, None)


def test_dc_date_is_the_publication_date_only_when_the_item_has_none() -> None:
    only, both, modified, dc_then_modified, modified_then_dc = parse_input(RSS20_DC_DATE, "feed").entries
    assert (only["published_field"], only["published"], only["updated"]) == (
        "dc:date",
        "2024-03-04T09:15:00+02:00",
        None,
    )
    # A pubDate is the publication date; dc:date beside it stays what feedparser makes of it.
    assert (both["published_field"], both["updated_field"]) == ("published", "updated")
    assert both["updated"] == "2024-03-05T10:00:00Z"
    # dcterms:modified is an update time; beside a dc:date, in either order, the dc:date is still
    # the publication date (feedparser files both as `updated`, and the later one wins).
    assert (modified["published_field"], modified["updated"]) == (None, "2024-03-06T10:00:00Z")
    for entry in (dc_then_modified, modified_then_dc):
        assert (entry["published_field"], entry["published"], entry["published_epoch"]) == (
            "dc:date",
            "2024-03-04T09:15:00+02:00",
            1709536500,
        )
        assert (entry["updated_field"], entry["updated"], entry["updated_epoch"]) == (
            "updated",
            "2024-03-06T10:00:00Z",
            1709719200,
        )


RSS_LINK_ATTRIBUTES = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
<link uri="at://did:plc:feed/app.bsky.feed.generator/news">https://e.example/</link>
<item><title>at-uri attribute, http text</title>
  <link uri="at://did:plc:abc/app.bsky.feed.post/1">http://example.com/item</link></item>
<item><title>at-uri attribute, no text</title><link uri="at://did:plc:abc/app.bsky.feed.post/2"/></item>
<item><title>http attribute and text</title><link href="https://a.example/x">https://b.example/y</link></item>
<item><title>at-uri attribute, text that is no URL</title>
  <link uri="at://did:plc:abc/app.bsky.feed.post/3">see above</link></item>
</channel></rss>"""


def test_an_http_link_text_wins_over_a_non_http_attribute() -> None:
    parsed = parse_input(RSS_LINK_ATTRIBUTES, "feed")
    text_wins, no_text, both_http, no_url_text = (e["link"] for e in parsed.entries)
    assert text_wins == "http://example.com/item"
    assert no_text == "at://did:plc:abc/app.bsky.feed.post/2"  # nothing better: the attribute is kept
    assert both_http == "https://a.example/x"  # feedparser's choice where the attribute is http(s)
    assert no_url_text == "at://did:plc:abc/app.bsky.feed.post/3"
    assert parsed.entries[0]["feed_link"] == "https://e.example/"


def test_a_relative_link_text_resolved_against_the_feed_wins_too() -> None:
    body = RSS_LINK_ATTRIBUTES.replace(b"http://example.com/item", b"/item/1")
    parsed = parse_input(body, "https://news.example/rss", base_url="https://news.example/rss")
    assert parsed.entries[0]["link"] == "https://news.example/item/1"


@pytest.mark.parametrize(
    ("version", "feed_format"),
    [
        ("1.1", "json11"),
        ("1.0", "json10"),
        ("1", "json10"),
        (None, "json"),
        ("https://jsonfeed.org/version/2", "json"),
    ],
)
def test_a_json_feed_with_a_bare_or_missing_version_is_read_with_a_warning(
    version: str | None, feed_format: str
) -> None:
    document = json.loads(json_feed())
    if version is None:
        del document["version"]
    else:
        document["version"] = version
    parsed = parse_input(json.dumps(document).encode(), "https://example.com/feed.json")
    assert parsed.outcome == Outcome.OK_WITH_WARNINGS
    assert parsed.feed_format == feed_format
    assert parsed.error_type == "json_feed_version"
    assert (
        parsed.message
        and "version" in parsed.message
        and "https://jsonfeed.org/version/1.1" in parsed.message
    )
    [entry] = parsed.entries
    assert entry["title"] == "Council approves new bridge"
    assert entry["link"] == "https://example.com/news/bridge"


def test_a_json_object_with_empty_items_and_no_version_is_an_empty_feed_with_a_warning() -> None:
    parsed = parse_input(b'{"title": "x", "items": []}', "f")
    assert parsed.outcome == Outcome.EMPTY
    assert parsed.error_type == "json_feed_version"
    assert parsed.message


TRUNCATED_RSS = b"<rss><channel><title>broken"


@pytest.mark.parametrize(
    "body",
    [
        TRUNCATED_RSS,
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel>',
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title><ent',
    ],
    ids=["rss-title", "rss-unclosed", "atom-cut-in-a-tag"],
)
def test_a_feed_that_is_not_well_formed_and_gives_no_entries_is_malformed(body: bytes) -> None:
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.NOT_A_FEED
    assert parsed.error_type == "malformed_feed"
    assert parsed.message and parsed.message.startswith("SAXParseException: ")  # the parser's own words
    assert parsed.feed_format  # what feedparser saw it was, for the fetch row
    assert parsed.entries == []


def test_a_well_formed_empty_feed_with_an_encoding_warning_stays_empty() -> None:
    # Bozo, but for its bytes (declared utf-8, written in windows-1252), not for its structure.
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<rss version="2.0"><channel><title>Caf\xe9</title></channel></rss>'
    )
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.EMPTY
    assert parsed.feed_title == "Caf\xe9"
    assert parsed.error_type == "CharacterEncodingOverride"


def test_an_empty_feed_whose_only_fault_is_an_html_entity_stays_empty() -> None:
    # Not well-formed XML (`&aacute;` is HTML's), but read to its end: a valid feed without entries.
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Caf&eacute;</title></channel></rss>'
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.EMPTY
    assert parsed.feed_title == "Caf\xe9"
    assert parsed.message and "undefined entity" in parsed.message


def test_an_ill_formed_feed_read_by_the_loose_parser_follows_the_same_rules() -> None:
    # `&bogus;` sends feedparser to its loose parser, whose handlers get the same two rules.
    body = b"""<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>T &bogus;</title>
<item><title>A</title><link uri="at://did:plc:abc/app.bsky.feed.post/1">http://example.com/item</link></item>
<item><title>B</title><link>http://example.com/b</link><dc:date>2024-03-04T09:15:00Z</dc:date></item>
</channel></rss>"""
    parsed = parse_input(body, "f")
    assert parsed.outcome == Outcome.OK_WITH_WARNINGS
    first, second = parsed.entries
    assert first["link"] == "http://example.com/item"
    assert (second["published_field"], second["published"], second["updated"]) == (
        "dc:date",
        "2024-03-04T09:15:00Z",
        None,
    )


def test_importing_and_using_the_parser_leaves_feedparser_globals_unchanged() -> None:
    # A fresh interpreter: another test may have imported transforms.parse already.
    script = """
import feedparser, feedparser.api as api
def snapshot():
    return (api.StrictFeedParser, api.LooseFeedParser, tuple(api.PREFERRED_XML_PARSERS),
            feedparser.SANITIZE_HTML, feedparser.RESOLVE_RELATIVE_URIS)
before = snapshot()
import transforms.parse
assert snapshot() == before, ("import", before, snapshot())
rss = b'<rss version="2.0"><channel><item><title>t</title><dc:date xmlns:dc="http://purl.org/dc/elements/1.1/">2026-01-02T00:00:00Z</dc:date></item></channel></rss>'
parsed = transforms.parse.parse_input(rss, "s")
assert parsed.entries[0]["published_field"] == "dc:date", parsed.entries  # our rules applied
assert snapshot() == before, ("parse", before, snapshot())
print("unchanged")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=PROJECT
    )
    assert done.returncode == 0 and done.stdout.strip() == "unchanged", done.stderr
