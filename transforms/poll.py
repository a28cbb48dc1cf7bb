"""PollFeeds: each tick fanned out to shards of the feeds due, each shard's feeds fetched at once.

`PollFeeds` fans each tick out to the feeds due at that tick (each feed has its own interval, a
multiple of the tick), in shards of at most `fetch.max_concurrent` feeds, keyed by shard. A stateful
DoFn keeps each of its feeds' `ETag` / `Last-Modified` between polls, so an unchanged feed costs a
304, and fetches the shard's due feeds concurrently on a pool of `fetch.max_concurrent` threads,
each request holding one of its host's `fetch.max_per_host` slots (`transforms/host_limits.py`: the
limit holds across threads and worker processes). So a tick's polls take about the slowest feed's
time, not the sum of them all: Prism 2.62 puts every pending key of a stateful stage into one
bundle and runs its elements one after another, which with a key per feed made the poll stage run
behind its ticks and every window close that much later.

The polls of one feed run one at a time in a worker (a lock per feed), a tick closer than the
feed's interval to its last poll (a replayed tick) polls nothing, no poll starts sooner than the
interval after the feed's last answer, whichever of the machine's worker processes got it
(`host_limits.LastAnswers`; a stage that runs behind reaches several ticks at once: it polls
once), and the validators of an older response never replace those of a newer one (also when the
runner runs a split-off bundle of the same shard beside the first: the newest known state of
each feed is kept in the worker process too). Fetching and parsing are batch's own
(`transforms.read.fetched_to_outputs`), so a poll yields exactly what a batch read does: raw
entries, one `feed_fetches` row and, for a failed feed, a dead letter. Every output is timestamped
with the moment its fetch started: the streaming job windows on real fetch time.

The feed's state between polls is batch's `FeedState`, updated by the same rule
(`transforms.feed_state.state_after_fetch`): the same validators are sent, a feed that keeps
failing backs off and a feed whose ttl or max-age says it is fresh is not polled, as in batch (a
tick it is not polled at gives a `skipped` fetch row, as a batch run does).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms import userstate
from apache_beam.transforms.window import TimestampedValue

from transforms.credentials import carry_credentials, redact_url
from transforms.feed_state import (
    FeedSource,
    FeedState,
    StatePolicy,
    poll_decision,
    state_after_fetch,
    state_from_json,
    state_to_json,
)
from transforms.fetch import FetchResult, FetchSettings, fetch, make_session
from transforms.host_limits import HostLimiter, LastAnswers
from transforms.io.committed import (
    REFRESH_SECONDS,
    body_digest,
    fetch_millis,
    shared_entries,
    shared_versions,
)
from transforms.parse import ParsedInput
from transforms.poll_schedule import feed_shards, feeds_due, poll_interval, shards_due, tick_seconds_for
from transforms.read_outputs import (
    DEAD_LETTERS,
    FETCHES,
    fetched_to_outputs,
    host_key,
    http_fields,
    ms_since,
    parsed_to_outputs,
    skipped_outputs,
)
from transforms.read_settings import MAX_ENTRIES_PER_FEED
from transforms.schema import Outcome, SourceType

# --- polling the feeds --------------------------------------------------------------------------


# One lock per feed URL in this process: polls of a feed never overlap, even when a runner runs a
# split-off bundle of the same shard beside the first; and the tick each feed was last polled at.
_FEED_LOCKS: dict[str, threading.Lock] = {}
_FEED_LOCKS_LOCK = threading.Lock()
_LAST_POLLED: dict[str, float] = {}
_LAST_ANSWERED: dict[str, float] = {}  # when each feed's last poll in this process ended (epoch seconds)
# The newest state of each feed this process polled, per job (`_PollShardFn._job`): what a bundle
# of a shard writes back, whatever state it read.
_KNOWN: dict[tuple[str, str], dict[str, Any]] = {}
_KNOWN_LOCK = threading.Lock()
EARLY_POLL_SLACK = 0.25  # of the interval: a poll due this soon waits for it, a later one skips its tick


def feed_lock(url: str) -> threading.Lock:
    with _FEED_LOCKS_LOCK:
        return _FEED_LOCKS.setdefault(url, threading.Lock())


def too_soon(tick_at: float, last_polled_at: float | None, interval: float) -> bool:
    """Whether a tick comes before the feed's interval since its last poll (a replayed tick)."""
    return last_polled_at is not None and tick_at < last_polled_at + interval - 1e-3


