"""GeneratePollTicks and PollFeeds: the unbounded source of the streaming job.

`GeneratePollTicks` is a splittable DoFn that emits one tick at a time, each timestamped with the
moment it was emitted, and holds the watermark at the next tick's time. The schedule starts at the
first real tick (not at launch: a runner may need a minute to start) and each tick comes
`tick_seconds` after the previous one was emitted, so missed ticks are skipped rather than fired
at once, and no two ticks are closer than a tick. The next tick's time is the watermark
estimator's state, which the runner keeps with the residual restriction. It stops after the
`duration`'s ticks (counted from the first real tick) or as soon as `stop_file` exists (the CLI
creates it on SIGINT/SIGTERM): the restriction is then claimed to its end, the watermark goes to
the end of time and every open window downstream fires. That is the clean stop the local runners
need, since they have no drain and `cancel()` discards buffered windows. Beam's own
`PeriodicImpulse` is not used because Prism 2.62 cannot decode its tuple-typed impulse element
(beam:coder:tuple:v1, apache/beam#32636) and because it has no stop flag; here the schedule travels
as a JSON string. Prism 2.62 also resumes a deferred restriction at once rather than at the time
asked for, so a wait of up to `MAX_SLEEP_SECONDS` is slept in `process` (looking for the stop file
meanwhile), and only a longer one is a deferral. A runner's dynamic split would run two copies of
the tick sequence, so the tracker only self-checkpoints.

`PollFeeds` fans each tick out to the feeds due at that tick (each feed has its own interval, a
multiple of the tick), keys the polls by feed URL and fetches each with a stateful DoFn that keeps
the feed's `ETag` / `Last-Modified` between polls, so an unchanged feed costs a 304. The polls of
one feed run one at a time in a worker (a lock per feed), a tick closer than the feed's interval to
its last poll (a replayed tick) polls nothing, no poll starts sooner than the interval after the
feed's last answer (a stage that runs behind reaches several ticks at once: it polls once), and
the validators of an older response never replace those of a newer one. Fetching and parsing are batch's own
(`transforms.read.fetched_to_outputs`), so a poll yields exactly what a batch read does: raw
entries, one `feed_fetches` row and, for a failed feed, a dead letter. Every output is timestamped
with the moment its fetch started: the streaming job windows on real fetch time.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms import userstate
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from transforms.committed import REFRESH_SECONDS, body_digest, fetch_millis, shared_entries, shared_versions
from transforms.feed_state import FeedSource
from transforms.fetch import FetchResult, FetchSettings, carry_credentials, fetch, make_session, redact_url
from transforms.parse import ParsedInput
from transforms.read import (
    DEAD_LETTERS,
    FETCHES,
    MAX_ENTRIES_PER_FEED,
    fetched_to_outputs,
    http_fields,
    ms_since,
    parsed_to_outputs,
)
from transforms.schema import Outcome, Record, SourceType

# An open-ended stream still needs a finite offset range; this one outlasts any deployment.
UNBOUNDED_TICKS = 2**62
MAX_SLEEP_SECONDS = 5.0  # a longer wait for the next tick is a deferral
STOP_CHECK_SECONDS = 0.5  # how often a waiting source looks for the stop file


@dataclass(frozen=True)
class PollSchedule:
    """How often ticks come and when they stop."""

    tick_seconds: float
    duration: float | None = None  # seconds of ticks from the first real one (`--duration`)
    stop_file: str | None = None  # no tick once this path exists (Ctrl-C, SIGTERM)


def total_ticks(schedule: PollSchedule) -> int:
    """How many ticks the schedule has: those of its `duration`, else practically unbounded."""
    if schedule.duration is None:
        return UNBOUNDED_TICKS
    return max(0, math.ceil(schedule.duration / schedule.tick_seconds))


def next_tick_due(
    held: Timestamp | None, last_emitted: float | None, tick_seconds: float, now: float
) -> float:
    """When the next tick is due: the time the watermark holds (a tick after the last emitted),
    at once for the first tick; never sooner than a tick after one this process emitted."""
    due = now if held is None or held <= MIN_TIMESTAMP else float(held)
    if last_emitted is not None:
        due = max(due, last_emitted + tick_seconds)
    return due


def poll_interval(feed: FeedSource, default: float) -> float:
    return float(feed.poll_interval) if feed.poll_interval else default


def ticks_per_poll(interval: float, tick_seconds: float) -> int:
    """A feed is polled every this many ticks (its interval rounded to whole ticks, at least one)."""
    return max(1, round(interval / tick_seconds))


def feeds_due(feeds: tuple[FeedSource, ...], index: int, tick_seconds: float, default: float) -> list[str]:
    """The feeds to poll at tick `index`: every feed at the first tick, then each on its interval."""
    return [
        feed.url for feed in feeds if index % ticks_per_poll(poll_interval(feed, default), tick_seconds) == 0
    ]


def tick_seconds_for(feeds: tuple[FeedSource, ...], default: float) -> float:
    """The tick: the shortest poll interval, so that no feed waits longer than it asked for."""
    return min((poll_interval(feed, default) for feed in feeds), default=default)


def stop_requested(stop_file: str | None) -> bool:
    return stop_file is not None and FileSystems.exists(stop_file)


def schedule_to_json(schedule: PollSchedule) -> str:
    return json.dumps(asdict(schedule), sort_keys=True)


def schedule_from_json(text: str) -> PollSchedule:
    return PollSchedule(**json.loads(text))


# --- the tick source ----------------------------------------------------------------------------


class _CheckpointOnlyTracker(OffsetRestrictionTracker):
    """An offset tracker that only self-checkpoints: a runner's dynamic split would double the ticks."""

    def try_split(self, fraction_of_remainder: float) -> Any:
        if fraction_of_remainder != 0:
            return None
        return super().try_split(fraction_of_remainder)


