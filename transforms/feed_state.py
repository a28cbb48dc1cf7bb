"""Per-feed state across runs: validators, moved URLs, when to poll next, and how often a feed failed.

A scheduled run must not re-download what has not changed and must not hammer a feed that keeps
failing. For every feed URL the state keeps the `ETag` / `Last-Modified` to send back (a 304 then
costs no body), the URL a permanent redirect moved it to, when it was polled, the feed's own
`ttl` or `Cache-Control: max-age`, and its consecutive failures. From these, `poll_decision()`
says whether this run polls the feed or skips it (still fresh, or backing off after failures),
and `state_after()` gives the next state from one fetch's result. Both are pure functions.

The state is one small Parquet file beside the output (`OUTPUT/_state/feeds.parquet`). It is
read when the run plans its fetches and written by `WriteFeedState`, a step that runs only after
`CommitRun` has committed the run (it takes the run manifest as a side input): a crashed run
leaves the previous state. The new file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsSingleton, PCollection
from apache_beam.transforms.combiners import ToListCombineFn

from transforms.credentials import redact_url
from transforms.fetch import FetchResult
from transforms.io.lock import CommitLock
from transforms.io.parquet import read_parquet
from transforms.io.paths import STATE_DIR, join_path
from transforms.schema import TIMESTAMP, Outcome

STATE_FILE = "feeds.parquet"
STATE_VERSION = 1

SKIP_FRESH = "fresh"  # polled more recently than its ttl / max-age / poll interval
SKIP_BACKING_OFF = "backing_off"  # failed too often lately

SUCCESS_OUTCOMES = frozenset({Outcome.OK, Outcome.OK_WITH_WARNINGS, Outcome.EMPTY, Outcome.NOT_MODIFIED})


@dataclass(frozen=True)
class FeedSource:
    """A feed as the user listed it (config `feeds:` or OPML), with its optional hints."""

    url: str
    name: str | None = None
    language: str | None = None  # used when the feed declares none
    category: str | None = None
    tags: tuple[str, ...] = ()
    poll_interval: int | None = None  # seconds; the feed is not polled more often
    fulltext: str | None = None  # this feed's `fulltext.mode` (off, auto, always); None: the config's


@dataclass(frozen=True)
class StatePolicy:
    """How the state turns into skips; defaults in configs/local.yaml `state:`."""

    honour_ttl: bool = True  # skip feeds polled within their ttl / max-age / poll_interval
    max_fresh_seconds: int = 24 * 3600  # a longer ttl or max-age is shortened to this
    backoff_after: int = 2  # consecutive failures before a feed is skipped
    backoff_base_seconds: int = 600  # first skip; doubled for every further failure
    backoff_max_seconds: int = 24 * 3600


@dataclass(frozen=True)
class FeedState:
    url: str  # the feed as listed, redacted (`transforms.fetch.redact_url`): the key
    fetch_url: str | None = None  # where a permanent redirect moved it; fetched instead of `url`
    etag: str | None = None
    last_modified: str | None = None
    last_polled_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: int | None = None
    last_outcome: str | None = None
    last_error_type: str | None = None
    fresh_seconds: int | None = None  # the feed's own ttl or max-age, as last seen
    consecutive_failures: int = 0
    next_poll_at: datetime | None = None  # not polled before this (fresh or backing off)

    @property
    def target(self) -> str:
        return self.fetch_url or self.url


STATE_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("fetch_url", pa.string()),
        pa.field("etag", pa.string()),
        pa.field("last_modified", pa.string()),
        pa.field("last_polled_at", TIMESTAMP),
        pa.field("last_success_at", TIMESTAMP),
        pa.field("last_status", pa.int16()),
        pa.field("last_outcome", pa.string()),
        pa.field("last_error_type", pa.string()),
        pa.field("fresh_seconds", pa.int64()),
        pa.field("consecutive_failures", pa.int32()),
        pa.field("next_poll_at", TIMESTAMP),
    ],
    metadata={"newsbeam.feed_state_version": str(STATE_VERSION)},
)


def poll_decision(state: FeedState | None, now: datetime, *, force: bool = False) -> str | None:
    """None when the feed is polled now; else why it is skipped (`fresh` or `backing_off`)."""
    if force or state is None or state.next_poll_at is None or now >= state.next_poll_at:
        return None
    return SKIP_BACKING_OFF if state.consecutive_failures else SKIP_FRESH


def failure_backoff_seconds(failures: int, policy: StatePolicy) -> int:
    """How long a feed with `failures` consecutive failures is skipped (0 below the threshold)."""
    if failures < policy.backoff_after:
        return 0
    exponent = min(failures - policy.backoff_after, 30)
    return int(min(policy.backoff_base_seconds * 2**exponent, policy.backoff_max_seconds))


_RSS_TTL = re.compile(rb"<ttl>\s*(\d{1,7})\s*</ttl>", re.I)


def rss_ttl_seconds(body: bytes | None) -> int | None:
    """The RSS `<ttl>` (minutes) of a feed body, in seconds; None when it states none."""
    if not body:
        return None
    match = _RSS_TTL.search(body[: 256 * 1024])
    return int(match.group(1)) * 60 if match else None


def state_after(
    previous: FeedState | None,
    url: str,
    now: datetime,
    *,
    outcome: str,
    status: int | None,
    error_type: str | None,
    etag: str | None,
    last_modified: str | None,
    permanent_redirect: str | None,
    fresh_seconds: int | None,
    poll_interval: int | None,
    policy: StatePolicy,
) -> FeedState:
    """The feed's state after one fetch of it."""
    before = previous or FeedState(url=url)
    fetch_url = permanent_redirect or before.fetch_url
    if fetch_url == url:
        fetch_url = None
    if outcome in SUCCESS_OUTCOMES:
        if outcome == Outcome.NOT_MODIFIED:
            # A 304 may omit the validators; the stored ones still describe the body we have.
            etag, last_modified = etag or before.etag, last_modified or before.last_modified
            fresh_seconds = fresh_seconds if fresh_seconds is not None else before.fresh_seconds
        wait = max(poll_interval or 0, fresh_seconds or 0) if policy.honour_ttl else 0
        wait = min(wait, policy.max_fresh_seconds)
        return FeedState(
            url=url,
            fetch_url=fetch_url,
            etag=etag,
            last_modified=last_modified,
            last_polled_at=now,
            last_success_at=now,
            last_status=status,
            last_outcome=str(outcome),
            last_error_type=None,
            fresh_seconds=fresh_seconds,
            consecutive_failures=0,
            next_poll_at=now + timedelta(seconds=wait) if wait > 0 else None,
        )
    failures = before.consecutive_failures + 1
    backoff = failure_backoff_seconds(failures, policy)
    # A failed answer's validators describe no body we kept: keep the previous ones.
    return replace(
        before,
        fetch_url=fetch_url,
        last_polled_at=now,
        last_status=status,
        last_outcome=str(outcome),
        last_error_type=error_type,
        consecutive_failures=failures,
        next_poll_at=now + timedelta(seconds=backoff) if backoff > 0 else None,
    )