def wait_before_poll(last_answered_at: float | None, interval: float, now: float) -> float | None:
    """Seconds to wait before a feed's poll may start, or None: skip this tick.

    Ticks are a tick apart when emitted, but a busy stage may reach them late and several at once
    (each poll runs after the polls before it in the bundle): what spaces the requests is the real
    time of the feed's last answer. Counted from the answer, not from the start of that poll, the
    server never sees two requests closer than the interval, however long a request took to leave
    (a cold worker's first one did, by 76 ms on a loaded machine). A poll due within
    `EARLY_POLL_SLACK` of its interval waits for the rest (a tick that reached the stage a little
    earlier than the one before); one due later is a backlogged tick and polls nothing, the feed's
    next tick polls it.
    """
    if last_answered_at is None:
        return 0.0
    wait = last_answered_at + interval - now
    if wait <= 0:
        return 0.0
    return wait if wait <= EARLY_POLL_SLACK * interval else None


class _PollShardFn(beam.DoFn):
    """Fetch the due feeds of one shard per (shard, tick), concurrently; their states in Beam state.

    The state is one JSON object per shard: per feed (its URL redacted, as the records name it), its
    validators, permanent redirect, batch `FeedState`, last tick, last answer and body digest.
    """

    CONDITIONS = userstate.ReadModifyWriteStateSpec("feeds", StrUtf8Coder())
    _CONDITIONS_PARAM = beam.DoFn.StateParam(CONDITIONS)
    _TIMESTAMP_PARAM = beam.DoFn.TimestampParam

    def __init__(
        self,
        settings: FetchSettings,
        feeds: tuple[FeedSource, ...],
        default_interval: float,
        max_entries: int = MAX_ENTRIES_PER_FEED,
        output: str | None = None,
        state_policy: StatePolicy | None = None,
        hosts_folder: str | None = None,
        tick_seconds: float | None = None,
    ) -> None:
        self._settings = settings
        self._output = output
        self._policy = state_policy or StatePolicy()
        self._feeds = {feed.url: feed for feed in feeds}
        self._shards = feed_shards(feeds, settings.max_concurrent)
        self._default = default_interval
        # The schedule's tick (None: the shortest poll interval, as `tick_seconds_for` gives it).
        self._tick_seconds = tick_seconds or tick_seconds_for(feeds, default_interval)
        self._max_entries = max_entries
        # Where the per-host slots live (shared by the job's worker processes on this machine); None:
        # a folder of this DoFn's own, removed at teardown (tests that run the DoFn directly).
        self._hosts_folder = hosts_folder
        self._job = uuid.uuid4().hex  # the same in every copy of this DoFn in the job's workers
        self._polls = Metrics.counter("poll", "feeds_polled")
        self._not_modified = Metrics.counter("poll", "not_modified")
        self._entries = Metrics.counter("poll", "entries")
        self._too_soon = Metrics.counter("poll", "ticks_too_soon")
        self._behind = Metrics.counter("poll", "ticks_behind")
        self._unchanged_bodies = Metrics.counter("poll", "unchanged_bodies")
        self._known_entries = Metrics.counter("poll", "known_entries")
        self._skipped = Metrics.counter("poll", "feeds_skipped")

    def setup(self) -> None:
        workers = max(1, self._settings.max_concurrent)
        self._session = make_session(self._settings, pool_size=workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="newsbeam-poll")
        self._own_folder = None if self._hosts_folder else tempfile.mkdtemp(prefix="newsbeam-poll-hosts-")
        folder = self._hosts_folder or self._own_folder or ""
        self._limiter = HostLimiter(folder, self._settings.max_per_host)
        self._answers = LastAnswers(folder)
        self._entries_committed = shared_entries()
        self._versions = shared_versions(self._output) if self._output else None

    def teardown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._session.close()
        if self._own_folder:
            shutil.rmtree(self._own_folder, ignore_errors=True)

    def process(
        self, keyed: tuple[str, int], conditions: Any = _CONDITIONS_PARAM, tick: Any = _TIMESTAMP_PARAM
    ) -> Iterator[Any]:
        shard, index = keyed
        urls = self._shards[int(shard)] if 0 <= int(shard) < len(self._shards) else ()
        due = set(
            feeds_due(tuple(self._feeds[url] for url in urls), index, self._tick_seconds, self._default)
        )
        if self._versions is not None:  # notices a prune, which makes the known entries forgotten
            self._versions.refresh(max_age=REFRESH_SECONDS)
        # Keyed by the feed's URL as the records name it: no credential is kept in the runner's state.
        states: dict[str, Any] = json.loads(conditions.read() or "{}")
        polls = [
            self._pool.submit(self._poll_feed, url, states.get(redact_url(url)) or {}, float(tick))
            for url in urls
            if url in due
        ]
        changed = False
        for done in as_completed(polls):
            outputs, after = done.result()
            changed = changed or after is not None
            yield from outputs
        if changed:
            # Every feed of the shard at its newest known state: a split-off bundle of this shard that
            # ran beside this one (and read the state before it) wrote its feeds' newer states here too.
            newest = {redact_url(url): self._newest(url, states.get(redact_url(url)) or {}) for url in urls}
            conditions.write(json.dumps(newest))

    def _newest(self, url: str, known: dict[str, Any]) -> dict[str, Any]:
        """The newer (by fetch) of a feed's state read from Beam and the one this process polled last."""
        with _KNOWN_LOCK:
            polled = _KNOWN.get((self._job, url))
        if polled is not None and polled.get("fetched_at", 0) > known.get("fetched_at", 0):
            return polled
        return known

    def _poll_feed(
        self, url: str, read: dict[str, Any], tick: float
    ) -> tuple[list[Any], dict[str, Any] | None]:
        """One feed's poll at `tick`: its outputs, and its new state (None: unchanged)."""
        feed = self._feeds.get(url)
        interval = poll_interval(feed, self._default) if feed else self._default
        with feed_lock(url):
            known = self._newest(url, read)
            last = max(_LAST_POLLED.get(url, float("-inf")), known.get("tick_at", float("-inf")))
            if too_soon(tick, last if last > float("-inf") else None, interval):
                self._too_soon.inc()
                return [], None
            answered = max(
                _LAST_ANSWERED.get(url, float("-inf")),
                known.get("answered_at", float("-inf")),
                self._answers.last(url) or float("-inf"),  # another process's last poll of it
            )
            wait = wait_before_poll(answered if answered > float("-inf") else None, interval, time.time())
            if wait is None:
                self._behind.inc()
                return [], None
            time.sleep(wait)
            _LAST_POLLED[url] = tick
            stored = feed_state_of(known)
            now = datetime.now(UTC)
            reason = poll_decision(stored, now)
            if stored is not None and reason is not None:  # fresh or backing off, as in batch
                self._skipped.inc()
                skipped = skipped_outputs(url, stored, reason, now)
                return [_at(o, now.timestamp()) for o in skipped if o.tag == FETCHES], None
            moved = stored.fetch_url if stored else None
            with self._limiter.request(host_key(moved or url)):  # one of the host's slots
                outputs, after = self._poll(url, known, stored, feed)
            _LAST_ANSWERED[url] = after["answered_at"] = time.time()
            self._answers.record(url, after["answered_at"])
            after["tick_at"] = tick
            if after.get("fetched_at", 0) < known.get("fetched_at", 0):  # never an older response's
                return outputs, None
            with _KNOWN_LOCK:
                _KNOWN[(self._job, url)] = after
        return outputs, after

    def _poll(
        self, url: str, known: dict[str, Any], stored: FeedState | None, feed: FeedSource | None
    ) -> tuple[list[Any], dict[str, Any]]:
        now = datetime.now(UTC)
        started_at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # whole ms: names the poll
        clock = time.monotonic()
        fetched = started_at.timestamp()
        source = redact_url(url)
        self._polls.inc()
        # The validators go out only when everything the last full body held is committed: a 304
        # must not hide an entry that the runner lost on its way to the sink.
        conditional = stored is not None and self._entries_committed.body_committed(
            source, known.get("digest")
        )
        try:
            moved = stored.fetch_url if stored else None
            result = fetch(
                self._session,
                carry_credentials(moved, url) if moved else url,
                self._settings,
                etag=stored.etag if stored and conditional else None,
                last_modified=stored.last_modified if stored and conditional else None,
            )
            outputs = list(self._outputs(url, result, started_at, clock, feed))
        except Exception as error:  # fetch() and parsing never raise; a bug stays this poll's, as in batch
            message = redact_url(f"{type(error).__name__}: {error}")
            result = FetchResult(url=source, error_type="read_crash", message=message)
            parsed = ParsedInput(Outcome.ERROR, error_type="read_crash", message=message)
            outputs = list(parsed_to_outputs(source, SourceType.FEED, parsed, None, started_at, 0))
        if result.not_modified:
            self._not_modified.inc()
        row = next(o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == FETCHES)
        # Batch's rule; the schedule, not the state, keeps the feed's own poll interval here.
        next_state = state_after_fetch(stored, source, started_at, row, result, None, self._policy)
        after = {**known, FEED_STATE_KEY: state_to_json(next_state), "fetched_at": fetched}
        if result.ok and not result.not_modified and result.body is not None:
            after["digest"] = body_digest(result.body)
        return [_at(output, fetched) for output in outputs], after

    def _outputs(
        self, url: str, result: FetchResult, started_at: datetime, clock: float, feed: FeedSource | None
    ) -> Iterator[Any]:
        """A poll's outputs, as a batch read gives them, less what is known committed."""
        if not (result.ok and not result.not_modified and result.body is not None):
            yield from fetched_to_outputs(
                url, result, started_at, clock, feed=feed, max_entries=self._max_entries
            )
            return
        digest, source = body_digest(result.body), redact_url(url)  # `source`: as the records name the feed
        if self._entries_committed.body_committed(source, digest):
            self._unchanged_bodies.inc()
            unchanged = ParsedInput(
                Outcome.NOT_MODIFIED, message="the body is unchanged since it was committed"
            )
            http = http_fields(url, result)
            yield from parsed_to_outputs(
                redact_url(url), SourceType.FEED, unchanged, result.body, started_at, ms_since(clock), **http
            )
            return
        outputs = list(
            fetched_to_outputs(url, result, started_at, clock, feed=feed, max_entries=self._max_entries)
        )
        entries = [output for output in outputs if isinstance(output, dict)]
        fresh = self._entries_committed.entries_to_process(source, digest, fetch_millis(started_at), entries)
        self._entries.inc(len(entries))
        self._known_entries.inc(len(entries) - len(fresh))
        yield from fresh
        for output in outputs:
            if isinstance(output, beam.pvalue.TaggedOutput):
                if output.tag == FETCHES:
                    output.value["already_stored"] = len(entries) - len(fresh)
                yield output


