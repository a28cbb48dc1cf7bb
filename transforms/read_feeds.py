"""HTTP retrieval of one listed feed in a batch run: fetch, parse, discover, and the feed's next state.

A listed URL that answers with an HTML page is a page, not a feed: its `<link rel="alternate">`
feeds are discovered (`transforms.discover`) and read instead, each with a `feed_fetches` row of
its own that names the page in `discovered_from`; the page's row says which feeds it led to. A
page that names none stays `not_a_feed`, as before. Nothing here raises: a crash stays one feed's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import requests

from transforms.credentials import carry_credentials, redact_url, split_credentials
from transforms.discover import FEEDS_DISCOVERED, discover_feeds, is_html
from transforms.feed_state import FeedSource, FeedState, state_after_fetch
from transforms.fetch import FetchResult, fetch
from transforms.parse import ParsedInput
from transforms.read_outputs import (
    FEED_STATES,
    FETCHES,
    fetch_row,
    fetched_to_outputs,
    http_fields,
    ms_since,
    parsed_to_outputs,
)
from transforms.read_settings import ReadSettings
from transforms.schema import Outcome, SourceType


def read_feed(
    session: requests.Session, url: str, state: FeedState | None, settings: ReadSettings
) -> list[Any]:
    """The outputs of one listed feed URL: entries, fetch rows, dead letters and its next state."""
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    feed = settings.feeds.get(url)
    source = redact_url(url)
    try:
        # Where the feed moved for good, with the listed URL's credentials if on the same origin.
        target = carry_credentials(state.fetch_url, url) if state and state.fetch_url else url
        result = fetch(
            session,
            target,
            settings.fetch,
            etag=state.etag if state else None,
            last_modified=state.last_modified if state else None,
        )
        discovered = _discovered(url, result, settings)
        if discovered:
            outputs = _read_discovered(session, url, result, discovered, feed, settings, started_at, clock)
        else:
            outputs = list(
                fetched_to_outputs(
                    url, result, started_at, clock, feed=feed, max_entries=settings.max_entries_per_feed
                )
            )
    except Exception as error:  # fetch() and parsing never raise; if a bug does, it stays this feed's
        message = redact_url(f"{type(error).__name__}: {error}")
        result = FetchResult(url=source, error_type="read_crash", message=message)
        parsed = ParsedInput(Outcome.ERROR, error_type="read_crash", message=message)
        outputs = list(parsed_to_outputs(source, SourceType.FEED, parsed, None, started_at, ms_since(clock)))
    row = next(o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == FETCHES)
    poll_interval = feed.poll_interval if feed else None
    next_state = state_after_fetch(
        state, source, started_at, row, result, poll_interval, settings.state_policy
    )
    outputs.append(beam.pvalue.TaggedOutput(FEED_STATES, next_state))
    return outputs


def _discovered(url: str, result: FetchResult, settings: ReadSettings) -> list[str]:
    """The feeds to read instead of an HTML page; none for a feed, or for a page naming none."""
    if not (result.ok and result.body and is_html(result.content_type)) or settings.max_discovered_feeds < 1:
        return []
    page = result.final_url or split_credentials(url)[0]
    found = discover_feeds(result.body, page, limit=settings.max_discovered_feeds + len(settings.feeds))
    # A feed that is also listed is read on its own, once.
    unlisted = [f for f in found if f not in settings.feeds and redact_url(f) not in settings.feeds]
    return unlisted[: settings.max_discovered_feeds]


def _read_discovered(
    session: requests.Session,
    url: str,
    page: FetchResult,
    discovered: list[str],
    feed: FeedSource | None,
    settings: ReadSettings,
    started_at: datetime,
    clock: float,
) -> list[Any]:
    """The page's own row, then each discovered feed's outputs, its row naming the page it came from.

    A discovered feed is fetched once, unconditionally, and never searched for feeds in its turn: a
    discovered URL that is an HTML page again is `not_a_feed` (no loop, no crawl).
    """
    source = redact_url(url)
    outputs: list[Any] = [
        beam.pvalue.TaggedOutput(
            FETCHES,
            fetch_row(
                source,
                SourceType.FEED,
                started_at,
                outcome=str(Outcome.OK),
                error_type=FEEDS_DISCOVERED,
                message=f"an HTML page naming {len(discovered)} feeds, read instead: "
                + ", ".join(redact_url(d) for d in discovered),
                bytes=len(page.body or b""),
                elapsed_ms=ms_since(clock),
                **http_fields(url, page),
            ),
        )
    ]
    for found in discovered:
        found_started, found_clock = datetime.now(UTC), time.monotonic()
        result = fetch(session, carry_credentials(found, url), settings.fetch)
        for output in fetched_to_outputs(
            found, result, found_started, found_clock, feed=feed, max_entries=settings.max_entries_per_feed
        ):
            if isinstance(output, beam.pvalue.TaggedOutput) and output.tag == FETCHES:
                output.value["discovered_from"] = source
            outputs.append(output)
    return outputs