def state_after_fetch(
    previous: FeedState | None,
    source: str,
    started_at: datetime,
    row: Mapping[str, Any],
    result: FetchResult,
    poll_interval: int | None,
    policy: StatePolicy,
) -> FeedState:
    """The one rule of batch reads and stream polls: a feed's state after one fetch and its fetch row.

    The outcome is the row's (a 200 that is no feed is a failure); the freshness is the longer of
    the answer's max-age and the feed's RSS `<ttl>`.
    """
    fresh = [s for s in (result.max_age, rss_ttl_seconds(result.body)) if s is not None]
    return state_after(
        previous,
        source,
        started_at,
        outcome=str(row["outcome"]),
        status=result.status,
        error_type=row.get("error_type"),
        etag=result.etag,
        last_modified=result.last_modified,
        permanent_redirect=result.permanent_redirect,
        fresh_seconds=max(fresh) if fresh else None,
        poll_interval=poll_interval,
        policy=policy,
    )


_TIMES = ("last_polled_at", "last_success_at", "next_poll_at")


def state_to_json(state: FeedState) -> dict[str, Any]:
    """A state as JSON values (times as ISO 8601), for the streaming job's per-feed Beam state."""
    values = asdict(state)
    for name in _TIMES:
        values[name] = values[name].isoformat() if values[name] is not None else None
    return values


