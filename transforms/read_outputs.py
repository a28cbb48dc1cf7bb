"""What reading one source gives: its raw entries, its one `feed_fetches` row, and dead letters.

Shared by file reads, batch fetches and stream polls, so that a poll yields exactly what a batch
read does. A feed URL is recorded (as `source`, in the fetch row, the dead letter and the feed
state) redacted: credentials in it are used for the request only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

import apache_beam as beam

from transforms.credentials import redact_url, split_credentials
from transforms.feed_state import FeedSource, FeedState
from transforms.fetch import FetchResult
from transforms.parse import ParsedInput, RawEntry, parse_input
from transforms.raw_entry import TOO_MANY_ENTRIES
from transforms.read_settings import MAX_ENTRIES_PER_FEED
from transforms.schema import Outcome, Record, SourceType, Stage, dead_letter, escaped_text, valid_text
from transforms.source_errors import error_class

FETCHES = "fetches"
DEAD_LETTERS = "dead_letters"
FEED_STATES = "feed_states"


def fetch_row(source: str, source_type: str, started_at: datetime, **values: Any) -> Record:
    """One input's `feed_fetches` row, its text made valid UTF-8 (`escaped_text`): always writable."""
    row: Record = {
        "source": escaped_text(source),
        "source_type": str(source_type),
        "started_at": started_at,
        "entries": 0,
        "entries_cut": 0,
    }
    row.update((k, escaped_text(v) if isinstance(v, str) else v) for k, v in values.items())
    return row


def valid_entry(entry: RawEntry) -> RawEntry:
    """An entry whose text is valid Unicode (`valid_text`); the same entry when it already is.

    A lone surrogate (JSON Feed's `\\ud800`) in any record makes Beam fail the bundle when it
    samples the element's size, wherever that happens: text is repaired here, before it travels.
    """
    values = cast(dict[str, Any], entry)  # a TypedDict, walked by key
    for key, value in values.items():
        if isinstance(value, str):
            values[key] = valid_text(value)
        elif isinstance(value, list):
            values[key] = [valid_text(v) if isinstance(v, str) else v for v in value]
    return entry


def parsed_to_outputs(
    source: str,
    source_type: SourceType,
    parsed: ParsedInput,
    body: bytes | None,
    started_at: datetime,
    elapsed_ms: int,
    **http: Any,
) -> Iterator[Any]:
    """The entries, the fetch row and the dead letter of a failed input or of one whose entries were cut.

    `entries` counts every entry found; those beyond the cap are in `entries_cut` and in one dead
    letter (`too_many_entries`), so that the books balance and nothing is dropped unsaid.
    """
    for entry in parsed.entries:
        yield valid_entry(entry)
    yield beam.pvalue.TaggedOutput(
        FETCHES,
        fetch_row(
            source,
            source_type,
            started_at,
            outcome=str(parsed.outcome),
            feed_format=parsed.feed_format,
            feed_title=valid_text(parsed.feed_title) if parsed.feed_title else parsed.feed_title,
            error_type=parsed.error_type,
            message=parsed.message,
            bytes=len(body) if body is not None else None,
            entries=len(parsed.entries) + parsed.entries_cut,
            entries_cut=parsed.entries_cut,
            elapsed_ms=elapsed_ms,
            **http,
        ),
    )
    if parsed.outcome in (Outcome.ERROR, Outcome.NOT_A_FEED):
        stage = Stage.READ if parsed.outcome == Outcome.ERROR and body is None else Stage.PARSE
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTERS,
            dead_letter(
                stage,
                parsed.error_type or str(parsed.outcome),
                parsed.message or "",
                source,
                source_type,
                data=body,
            ),
        )
    if parsed.entries_cut:
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTERS,
            dead_letter(
                Stage.PARSE,
                TOO_MANY_ENTRIES,
                parsed.message or f"{parsed.entries_cut} entries not read",
                source,
                source_type,
                data=body,
            ),
        )


def fetched_to_outputs(
    url: str,
    result: FetchResult,
    started_at: datetime,
    clock: float,
    *,
    feed: FeedSource | None = None,
    max_entries: int = MAX_ENTRIES_PER_FEED,
) -> Iterator[Any]:
    """The entries, fetch row and dead letters of one HTTP fetch (shared by batch reads and stream polls).

    `url` is the feed as listed; redacted, it is the articles' `source`. `result.url` is what was
    requested (the listed URL, or where a permanent redirect moved it), redacted too. `feed`
    brings the listed name and language, used when the feed states none. At most `max_entries`
    entries are read.
    """
    source = redact_url(url)
    http = http_fields(url, result)
    if result.not_modified:
        parsed = ParsedInput(Outcome.NOT_MODIFIED)
    elif not result.ok or result.body is None:
        parsed = ParsedInput(Outcome.ERROR, error_type=result.error_type or "no_body", message=result.message)
    else:
        parsed = parse_input(
            result.body,
            source,
            content_type=result.content_type,
            base_url=result.final_url or split_credentials(url)[0],
            max_entries=max_entries,
        )
        if parsed.outcome in (Outcome.ERROR, Outcome.NOT_A_FEED):
            http["error_class"] = error_class(parsed.error_type)
        if feed is not None:
            _apply_hints(parsed, feed)
    yield from parsed_to_outputs(
        source, SourceType.FEED, parsed, result.body, started_at, ms_since(clock), **http
    )


def http_fields(url: str, result: FetchResult) -> dict[str, Any]:
    """The `feed_fetches` columns that describe one HTTP fetch (credentials in the URL redacted)."""
    return {
        "url": result.url or redact_url(url),
        "final_url": result.final_url,
        "http_status": result.status,
        "etag": result.etag,
        "last_modified": result.last_modified,
        "attempts": result.attempts,
        "error_class": result.error_class,
    }


def _apply_hints(parsed: ParsedInput, feed: FeedSource) -> None:
    if parsed.feed_title is None and feed.name:
        parsed.feed_title = feed.name
    for entry in parsed.entries:
        if not entry.get("feed_language") and feed.language:
            entry["feed_language"] = feed.language
        if not entry.get("feed_title") and feed.name:
            entry["feed_title"] = feed.name
        # The config's hints, not the feed's own fields: set here, not by the parser (no RawEntry keys).
        hinted = cast(dict[str, Any], entry)
        if feed.category:
            hinted["feed_category"] = feed.category
        if feed.tags:
            hinted["feed_tags"] = list(feed.tags)


def ms_since(clock: float) -> int:
    return int((time.monotonic() - clock) * 1000)


def host_key(url: str) -> str:
    """The politeness key of a URL: its host, lower-cased (all ports of a host count as one)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def skipped_outputs(url: str, state: FeedState, reason: str, now: datetime) -> Iterator[Any]:
    """The fetch row and the unchanged state of a feed this run does not poll."""
    yield beam.pvalue.TaggedOutput(
        FETCHES,
        fetch_row(
            redact_url(url),
            SourceType.FEED,
            now,
            outcome=str(Outcome.SKIPPED),
            error_type=reason,
            message=f"not polled until {state.next_poll_at:%Y-%m-%dT%H:%M:%SZ}"
            + (f" after {state.consecutive_failures} failures" if state.consecutive_failures else ""),
            url=state.target,
            etag=state.etag,
            last_modified=state.last_modified,
            attempts=0,
            elapsed_ms=0,
        ),
    )
    yield beam.pvalue.TaggedOutput(FEED_STATES, state)
