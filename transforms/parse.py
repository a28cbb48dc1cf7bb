"""Turn the bytes of one input into raw entries: feeds with feedparser, JSON Feed, seed text files.

Pure functions, no Beam. Every input gives a `ParsedInput` with a named `Outcome` and zero or more
`RawEntry` dicts of one shape, whatever the format; cleaning is left to the normalize stage, so
feedparser runs without its own sanitizing and relative-URI rewriting of HTML (3.3x faster here).
"""

from __future__ import annotations

import calendar
import contextvars
import json
import re
import xml.sax
import xml.sax.expatreader
import xml.sax.handler
import xml.sax.xmlreader
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urljoin, urlsplit
from xml.parsers import expat

import charset_normalizer
import feedparser
import feedparser.api

from transforms.schema import Outcome, SourceType


class RawEntry(TypedDict, total=False):
    """One entry as found in its input, before any cleaning."""

    source: str
    source_type: str
    ordinal: int  # position in the input, to keep duplicates' order stable
    feed_title: str | None
    feed_link: str | None
    feed_language: str | None  # the feed's declared language, as written
    entry_id: str | None
    link: str | None  # absolute when the input had a base to resolve it against
    title: str | None  # may hold HTML
    summary: str | None  # may hold HTML
    content: str | None  # may hold HTML
    content_is_html: bool
    entry_language: str | None  # xml:lang of the entry or its content
    authors: list[str]
    tags: list[str]
    published: str | None  # the raw date string
    published_epoch: int | None  # the parser's reading of it (UTC seconds), when it had one
    published_field: str | None
    updated: str | None
    updated_epoch: int | None
    updated_field: str | None


@dataclass
class ParsedInput:
    outcome: Outcome
    entries: list[RawEntry] = field(default_factory=list)
    feed_format: str | None = None
    feed_title: str | None = None
    error_type: str | None = None
    message: str | None = None
    # Entries found beyond the `max_entries` asked for: counted, not read (`entries` holds the rest).
    entries_cut: int = 0


FEED_PARSER_OPTIONS = {"sanitize_html": False, "resolve_relative_uris": False}


class _BufferedExpatParser(xml.sax.expatreader.ExpatParser):
    """Python's expat SAX reader with `buffer_text` on: one `characters()` call per run of text
    instead of one per line and per entity. The same events with the same text reach feedparser,
    whose per-call bookkeeping was about a third of its time on feeds of escaped HTML (parse
    28% faster in benchmarks/RESULTS.md).
    """

    def reset(self) -> None:
        super().reset()
        self._parser.buffer_text = True  # type: ignore[attr-defined]  # typeshed omits _parser


def create_parser() -> xml.sax.xmlreader.XMLReader:
    """The hook `xml.sax.make_parser` calls for each module in feedparser's PREFERRED_XML_PARSERS."""
    return _BufferedExpatParser()


# feedparser asks xml.sax for the first parser module of this list that it can import.
if __name__ not in feedparser.api.PREFERRED_XML_PARSERS:
    feedparser.api.PREFERRED_XML_PARSERS.insert(0, __name__)

# An entry's `dc:date` and its other update time (atom:updated, dcterms:modified), each as
# (raw, parsed): feedparser files both as `updated`, the later one over the earlier (see _PeerRules).
DC_DATE = "newsbeam_dc_date"
OTHER_UPDATE_TIME = "newsbeam_other_update_time"