def state_from_json(values: Mapping[str, Any]) -> FeedState:
    known = {k: v for k, v in values.items() if k in FeedState.__dataclass_fields__}
    for name in _TIMES:
        if known.get(name) is not None:
            known[name] = datetime.fromisoformat(known[name])
    return FeedState(**known)


# --- storage ------------------------------------------------------------------------------------


def state_path(output: str) -> str:
    return join_path(output, STATE_DIR, STATE_FILE)


def _to_row(state: FeedState) -> dict[str, Any]:
    return asdict(state)


def _from_row(row: Mapping[str, Any]) -> FeedState:
    values: dict[str, Any] = {name: row.get(name) for name in STATE_SCHEMA.names}
    values["consecutive_failures"] = int(values["consecutive_failures"] or 0)
    # A state file written before URLs were redacted holds feed URLs with credentials: read under
    # the redacted key, they are found again and the next write drops the credentials.
    values["url"] = redact_url(values["url"])
    if values["fetch_url"]:
        values["fetch_url"] = redact_url(values["fetch_url"])
    return FeedState(**values)


def load_states(path: str | None) -> dict[str, FeedState]:
    """The stored state by listed URL; empty when there is no state file yet."""
    if not path or not FileSystems.exists(path):
        return {}
    try:
        table = read_parquet(path)
        return {row["url"]: _from_row(row) for row in table.to_pylist()}
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
        # Losing the state costs one unconditional fetch per feed, never the run; the next
        # committed run writes a good file in its place.
        logging.getLogger(__name__).warning("ignoring unreadable feed state %s: %s", path, error)
        return {}


def write_states(path: str, states: Iterable[FeedState]) -> int:
    """Write the state file atomically (temporary name, then rename); returns the feeds written."""
    rows = [_to_row(s) for s in sorted(states, key=lambda s: s.url)]
    table = pa.Table.from_pylist(rows, schema=STATE_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    if "://" not in path:
        import os

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with FileSystems.create(temporary) as stream:
        stream.write(buffer.getvalue())
    if "://" in path and FileSystems.exists(path):
        FileSystems.delete([path])  # object stores cannot rename over an existing object
    if "://" in path:
        FileSystems.rename([temporary], [path])
    else:
        import os

        os.replace(temporary, path)  # atomic on POSIX: readers see the old or the new file
    return len(rows)


def merge_states(stored: Mapping[str, FeedState], updated: Iterable[FeedState]) -> dict[str, FeedState]:
    """The stored state with this run's feeds replaced; feeds not in this run keep theirs."""
    merged = dict(stored)
    for state in updated:
        merged[state.url] = state
    return merged


class _WriteStateFn(beam.DoFn):
    def __init__(self, path: str, lock_output: str | None = None) -> None:
        self._path = path
        self._lock_output = lock_output

    def process(self, states: list[FeedState], manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # A run that did not commit keeps the previous state; a run without feeds (seed files
        # only) needs no state file.
        if manifest.get("status") != "committed" or not (states or FileSystems.exists(self._path)):
            return
        # Under the output's commit lock: two runs that finish together each merge their feeds
        # into what the other wrote, instead of the later one overwriting the earlier's states.
        lock = (
            CommitLock(self._lock_output, f"feed state of run {manifest.get('run_id')}")
            if self._lock_output
            else contextlib.nullcontext()
        )
        with lock:
            merged = merge_states(load_states(self._path), states)
            yield {"path": self._path, "feeds": write_states(self._path, merged.values())}


class WriteFeedState(beam.PTransform[Any, Any]):
    """This run's per-feed states -> OUTPUT/_state/feeds.parquet, only after the run has committed.

    With `lock_output`, the merge into the stored states runs under that output's commit lock.
    """

    def __init__(self, path: str, manifest: PCollection[Any], lock_output: str | None = None) -> None:
        super().__init__()
        self._path = path
        self._manifest = manifest
        self._lock_output = lock_output

    def expand(self, states: PCollection[Any]) -> PCollection[Any]:
        result: PCollection[Any] = (
            states
            | "GatherFeedStates" >> beam.CombineGlobally(ToListCombineFn())
            | "WriteAfterCommit"
            >> beam.ParDo(_WriteStateFn(self._path, self._lock_output), manifest=AsSingleton(self._manifest))
        )
        return result
