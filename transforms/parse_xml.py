"""XML feeds (RSS 0.9x/1.0/2.0, Atom, CDF) through feedparser, into `RawEntry` dicts.

feedparser runs without its own sanitizing and relative-URI rewriting of HTML (3.3x faster here;
cleaning is the normalize stage's), with newsbeam's reading of dates and links and the entry cap
(`transforms.feedparser_rules`). Undeclared legacy encodings are told apart with charset-normalizer.
"""

from __future__ import annotations

import calendar
import re
import xml.sax
from dataclasses import dataclass
from typing import Any, Unpack
from xml.parsers import expat

import charset_normalizer
import feedparser

from transforms.feedparser_rules import (
    DC_DATE,
    ENTRY_LIMIT,
    FEED_PARSER_OPTIONS,
    OTHER_UPDATE_TIME,
    EntryLimit,
    newsbeam_handlers,
)
from transforms.raw_entry import EntryFeed, ParsedInput, ParseHints, RawEntry, absolute_link, is_http_url
from transforms.schema import Outcome

_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S)
# Microsoft's Channel Definition Format: feedparser reads it but names no version.
_CDF_ROOT = re.compile(rb"^(\xef\xbb\xbf)?\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<channel[\s>]", re.I | re.S)
_XML_ENCODING_DECLARED = re.compile(rb"^(\xef\xbb\xbf)?\s*<\?xml[^>]*encoding\s*=", re.I)
_UNICODE_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# Single-byte Latin code pages: for undeclared Latin text, feedparser's windows-1252 fallback is
# right more often than a statistical choice between close code pages (cp1250, cp1252, cp1257).
_LATIN_GUESSES = frozenset(
    {"ascii", "latin_1", "cp1250", "cp1252", "cp1254", "cp1257", "cp1258", "cp437", "cp850", "cp852", "cp858"}
    | {f"iso8859_{n}" for n in (2, 3, 4, 9, 10, 13, 14, 15, 16)}
    | {"mac_roman", "mac_latin2", "mac_iceland", "mac_turkish", "hp_roman8"}
)


def parse_xml_feed(body: bytes, source: str, **hints: Unpack[ParseHints]) -> ParsedInput:
    """The entries of an XML feed; what is no feed is a `not_a_feed` outcome with its reason."""
    content_type, base_url = hints.get("content_type"), hints.get("base_url")
    max_entries = hints.get("max_entries")
    headers = {"content-type": content_type or "application/xml"}
    charset = undeclared_charset(body, content_type)
    if charset:
        headers["content-type"] = f"{headers['content-type'].split(';')[0]}; charset={charset}"
    if is_http_url(base_url):
        # Lets feedparser resolve relative links (xml:base still wins where the feed has one).
        headers["content-location"] = base_url or ""
    entry_limit = EntryLimit(max_entries)
    token = ENTRY_LIMIT.set(entry_limit)
    try:
        with newsbeam_handlers():
            parsed = feedparser.parse(body, response_headers=headers, **FEED_PARSER_OPTIONS)
    except Exception as error:  # feedparser rarely raises, but a crash must stay one input's problem
        return ParsedInput(
            Outcome.ERROR, error_type="parser_crash", message=f"{type(error).__name__}: {error}"
        )
    finally:
        ENTRY_LIMIT.reset(token)

    version = parsed.get("version") or ("cdf" if _CDF_ROOT.match(body[:4096]) else "")
    warning = _bozo_message(parsed)
    feed = parsed.get("feed", {})
    feed_title = feed.get("title")
    if not parsed.entries:
        if version and _structure_broken(parsed.get("bozo_exception")):
            # Not well-formed and nothing readable in it (a truncated download, a broken export): a
            # broken input, not a quiet feed. Ill-formed feeds that still give entries are read.
            return ParsedInput(
                Outcome.NOT_A_FEED,
                feed_format=version,
                feed_title=feed_title,
                error_type="malformed_feed",
                message=warning,
            )
        if version:
            warning_type = type(parsed.get("bozo_exception")).__name__ if parsed.bozo else None
            return ParsedInput(
                Outcome.EMPTY,
                feed_format=version,
                feed_title=feed_title,
                error_type=warning_type,
                message=warning,
            )
        if _HTML_START.match(body[:2048]):
            return ParsedInput(Outcome.NOT_A_FEED, error_type="html_page", message="an HTML page, not a feed")
        reason = "not_a_feed" if not parsed.bozo else "malformed_feed"
        return ParsedInput(Outcome.NOT_A_FEED, error_type=reason, message=warning or "no feed found")

    feed_language = feed.get("language")
    link_base = base_url if is_http_url(base_url) else stated_feed_url(feed)
    feed_link = absolute_link(feed.get("link"), link_base)
    shared = EntryFeed(source, feed_title, feed_link, feed_language)
    kept = parsed.entries[:max_entries] if max_entries is not None else parsed.entries
    entries = [
        _entry_from_feedparser(entry, ordinal, shared, link_base) for ordinal, entry in enumerate(kept)
    ]
    outcome = Outcome.OK_WITH_WARNINGS if parsed.bozo else Outcome.OK
    error_type: str | None = type(parsed.get("bozo_exception")).__name__ if parsed.bozo else None
    return ParsedInput(
        outcome,
        entries,
        feed_format=version or "unknown",
        feed_title=feed_title,
        error_type=error_type,
        message=warning,
        entries_cut=len(parsed.entries) - len(kept) + entry_limit.beyond,
    )


