"""The shape every parser gives: `RawEntry` dicts and one `ParsedInput` per input, whatever the format.

Cleaning is left to the normalize stage; these are the entries as found in their input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict, cast
from urllib.parse import urljoin, urlsplit

from transforms.schema import Outcome, SourceType

TOO_MANY_ENTRIES = "too_many_entries"


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


class ParseHints(TypedDict, total=False):
    """What a parser is told besides the bytes: how they were served, and how many entries to read."""

    content_type: str | None
    base_url: str | None  # where the bytes came from, to resolve relative links against
    max_entries: int | None


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


@dataclass(frozen=True)
class EntryFeed:
    """What every entry of one feed shares: the source it was read from and the feed's own fields."""

    source: str
    title: str | None
    link: str | None
    language: str | None

    def entry(self, ordinal: int, **fields: Any) -> RawEntry:
        """One entry of this feed: the shared fields first, then the entry's own (`RawEntry` keys)."""
        shared = {
            "source": self.source,
            "source_type": SourceType.FEED,
            "ordinal": ordinal,
            "feed_title": self.title,
            "feed_link": self.link,
            "feed_language": self.language,
        }
        return cast(RawEntry, {**shared, **fields})