def _at(output: Any, timestamp: float) -> Any:
    """An output of a poll, timestamped with the moment its fetch started."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, TimestampedValue(output.value, timestamp))
    return TimestampedValue(output, timestamp)


FEED_STATE_KEY = "feed_state"


def feed_state_of(known: dict[str, Any]) -> FeedState | None:
    """The batch `FeedState` kept in a feed's streaming state; None before its first poll."""
    values = known.get(FEED_STATE_KEY)
    return state_from_json(values) if values else None


class PollOutputs(NamedTuple):
    """What `PollFeeds` gives: raw entries, one fetch row per poll (or skipped tick), dead letters."""

    entries: PCollection[Any]
    fetches: PCollection[Any]
    dead_letters: PCollection[Any]


class PollFeeds(beam.PTransform[Any, Any]):
    """Tick indexes -> `PollOutputs`, as `ReadSources` gives them (feed states stay in Beam state)."""

    def __init__(
        self,
        feeds: tuple[FeedSource, ...],
        tick_seconds: float,
        default_interval: float,
        settings: FetchSettings,
        max_entries_per_feed: int = MAX_ENTRIES_PER_FEED,
        output: str | None = None,
        state_policy: StatePolicy | None = None,
        hosts_folder: str | None = None,
    ) -> None:
        super().__init__()
        self._policy = state_policy or StatePolicy()
        self._hosts_folder = hosts_folder  # the per-host slots (`_PollShardFn`)
        if not feeds:
            raise ValueError("PollFeeds needs at least one feed")
        self._output = output  # whose committed version index the polls watch for a prune
        self._feeds = feeds
        self._tick_seconds = tick_seconds
        self._default = default_interval
        self._settings = settings
        self._max_entries = max_entries_per_feed

    def expand(self, ticks: PCollection[Any]) -> PollOutputs:
        feeds, tick_seconds, default = self._feeds, self._tick_seconds, self._default
        shards = feed_shards(feeds, self._settings.max_concurrent)
        poll = _PollShardFn(
            self._settings,
            feeds,
            default,
            self._max_entries,
            self._output,
            self._policy,
            hosts_folder=self._hosts_folder,
            tick_seconds=tick_seconds,
        )
        polled = (
            ticks
            | "ShardsDue"
            >> beam.FlatMap(
                lambda index: shards_due(shards, feeds, index, tick_seconds, default)
            ).with_output_types(tuple[str, int])
            # Keyed by shard: its feeds' conditions are its state, and shards spread over workers.
            | "FetchFeeds" >> beam.ParDo(poll).with_outputs(FETCHES, DEAD_LETTERS, main="entries")
        )
        return PollOutputs(polled.entries, polled[FETCHES], polled[DEAD_LETTERS])
