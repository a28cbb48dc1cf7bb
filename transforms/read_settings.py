"""ReadSettings: what the read stage is told (caps, the listed feeds' hints, the feed state to use)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from transforms.feed_state import FeedSource, StatePolicy
from transforms.fetch import FetchSettings

MAX_FILE_BYTES = 50 * 1024 * 1024
# Entries read from one feed. A feed is read, and its entries processed, by one worker inside one
# fused stage (no reshuffle of whole records), so one feed's cost must be bounded: 200,000 entries
# took one worker 941 s. Far above every real feed seen (the largest in the corpora has 1,046).
MAX_ENTRIES_PER_FEED = 10_000


@dataclass(frozen=True)
class ReadSettings:
    fetch: FetchSettings = field(default_factory=FetchSettings)
    max_file_bytes: int = MAX_FILE_BYTES
    max_entries_per_feed: int = MAX_ENTRIES_PER_FEED
    # Feeds over HTTP: the listed feeds' hints by URL, the per-feed state file (None: no state,
    # every feed is fetched unconditionally) and whether to ignore ttl and failure backoff.
    feeds: Mapping[str, FeedSource] = field(default_factory=dict)
    state_path: str | None = None
    state_policy: StatePolicy = field(default_factory=StatePolicy)
    force: bool = False
    # Feeds discovered on a page listed as a feed (its `<link rel="alternate">`): at most this many.
    max_discovered_feeds: int = 3
