"""JSON Feed 1.0/1.1 (https://jsonfeed.org) in the same `RawEntry` shape as feedparser's.

feedparser's released versions cannot read JSON Feed, hence this adapter.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from transforms.raw_entry import EntryFeed, ParsedInput, RawEntry, absolute_link, is_http_url
from transforms.schema import Outcome
from transforms.source_errors import ParseError

_JSON_FEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/1(\.1)?/?$")


def parse_json_feed(
    body: bytes, source: str, *, base_url: str | None = None, max_entries: int | None = None
) -> ParsedInput:
    """The entries of a JSON Feed; what is no JSON Feed is a `not_a_feed` outcome, never an exception."""
    try:
        document, version, version_warning = _json_feed_document(body)
    except ParseError as error:
        return ParsedInput(Outcome(error.outcome), error_type=error.error_type, message=str(error))
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
    feed = EntryFeed(source, feed_title, feed_link, feed_language)
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
            feed.entry(
                ordinal,
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


def _json_feed_document(body: bytes) -> tuple[dict[str, Any], str, str | None]:
    """(document, feed format, version warning) of a JSON Feed; raises `ParseError` for other bytes."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ParseError("invalid_json", str(error)[:500]) from error
    if not isinstance(document, dict):
        raise ParseError("not_a_json_feed", "JSON that is not an object")
    version, version_warning = json_feed_version(document)
    if version is None:
        raise ParseError("not_a_json_feed", "JSON without a jsonfeed.org `version` or an `items` list")
    return document, version, version_warning


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
