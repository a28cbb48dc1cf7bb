"""Turn the bytes of one input into raw entries: the parser is chosen by media type, then by sniffing.

Pure functions, no Beam. Every input gives a `ParsedInput` with a named `Outcome` and zero or more
`RawEntry` dicts of one shape, whatever the format. As lemon24/reader does, parsers are chosen
through a small registry: a declared media type that names one (`application/feed+json`) picks
it; any other type (feeds are served as `text/xml`, `text/plain`, `application/octet-stream` and
worse) is sniffed from the body, JSON Feed when it looks like JSON, else the XML parser, which
reads RSS, Atom, RDF and CDF and says what it found. A parser's `ParseError` becomes a value here.

The formats live in modules of their own: `parse_xml` (feedparser), `parse_json` (JSON Feed),
`parse_text` (seed files); `raw_entry` holds the shape they share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, Unpack

from transforms.parse_json import parse_json_feed
from transforms.parse_text import decode_text as decode_text
from transforms.parse_text import parse_seed_file as parse_seed_file
from transforms.parse_xml import parse_xml_feed
from transforms.parse_xml import undeclared_charset as undeclared_charset
from transforms.raw_entry import TOO_MANY_ENTRIES, ParseHints
from transforms.raw_entry import ParsedInput as ParsedInput
from transforms.raw_entry import RawEntry as RawEntry
from transforms.raw_entry import absolute_link as absolute_link
from transforms.raw_entry import is_http_url as is_http_url
from transforms.schema import Outcome


class FeedParser(Protocol):
    def __call__(self, body: bytes, source: str, **hints: Unpack[ParseHints]) -> ParsedInput: ...


def _json_feed(body: bytes, source: str, **hints: Unpack[ParseHints]) -> ParsedInput:
    return parse_json_feed(body, source, base_url=hints.get("base_url"), max_entries=hints.get("max_entries"))


# Media types that name their parser. Any other type containing "json" is JSON too.
PARSERS_BY_MEDIA_TYPE: dict[str, FeedParser] = {
    "application/feed+json": _json_feed,
    "application/json": _json_feed,
}
# For the other types, in order: the first test the body passes picks the parser; XML is the rest.
SNIFFERS: tuple[tuple[Callable[[bytes], bool], FeedParser], ...] = (
    (lambda body: body[:64].lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")), _json_feed),
)
FALLBACK_PARSER: FeedParser = parse_xml_feed


def parser_for(body: bytes, content_type: str | None) -> FeedParser:
    """The parser of a body served (or stored) as `content_type`."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in PARSERS_BY_MEDIA_TYPE:
        return PARSERS_BY_MEDIA_TYPE[media_type]
    if "json" in (content_type or "").lower():
        return _json_feed
    return next((parser for sniff, parser in SNIFFERS if sniff(body)), FALLBACK_PARSER)


def parse_input(body: bytes, source: str, **hints: Unpack[ParseHints]) -> ParsedInput:
    """Parse one feed body with the parser its media type or its bytes choose (`parser_for`).

    At most `max_entries` entries (the first ones, in feed order) are made; the others are counted
    in `entries_cut`, so that one huge feed costs the later stages no more than a large one.
    """
    max_entries = hints.get("max_entries")
    if max_entries is not None and max_entries < 1:
        raise ValueError(f"max_entries must be at least 1, not {max_entries}")
    if not body.strip():
        return ParsedInput(Outcome.NOT_A_FEED, error_type="empty_body", message="the input is empty")
    parsed = parser_for(body, hints.get("content_type"))(body, source, **hints)
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
