"""LogPollCycles: one log line per poll cycle of the streaming job, from what the cycle's steps gave."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import FixedWindows

from transforms.schema import Outcome, Record

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
        "feeds_polled": int(row.get("outcome") != str(Outcome.SKIPPED)),
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

    def __init__(self) -> None:
        # Only so that `SumCounts()` is a typed call. Beam's `__init__` is called by name: mypy exempts
        # calls into Beam (`untyped_calls_exclude`) but not `super()` calls, which it cannot name.
        beam.CombineFn.__init__(self)

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

    def __init__(self) -> None:
        beam.DoFn.__init__(self)  # by name, as in `SumCounts`

    def process(self, counts: dict[str, int], window: Any = _WINDOW_PARAM) -> Iterator[str]:
        line = cycle_line(float(window.start), counts)
        log.info(line)
        yield line


class LogPollCycles(beam.PTransform[Any, Any]):
    """(fetch rows, new articles, duplicates, dead letters, written files) -> one log line per poll cycle.

    A cycle is a fixed window of one tick on fetch time; files are counted in the cycle in which
    their window ended.
    """

    def __init__(self, tick_seconds: float) -> None:
        super().__init__()
        self._tick_seconds = tick_seconds

    def expand(self, streams: tuple[PCollection[Any], ...]) -> PCollection[Any]:
        fetches, new, duplicates, dead_letters, files = streams
        counts = (
            fetches | "CountPolls" >> beam.Map(fetch_row_counts),
            new | "CountNew" >> beam.Map(lambda _: {"new": 1}),
            duplicates | "CountDuplicates" >> beam.Map(lambda _: {"duplicates": 1}),
            dead_letters | "CountDeadLetters" >> beam.Map(lambda _: {"dead_letters": 1}),
            files | "CountFiles" >> beam.Map(written_file_counts),
        )
        result: PCollection[Any] = (
            counts
            | "AllCounts" >> beam.Flatten()
            | "PerPollCycle" >> beam.WindowInto(FixedWindows(self._tick_seconds))
            | "SumPerCycle" >> beam.CombineGlobally(SumCounts()).without_defaults()
            | "LogCycle" >> beam.ParDo(_LogCycleFn())
        )
        return result