class _TickRestrictions(RestrictionProvider):
    """The schedule travels as the element (a JSON string), so the provider needs no state."""

    def initial_restriction(self, element: str) -> OffsetRange:
        return OffsetRange(0, total_ticks(schedule_from_json(element)))

    def create_tracker(self, restriction: OffsetRange) -> _CheckpointOnlyTracker:
        return _CheckpointOnlyTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return 8  # one small element at a time: nothing to balance

    def split(self, element: Any, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one sequence of ticks, never parallel copies

    def truncate(self, element: Any, restriction: OffsetRange) -> None:
        return None  # on a drain (Dataflow), stop ticking at once


# Beam reads DoFn parameters from argument defaults; module-level singletons keep that idiom lint-clean.
_TICK_RESTRICTION = beam.DoFn.RestrictionParam(_TickRestrictions())
_TICK_WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


# The last tick emitted per schedule in this process: a guard in case a runner hands back a
# residual without its watermark state (the tick would otherwise come at once).
_LAST_TICK: dict[str, float] = {}


class _TickFn(beam.DoFn):
    def __init__(self) -> None:
        self._ticks = Metrics.counter("poll", "ticks")

    @beam.DoFn.unbounded_per_element()  # type: ignore[untyped-decorator]
    def process(
        self,
        element: str,
        tracker: Any = _TICK_RESTRICTION,
        watermark: Any = _TICK_WATERMARK,
    ) -> Iterator[Any]:
        schedule = schedule_from_json(element)
        restriction = tracker.current_restriction()
        index = restriction.start
        due = next_tick_due(
            watermark.current_watermark(), _LAST_TICK.get(element), schedule.tick_seconds, time.time()
        )
        # Prism 2.62 resumes a deferred restriction at once rather than at the requested time, so a
        # short wait is slept here (checking for a stop), and only a long one is handed back as a
        # deferral. Either way each call emits one tick and returns, so each tick's polls are
        # committed in their own bundle.
        while not stop_requested(schedule.stop_file) and due > time.time():
            wait = due - time.time()
            if wait > MAX_SLEEP_SECONDS:
                watermark.set_watermark(Timestamp.of(due))
                tracker.defer_remainder(Duration.of(MAX_SLEEP_SECONDS))
                return
            time.sleep(min(wait, STOP_CHECK_SECONDS))
        if stop_requested(schedule.stop_file) or index >= restriction.stop:
            # Claiming past the end finishes the restriction: the watermark goes to the end of time
            # and every window downstream fires.
            tracker.try_claim(restriction.stop)
            return
        if not tracker.try_claim(index):
            return
        now = time.time()
        _LAST_TICK[element] = now
        self._ticks.inc()
        yield TimestampedValue(index, now)
        # The next tick comes a tick after this one was emitted, which is the promise the watermark
        # makes: nothing earlier will come. Ticks missed while the runner was busy are not caught up.
        watermark.set_watermark(Timestamp.of(now + schedule.tick_seconds))
        tracker.defer_remainder(Duration.of(0))


class GeneratePollTicks(beam.PTransform):
    """Pipeline start -> tick indexes (0, 1, 2, ...) timestamped at their scheduled time; unbounded."""

    def __init__(self, schedule: PollSchedule) -> None:
        super().__init__()
        self._schedule = schedule

    def expand(self, begin: Any) -> PCollection:
        schedule = schedule_to_json(self._schedule)
        return (
            begin
            | "Impulse" >> beam.Impulse()
            | "Schedule" >> beam.Map(lambda _: schedule).with_output_types(str)
            | "Tick" >> beam.ParDo(_TickFn()).with_output_types(int)
        )


# --- polling the feeds --------------------------------------------------------------------------


# One lock per feed URL in this process: polls of a feed never overlap, even when a runner runs a
# split-off bundle of the same key beside the first; and the tick each feed was last polled at.
_FEED_LOCKS: dict[str, threading.Lock] = {}
_FEED_LOCKS_LOCK = threading.Lock()
_LAST_POLLED: dict[str, float] = {}
_LAST_ANSWERED: dict[str, float] = {}  # when each feed's last poll in this process ended (epoch seconds)
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


class _PollFeedFn(beam.DoFn):
    """Fetch one feed per (url, tick); its validators and permanent redirect are kept in Beam state."""

    CONDITIONS = userstate.ReadModifyWriteStateSpec("conditions", StrUtf8Coder())
    _CONDITIONS_PARAM = beam.DoFn.StateParam(CONDITIONS)
    _TIMESTAMP_PARAM = beam.DoFn.TimestampParam

    def __init__(
        self,
        settings: FetchSettings,
        feeds: tuple[FeedSource, ...],
        default_interval: float,
        max_entries: int = MAX_ENTRIES_PER_FEED,
        output: str | None = None,
    ) -> None:
        self._settings = settings
        self._output = output
        self._feeds = {feed.url: feed for feed in feeds}
        self._default = default_interval
        self._max_entries = max_entries
        self._polls = Metrics.counter("poll", "feeds_polled")
        self._not_modified = Metrics.counter("poll", "not_modified")
        self._entries = Metrics.counter("poll", "entries")
        self._too_soon = Metrics.counter("poll", "ticks_too_soon")
        self._behind = Metrics.counter("poll", "ticks_behind")
        self._unchanged_bodies = Metrics.counter("poll", "unchanged_bodies")
        self._known_entries = Metrics.counter("poll", "known_entries")

    def setup(self) -> None:
        self._session = make_session(self._settings)
        self._entries_committed = shared_entries()
        self._versions = shared_versions(self._output) if self._output else None

    def teardown(self) -> None:
        self._session.close()

    def process(
        self, keyed: tuple[str, int], conditions: Any = _CONDITIONS_PARAM, tick: Any = _TIMESTAMP_PARAM
    ) -> Iterator[Any]:
        url = keyed[0]
        feed = self._feeds.get(url)
        interval = poll_interval(feed, self._default) if feed else self._default
        if self._versions is not None:  # notices a prune, which makes the known entries forgotten
            self._versions.refresh(max_age=REFRESH_SECONDS)
        with feed_lock(url):
            known = json.loads(conditions.read() or "{}")
            last = max(_LAST_POLLED.get(url, float("-inf")), known.get("tick_at", float("-inf")))
            if too_soon(float(tick), last if last > float("-inf") else None, interval):
                self._too_soon.inc()
                return
            answered = max(_LAST_ANSWERED.get(url, float("-inf")), known.get("answered_at", float("-inf")))
            wait = wait_before_poll(answered if answered > float("-inf") else None, interval, time.time())
            if wait is None:
                self._behind.inc()
                return
            time.sleep(wait)
            _LAST_POLLED[url] = float(tick)
            outputs, after = self._poll(url, known, feed)
            _LAST_ANSWERED[url] = after["answered_at"] = time.time()
            after["tick_at"] = float(tick)
            if after.get("fetched_at", 0) >= known.get("fetched_at", 0):  # never an older response's
                conditions.write(json.dumps(after))
        yield from outputs

    def _poll(
        self, url: str, known: dict[str, Any], feed: FeedSource | None
    ) -> tuple[list[Any], dict[str, Any]]:
        now = datetime.now(UTC)
        started_at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # whole ms: names the poll
        clock = time.monotonic()
        fetched = started_at.timestamp()
        self._polls.inc()
        # The validators go out only when everything the last full body held is committed: a 304
        # must not hide an entry that the runner lost on its way to the sink.
        conditional = self._entries_committed.body_committed(redact_url(url), known.get("digest"))
        try:
            moved = known.get("target")
            result = fetch(
                self._session,
                carry_credentials(moved, url) if moved else url,
                self._settings,
                etag=known.get("etag") if conditional else None,
                last_modified=known.get("last_modified") if conditional else None,
            )
            outputs = list(self._outputs(url, result, started_at, clock, feed))
        except Exception as error:  # fetch() and parsing never raise; a bug stays this poll's, as in batch
            message = redact_url(f"{type(error).__name__}: {error}")
            parsed = ParsedInput(Outcome.ERROR, error_type="read_crash", message=message)
            outputs = list(parsed_to_outputs(redact_url(url), SourceType.FEED, parsed, None, started_at, 0))
            return [_at(output, fetched) for output in outputs], dict(known)
        if result.not_modified:
            self._not_modified.inc()
        after = {**conditions_after(known, result), "fetched_at": fetched}
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


def conditions_after(known: dict[str, Any], result: FetchResult) -> dict[str, Any]:
    """What the next poll of a feed sends: the validators of its last 200, and where it moved for good."""
    after = dict(known)
    if result.permanent_redirect:
        after["target"] = result.permanent_redirect
    if result.ok and not result.not_modified:
        after["etag"], after["last_modified"] = result.etag, result.last_modified
    return after


class PollFeeds(beam.PTransform):
    """Tick indexes -> (raw entries, feed_fetches rows, dead letters), as `ReadSources` gives them."""

    def __init__(
        self,
        feeds: tuple[FeedSource, ...],
        tick_seconds: float,
        default_interval: float,
        settings: FetchSettings,
        max_entries_per_feed: int = MAX_ENTRIES_PER_FEED,
        output: str | None = None,
    ) -> None:
        super().__init__()
        if not feeds:
            raise ValueError("PollFeeds needs at least one feed")
        self._output = output  # whose committed version index the polls watch for a prune
        self._feeds = feeds
        self._tick_seconds = tick_seconds
        self._default = default_interval
        self._settings = settings
        self._max_entries = max_entries_per_feed

    def expand(self, ticks: PCollection) -> tuple[PCollection, PCollection, PCollection]:
        feeds, tick_seconds, default = self._feeds, self._tick_seconds, self._default
        polled = (
            ticks
            | "FeedsDue"
            >> beam.FlatMap(
                lambda index: [(url, index) for url in feeds_due(feeds, index, tick_seconds, default)]
            ).with_output_types(tuple[str, int])
            # Keyed by feed URL: each feed's conditions are its own state, and polls spread over workers.
            | "FetchFeed"
            >> beam.ParDo(
                _PollFeedFn(self._settings, feeds, default, self._max_entries, self._output)
            ).with_outputs(FETCHES, DEAD_LETTERS, main="entries")
        )
        return polled.entries, polled[FETCHES], polled[DEAD_LETTERS]


# --- one log line per poll cycle -----------------------------------------------------------------

CYCLE_COUNTS = (
    "feeds_polled",
    "not_modified",
    "new",
    "duplicates",
    "late",
    "dead_letters",
    "files_written",
    "latency_ms_max",  # keys ending in _max combine by max, the others by sum
)

log = logging.getLogger("newsbeam.stream")


def fetch_row_counts(row: Record) -> dict[str, int]:
    """A poll's counts: a 304 or an unchanged body is `not_modified`; known committed entries, duplicates."""
    return {
        "feeds_polled": 1,
        "not_modified": int(row.get("outcome") == str(Outcome.NOT_MODIFIED)),
        "duplicates": row.get("already_stored") or 0,
    }


def written_file_counts(written: dict[str, Any]) -> dict[str, int]:
    """A pane commit's counts; the revisions its commit found stored already are duplicates too."""
    articles = written.get("dataset") == "articles"
    return {
        "files_written": int(written.get("path") is not None),
        "late": written.get("late_rows", 0) if articles else 0,
        "duplicates": written.get("already_stored", 0) if articles else 0,
        "latency_ms_max": written.get("latency_ms", 0) if articles else 0,
    }


class SumCounts(beam.CombineFn):
    """Adds up count dicts, key by key."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, accumulator: dict[str, int], element: dict[str, int]) -> dict[str, int]:
        for key, value in element.items():
            if key.endswith("_max"):
                accumulator[key] = max(accumulator.get(key, 0), value)
            else:
                accumulator[key] = accumulator.get(key, 0) + value
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        merged: dict[str, int] = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: dict[str, int]) -> dict[str, int]:
        return {key: accumulator.get(key, 0) for key in CYCLE_COUNTS}


def cycle_line(cycle_start: float, counts: dict[str, int]) -> str:
    at = datetime.fromtimestamp(cycle_start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"poll cycle {at}: feeds polled {counts['feeds_polled']}, 304s {counts['not_modified']}, "
        f"new entries {counts['new']}, duplicates {counts['duplicates']}, late {counts['late']}, "
        f"dead letters {counts['dead_letters']}, files written {counts['files_written']}, "
        f"latency max {counts['latency_ms_max'] / 1000:.1f}s"
    )


class _LogCycleFn(beam.DoFn):
    _WINDOW_PARAM = beam.DoFn.WindowParam

    def process(self, counts: dict[str, int], window: Any = _WINDOW_PARAM) -> Iterator[str]:
        line = cycle_line(float(window.start), counts)
        log.info(line)
        yield line


class LogPollCycles(beam.PTransform):
    """(fetch rows, new articles, duplicates, dead letters, written files) -> one log line per poll cycle.

    A cycle is a fixed window of one tick on fetch time; files are counted in the cycle in which
    their window ended.
    """

    def __init__(self, tick_seconds: float) -> None:
        super().__init__()
        self._tick_seconds = tick_seconds

    def expand(self, streams: tuple[PCollection, ...]) -> PCollection:
        fetches, new, duplicates, dead_letters, files = streams
        counts = (
            fetches | "CountPolls" >> beam.Map(fetch_row_counts),
            new | "CountNew" >> beam.Map(lambda _: {"new": 1}),
            duplicates | "CountDuplicates" >> beam.Map(lambda _: {"duplicates": 1}),
            dead_letters | "CountDeadLetters" >> beam.Map(lambda _: {"dead_letters": 1}),
            files | "CountFiles" >> beam.Map(written_file_counts),
        )
        return (
            counts
            | "AllCounts" >> beam.Flatten()
            | "PerPollCycle" >> beam.WindowInto(FixedWindows(self._tick_seconds))
            | "SumPerCycle" >> beam.CombineGlobally(SumCounts()).without_defaults()
            | "LogCycle" >> beam.ParDo(_LogCycleFn())
        )
