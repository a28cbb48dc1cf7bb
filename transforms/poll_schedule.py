"""GeneratePollTicks: the unbounded source of the streaming job, and the poll schedule.

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
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from transforms.feed_state import (
    FeedSource,
)

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


def feed_shards(feeds: tuple[FeedSource, ...], per_shard: int) -> tuple[tuple[str, ...], ...]:
    """The feed URLs in shards of at most `per_shard` (`fetch.max_concurrent`), dealt in turn.

    A shard is one element per tick whose feeds are fetched at once; a worker fetches at most
    `per_shard` feeds at once anyway, so bigger shards would only wait for its threads.
    """
    count = max(1, math.ceil(len(feeds) / max(1, per_shard)))
    return tuple(tuple(feed.url for feed in feeds[number::count]) for number in range(count))


def shards_due(
    shards: tuple[tuple[str, ...], ...],
    feeds: tuple[FeedSource, ...],
    index: int,
    tick_seconds: float,
    default: float,
) -> list[tuple[str, int]]:
    """(shard key, tick) for each shard with a feed due at tick `index`."""
    due = set(feeds_due(feeds, index, tick_seconds, default))
    return [(str(number), index) for number, urls in enumerate(shards) if due.intersection(urls)]


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
        # By name, not `super()`: mypy exempts calls into Beam only when it can name them.
        return OffsetRestrictionTracker.try_split(self, fraction_of_remainder)


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


class GeneratePollTicks(beam.PTransform[Any, Any]):
    """Pipeline start -> tick indexes (0, 1, 2, ...) timestamped at their scheduled time; unbounded."""

    def __init__(self, schedule: PollSchedule) -> None:
        super().__init__()
        self._schedule = schedule

    def expand(self, begin: Any) -> PCollection[Any]:
        schedule = schedule_to_json(self._schedule)
        result: PCollection[Any] = (
            begin
            | "Impulse" >> beam.Impulse()
            | "Schedule" >> beam.Map(lambda _: schedule).with_output_types(str)
            | "Tick" >> beam.ParDo(_TickFn()).with_output_types(int)
        )
        return result