def undeclared_charset(body: bytes, content_type: str | None) -> str | None:
    """The encoding of a feed that declares none and is not UTF-8, when it is not a Latin one.

    Without chardet installed feedparser reads such bytes as windows-1252, which turns EUC-JP,
    Big5, KOI8-R or TIS-620 into mojibake; charset-normalizer tells them apart reliably.
    """
    if content_type and "charset=" in content_type.lower():
        return None
    if body.startswith(_UNICODE_BOMS) or _XML_ENCODING_DECLARED.match(body[:1024]):
        return None
    try:
        body.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body[:65536]).best()
    if best is None or best.encoding in _LATIN_GUESSES:
        return None
    return str(best.encoding)


def stated_feed_url(feed: Any) -> str | None:
    """For a feed read from a file: the URL it states for itself (`rel="self"`), else its home page.

    Links relative to the feed (GitHub's release feeds have `/owner/repo/releases/tag/v1`) resolve
    against it as they would against the URL the feed was fetched from.
    """
    for link in feed.get("links") or []:
        if link.get("rel") == "self" and is_http_url(link.get("href")):
            return str(link["href"])
    home = feed.get("link")
    return str(home) if is_http_url(home) else None


# XML faults that feedparser's loose parser reads past with the document's structure intact: an HTML
# entity (`&nbsp;`) that XML does not define, a namespace prefix nobody declared. A feed whose only
# fault is one of these and that has no entries is a valid empty feed, with a warning.
_LOCAL_XML_FAULTS = frozenset(
    {
        expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY],
        expat.errors.codes[expat.errors.XML_ERROR_UNBOUND_PREFIX],
    }
)


def _structure_broken(error: object) -> bool:
    """Whether feedparser's error says the XML is cut short or broken (not just a local fault)."""
    if not isinstance(error, xml.sax.SAXException):
        return False  # no XML error: an encoding or content-type warning
    return getattr(error.getException(), "code", None) not in _LOCAL_XML_FAULTS


def _bozo_message(parsed: Any) -> str | None:
    if not parsed.get("bozo"):
        return None
    error = parsed.get("bozo_exception")
    return f"{type(error).__name__}: {error}"[:500]


def _epoch(value: Any) -> int | None:
    """feedparser's struct_time (always UTC) as epoch seconds."""
    if not value:
        return None
    try:
        return calendar.timegm(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _entry_from_feedparser(entry: Any, ordinal: int, feed: EntryFeed, base_url: str | None) -> RawEntry:
    content, content_type, content_language = None, None, None
    if entry.get("content"):
        # Several content elements are alternatives (text, html): prefer the richest.
        best = max(entry["content"], key=lambda c: len(c.get("value") or ""))
        content, content_type = best.get("value"), best.get("type")
        content_language = best.get("language")
    summary_detail = entry.get("summary_detail") or {}
    title_detail = entry.get("title_detail") or {}
    published, updated = _dates(entry)
    return feed.entry(
        ordinal,
        entry_id=entry.get("id") or None,
        link=absolute_link(entry.get("link"), base_url),
        title=entry.get("title"),
        summary=entry.get("summary"),
        content=content,
        content_is_html=(content_type or "").endswith("html"),
        entry_language=(content_language or summary_detail.get("language") or title_detail.get("language")),
        authors=_names(entry),
        tags=[t.get("term") or t.get("label") or "" for t in entry.get("tags") or []],
        **published.columns("published"),
        **updated.columns("updated"),
    )


@dataclass(frozen=True)
class _Date:
    raw: str | None = None
    epoch: int | None = None
    field: str | None = None  # the field it came from, which becomes `published_at_source`

    def columns(self, name: str) -> dict[str, Any]:
        """The three `RawEntry` keys of this date: `name`, `name_epoch`, `name_field`."""
        return {name: self.raw, f"{name}_epoch": self.epoch, f"{name}_field": self.field}


def _dates(entry: Any) -> tuple[_Date, _Date]:
    """(publication, update) of a feedparser entry, each with the field it came from.

    Not entry.get for `updated`: feedparser 6 answers it with `published` when an entry has no
    update time, which would report a pubDate as an update (feedparser issue 310). An entry dated
    only by `dc:date` (RSS 1.0 / RDF mostly, which feedparser files as `updated`) is published then,
    as gofeed, rss-parser and other readers read it.
    """
    dc_raw, dc_parsed = dict.get(entry, DC_DATE) or (None, None)
    other_raw, other_parsed = dict.get(entry, OTHER_UPDATE_TIME) or (None, None)
    if dc_raw is None and other_raw is None:  # `updated` set some other way than by an end tag
        other_raw, other_parsed = dict.get(entry, "updated"), dict.get(entry, "updated_parsed")
    field_name = next((f for f in ("published", "created", "issued") if entry.get(f)), None)
    if field_name is not None:
        published = _Date(entry.get(field_name), _epoch(entry.get(f"{field_name}_parsed")), field_name)
        if not other_raw:  # a dc:date beside a pubDate stays the update time feedparser makes of it
            other_raw, other_parsed = dc_raw, dc_parsed
    elif dc_raw:
        published = _Date(dc_raw, _epoch(dc_parsed), "dc:date")
    else:
        published = _Date()
    updated = _Date(other_raw, _epoch(other_parsed), "updated") if other_raw else _Date()
    return published, updated


def _names(entry: Any) -> list[str]:
    names = [a.get("name") or a.get("email") or "" for a in entry.get("authors") or [] if a]
    if not any(names) and entry.get("author"):
        names = [entry["author"]]
    return names