class _PeerRules:
    """Two readings of feedparser's that every other feed reader (gofeed, rss-parser) makes differently.

    Mixed in before feedparser's own handler classes, whose `_start_<element>` / `_end_<element>`
    methods it extends:

    - `dc:date` is filed as `updated` (so is `dcterms:modified`, and the later of the two
      overwrites the other); readers take dc:date as the publication date. Each is also kept under
      a name of its own, so that `_dates` can make dc:date the publication date when the entry has
      none of its own, and keep the other as the update time, in whichever order they came.
    - `<link uri="at://...">http://example.com/item</link>`: feedparser takes the attribute and
      never reads the text; RSS says the link is the element's text. The text is read too and wins
      when it is an http(s) URL (resolved like any link) and the attribute is not.
    """

    _non_http_link: str | None = None
    _ending_dc_date = False

    if TYPE_CHECKING:  # provided by feedparser's handler classes, which come after this one
        infeed: int
        inentry: int
        insource: int
        inimage: int

        def _get_context(self) -> Any: ...
        def push(self, element: str, expecting_text: int) -> None: ...
        def pop(self, element: str) -> str | None: ...

    def _end_updated(self) -> None:  # also the end of dcterms:modified, atom:updated and dc:date
        super()._end_updated()  # type: ignore[misc]
        context = self._get_context()
        just_read = (dict.get(context, "updated"), dict.get(context, "updated_parsed"))
        context[DC_DATE if self._ending_dc_date else OTHER_UPDATE_TIME] = just_read

    _end_modified = _end_updated

    def _end_dc_date(self) -> None:
        self._ending_dc_date = True
        try:
            super()._end_dc_date()  # type: ignore[misc]
        finally:
            self._ending_dc_date = False

    def _start_link(self, attrs_d: dict[str, str]) -> None:
        super()._start_link(attrs_d)  # type: ignore[misc]
        # feedparser has moved a `uri` or `url` attribute to `href` and made the alternate link of it.
        href = attrs_d.get("href")
        self._non_http_link = None
        expecting_text = (self.infeed or self.inentry or self.insource) and not self.inimage
        if href and not is_http_url(href) and attrs_d.get("rel") == "alternate" and expecting_text:
            self._non_http_link = href
            self.push("link", expecting_text)

    def _end_link(self) -> None:
        attribute, self._non_http_link = self._non_http_link, None
        if attribute is None:
            super()._end_link()  # type: ignore[misc]
            return
        context = self._get_context()
        before = context.get("link")
        text = self.pop("link")  # stores the text as the link, as it does for RSS
        if not is_http_url(text):
            if before is None:
                context.pop("link", None)
            else:
                context["link"] = before
            if context.get("links"):
                context["links"][-1]["href"] = attribute


@dataclass
class _EntryLimit:
    """The entry cap of one `feedparser.parse` call, and what its handler counted past it."""

    limit: int | None
    beyond: int = 0  # entry elements the strict parser counted past `limit` instead of reading them


# The cap reaches the handler, which feedparser builds itself, through a context variable.
_ENTRY_LIMIT: contextvars.ContextVar[_EntryLimit | None] = contextvars.ContextVar("newsbeam_entry_limit")


class _EntryLimitRule:
    """Past the entry cap, the strict (SAX) handler only counts the entry elements.

    feedparser's per-element work is about 0.1 ms an entry (21 s for a 200,000-entry feed) that a
    cut entry does not need: once `limit` entries are read, each further element at the depth and
    with the name of the entry that went over is counted, and every other event is ignored, to the
    end of the document (channel elements after the cut entries are not read). The loose parser,
    which feedparser falls back to for ill-formed XML, reads everything; those entries are cut after.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = _ENTRY_LIMIT.get(None) or _EntryLimit(None)
        self._limit.beyond = 0  # a strict attempt that failed hands over to the loose parser
        self._sax_depth = 0
        self._sax_name: Any = None
        self._counting: tuple[int, Any] | None = None  # (depth, name) of the entry elements

    if TYPE_CHECKING:
        entries: list[Any]

    def startElementNS(self, name: Any, qname: Any, attrs: Any) -> None:
        self._sax_depth += 1
        if self._counting is not None:
            if (self._sax_depth, name) == self._counting:
                self._limit.beyond += 1
            return
        self._sax_name = name
        super().startElementNS(name, qname, attrs)  # type: ignore[misc]

    def endElementNS(self, name: Any, qname: Any) -> None:
        self._sax_depth -= 1
        if self._counting is None:
            super().endElementNS(name, qname)  # type: ignore[misc]

    def characters(self, text: str) -> None:
        if self._counting is None:
            super().characters(text)  # type: ignore[misc]

    def _start_item(self, attrs_d: dict[str, str]) -> None:
        limit = self._limit.limit
        if (
            limit is not None
            and len(self.entries) >= limit
            and isinstance(self, xml.sax.handler.ContentHandler)
        ):
            self._counting = (self._sax_depth, self._sax_name)
            self._limit.beyond = 1
            return
        super()._start_item(attrs_d)  # type: ignore[misc]

    _start_entry = _start_item


# feedparser builds its handlers from these two module attributes on every parse.
for _name in ("StrictFeedParser", "LooseFeedParser"):
    _handler = getattr(feedparser.api, _name)
    if not issubclass(_handler, _PeerRules):
        setattr(feedparser.api, _name, type(_name, (_EntryLimitRule, _PeerRules, _handler), {}))

_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S)
_JSON_FEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/1(\.1)?/?$")
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


def is_http_url(value: str | None) -> bool:
    return bool(value) and urlsplit(value or "").scheme in ("http", "https")


def absolute_link(link: str | None, base: str | None) -> str | None:
    """The link made absolute against `base` when it is relative and the base is http(s)."""
    if not link:
        return None
    link = link.strip()
    if is_http_url(link) or not is_http_url(base):
        return link
    return urljoin(base or "", link)


def parse_input(
    body: bytes,
    source: str,
    *,
    content_type: str | None = None,
    base_url: str | None = None,
    max_entries: int | None = None,
) -> ParsedInput:
    """Parse one feed body (XML feeds through feedparser, JSON Feed through `parse_json_feed`).

    At most `max_entries` entries (the first ones, in feed order) are made; the others are counted
    in `entries_cut`, so that one huge feed costs the later stages no more than a large one.
    """
    if max_entries is not None and max_entries < 1:
        raise ValueError(f"max_entries must be at least 1, not {max_entries}")
    if not body.strip():
        return ParsedInput(Outcome.NOT_A_FEED, error_type="empty_body", message="the input is empty")
    if _looks_like_json(body, content_type):
        parsed = parse_json_feed(body, source, base_url=base_url, max_entries=max_entries)
    else:
        parsed = parse_xml_feed(
            body, source, content_type=content_type, base_url=base_url, max_entries=max_entries
        )
    if parsed.entries_cut:
        kept = len(parsed.entries)
        cut = (
            f"{parsed.entries_cut} of {kept + parsed.entries_cut} entries not read: at most {kept} "
            "are read from one feed (max_entries_per_feed)"
        )
        parsed.outcome = Outcome.OK_WITH_WARNINGS
        parsed.error_type = parsed.error_type or TOO_MANY_ENTRIES
        parsed.message = f"{cut}; {parsed.message}" if parsed.message else cut
    return parsed


TOO_MANY_ENTRIES = "too_many_entries"


def _looks_like_json(body: bytes, content_type: str | None) -> bool:
    if content_type and "json" in content_type.lower():
        return True
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith((b"{", b"["))


def parse_xml_feed(
    body: bytes,
    source: str,
    *,
    content_type: str | None = None,
    base_url: str | None = None,
    max_entries: int | None = None,
) -> ParsedInput:
    headers = {"content-type": content_type or "application/xml"}
    charset = undeclared_charset(body, content_type)
    if charset:
        headers["content-type"] = f"{headers['content-type'].split(';')[0]}; charset={charset}"
    if is_http_url(base_url):
        # Lets feedparser resolve relative links (xml:base still wins where the feed has one).
        headers["content-location"] = base_url or ""
    entry_limit = _EntryLimit(max_entries)
    token = _ENTRY_LIMIT.set(entry_limit)
    try:
        parsed = feedparser.parse(body, response_headers=headers, **FEED_PARSER_OPTIONS)
    except Exception as error:  # feedparser rarely raises, but a crash must stay one input's problem
        return ParsedInput(
            Outcome.ERROR, error_type="parser_crash", message=f"{type(error).__name__}: {error}"
        )
    finally:
        _ENTRY_LIMIT.reset(token)

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
    kept = parsed.entries[:max_entries] if max_entries is not None else parsed.entries
    entries = [
        _entry_from_feedparser(entry, ordinal, source, feed_title, feed_link, feed_language, link_base)
        for ordinal, entry in enumerate(kept)
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


def _entry_from_feedparser(
    entry: Any,
    ordinal: int,
    source: str,
    feed_title: str | None,
    feed_link: str | None,
    feed_language: str | None,
    base_url: str | None,
) -> RawEntry:
    content, content_type, content_language = None, None, None
    if entry.get("content"):
        # Several content elements are alternatives (text, html): prefer the richest.
        best = max(entry["content"], key=lambda c: len(c.get("value") or ""))
        content, content_type = best.get("value"), best.get("type")
        content_language = best.get("language")
    summary_detail = entry.get("summary_detail") or {}
    title_detail = entry.get("title_detail") or {}
    published, updated = _dates(entry)
    return RawEntry(
        source=source,
        source_type=SourceType.FEED,
        ordinal=ordinal,
        feed_title=feed_title,
        feed_link=feed_link,
        feed_language=feed_language,
        entry_id=entry.get("id") or None,
        link=absolute_link(entry.get("link"), base_url),
        title=entry.get("title"),
        summary=entry.get("summary"),
        content=content,
        content_is_html=(content_type or "").endswith("html"),
        entry_language=(content_language or summary_detail.get("language") or title_detail.get("language")),
        authors=_names(entry),
        tags=[t.get("term") or t.get("label") or "" for t in entry.get("tags") or []],
        published=published.raw,
        published_epoch=published.epoch,
        published_field=published.field,
        updated=updated.raw,
        updated_epoch=updated.epoch,
        updated_field=updated.field,
    )


@dataclass(frozen=True)
class _Date:
    raw: str | None = None
    epoch: int | None = None
    field: str | None = None  # the field it came from, which becomes `published_at_source`


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


def parse_json_feed(
    body: bytes, source: str, *, base_url: str | None = None, max_entries: int | None = None
) -> ParsedInput:
    """JSON Feed 1.0/1.1 (https://jsonfeed.org) in the same entry shape as feedparser's.

    feedparser's released versions cannot read JSON Feed, hence this adapter.
    """
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        return ParsedInput(Outcome.NOT_A_FEED, error_type="invalid_json", message=str(error)[:500])
    if not isinstance(document, dict):
        return ParsedInput(
            Outcome.NOT_A_FEED, error_type="not_a_json_feed", message="JSON that is not an object"
        )
    version, version_warning = json_feed_version(document)
    if version is None:
        return ParsedInput(
            Outcome.NOT_A_FEED,
            error_type="not_a_json_feed",
            message="JSON without a jsonfeed.org `version` or an `items` list",
        )
    feed_title = _str_or_none(document.get("title"))
    feed_base = document.get("feed_url") if is_http_url(document.get("feed_url")) else base_url
    feed_link = absolute_link(_str_or_none(document.get("home_page_url")), feed_base)
    feed_language = _str_or_none(document.get("language"))
    feed_authors = _json_authors(document)
    items = document.get("items")
    if not isinstance(items, list):
        return ParsedInput(
            Outcome.NOT_A_FEED,
            feed_format=version,
            error_type="no_items",
            message="JSON Feed without an `items` list",
        )
    entries: list[RawEntry] = []
    skipped = cut = 0
    for ordinal, item in enumerate(items):
        if not isinstance(item, dict):
            skipped += 1
            continue
        if max_entries is not None and len(entries) >= max_entries:
            cut += 1
            continue
        html = _str_or_none(item.get("content_html"))
        tags = item.get("tags") if isinstance(item.get("tags"), list) else []
        entries.append(
            RawEntry(
                source=source,
                source_type=SourceType.FEED,
                ordinal=ordinal,
                feed_title=feed_title,
                feed_link=feed_link,
                feed_language=feed_language,
                entry_id=_str_or_none(item.get("id")),
                link=absolute_link(_str_or_none(item.get("url") or item.get("external_url")), feed_base),
                title=_str_or_none(item.get("title")),
                summary=_str_or_none(item.get("summary")),
                content=html if html is not None else _str_or_none(item.get("content_text")),
                content_is_html=html is not None,
                entry_language=_str_or_none(item.get("language")),
                authors=_json_authors(item) or feed_authors,
                tags=[str(t) for t in tags or []],
                published=_str_or_none(item.get("date_published")),
                published_epoch=None,
                published_field="date_published" if item.get("date_published") else None,
                updated=_str_or_none(item.get("date_modified")),
                updated_epoch=None,
                updated_field="date_modified" if item.get("date_modified") else None,
            )
        )
    warnings = [version_warning] if version_warning else []
    if skipped:
        warnings.append(f"{skipped} items are not JSON objects")
    message = "; ".join(warnings) or None
    error_type = JSON_FEED_VERSION_WARNING if version_warning else None
    if not entries:
        outcome = Outcome.EMPTY if not skipped else Outcome.NOT_A_FEED
        return ParsedInput(
            outcome, feed_format=version, feed_title=feed_title, error_type=error_type, message=message
        )
    outcome = Outcome.OK_WITH_WARNINGS if warnings else Outcome.OK
    return ParsedInput(
        outcome,
        entries,
        feed_format=version,
        feed_title=feed_title,
        error_type=error_type,
        message=message,
        entries_cut=cut,
    )


JSON_FEED_VERSION_WARNING = "json_feed_version"


def json_feed_version(document: dict[str, Any]) -> tuple[str | None, str | None]:
    """(feed format, warning) of a JSON object; (None, None) when it is not a JSON Feed.

    The spec's `version` is a jsonfeed.org URL. Feeds in the wild write a bare "1.0" or "1.1", a
    future URL, or nothing at all; like other readers, any object with an `items` list is read as a
    JSON Feed then, with a warning. A `version` that is the URL of some other site names another
    format, and the object is not read.
    """
    raw = document.get("version")
    stated = str(raw).strip() if raw is not None else ""
    if _JSON_FEED_VERSION.match(stated):
        return ("json11" if stated.rstrip("/").endswith("1.1") else "json10"), None
    if not isinstance(document.get("items"), list):
        return None, None
    if is_http_url(stated):
        if urlsplit(stated).hostname != "jsonfeed.org":
            return None, None
        version = "json"  # a jsonfeed.org URL of a version this reader does not know
    else:
        version = _BARE_JSON_FEED_VERSIONS.get(stated.lower().removeprefix("v"), "json")
    shown = f"`version` {stated!r}" if stated else "no `version`"
    read_as = {"json10": "JSON Feed 1.0", "json11": "JSON Feed 1.1"}.get(version, "JSON Feed")
    return version, f"{shown} instead of https://jsonfeed.org/version/1.1 (or /1): read as {read_as}"


_BARE_JSON_FEED_VERSIONS = {"1": "json10", "1.0": "json10", "1.1": "json11"}


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _json_authors(obj: dict[str, Any]) -> list[str]:
    authors = obj.get("authors")
    if not isinstance(authors, list):
        authors = [obj["author"]] if isinstance(obj.get("author"), dict) else []
    return [str(a.get("name") or "") for a in authors if isinstance(a, dict)]


# --- seed files ---------------------------------------------------------------------------------


_CHAOS_MARGIN = 0.1


def decode_text(body: bytes) -> tuple[str, str]:
    """Decode a text file: UTF-8 (with or without BOM), else the detected encoding.

    Returns (text, encoding). Raises UnicodeDecodeError when no encoding fits (e.g. binary data).
    """
    if b"\x00" in body[:8192] and not body.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnicodeDecodeError("binary", body[:1], 0, 1, "NUL bytes: a binary file, not text")
    try:
        return body.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    matches = list(charset_normalizer.from_bytes(body))
    if not matches:
        raise UnicodeDecodeError("unknown", body[:1], 0, 1, "no text encoding fits these bytes")
    # charset_normalizer ranks by "chaos" alone; on short texts legacy code pages tie or nearly
    # tie, and the first is often wrong (cp1250 for Spanish, turning ñ into ń). Among the
    # near-best, take the most coherent (language-wise), and windows-1252 on a tie.
    near = [m for m in matches if m.chaos <= matches[0].chaos + _CHAOS_MARGIN]
    best = max(near, key=lambda m: (round(m.coherence, 3), m.encoding == "cp1252"))
    return str(best), best.encoding


def parse_seed_file(body: bytes, source: str) -> ParsedInput:
    """A seed file: first non-empty line is the title, the rest the body (paragraphs on blank lines)."""
    try:
        text, _encoding = decode_text(body)
    except UnicodeDecodeError as error:
        return ParsedInput(Outcome.ERROR, error_type="undecodable", message=error.reason)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ParsedInput(Outcome.EMPTY, feed_format="text", message="the file holds no text")
    title = lines[0].strip()
    body_text = "\n".join(lines[1:]).strip()
    entry = RawEntry(
        source=source,
        source_type=SourceType.SEED_FILE,
        ordinal=0,
        feed_title=None,
        feed_link=None,
        feed_language=None,
        entry_id=None,
        link=None,
        title=title,
        summary=None,
        content=body_text,
        content_is_html=False,
        entry_language=None,
        authors=[],
        tags=[],
        published=None,
        published_epoch=None,
        published_field=None,
        updated=None,
        updated_epoch=None,
        updated_field=None,
    )
    return ParsedInput(Outcome.OK, [entry], feed_format="text")
