"""ReadSources: every input (feed URL, feed file, seed file) to raw entries, fetch rows and dead letters.

Inputs arrive as a few patterns (paths, globs, folders, URLs); they are expanded inside the
pipeline, one element per file or URL (`transforms.read_files`), and grouped (files in shards of
about equal bytes, feeds by host) so that reading runs in parallel. The retriever of an input is
chosen by its URL scheme through a small registry (`RETRIEVERS`): http(s) feeds are fetched under
the per-host limit (`transforms.read_feeds`), everything else is a file, local or on an object
store. Each input gives exactly one `feed_fetches` row with a named outcome (a page whose feeds
are discovered gives one more row per discovered feed), and a dead letter when it fails: a broken
feed, an HTTP error, a timeout or undecodable bytes never stop the run.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToList
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms.credentials import redact_url
from transforms.feed_state import FeedState, load_states, poll_decision
from transforms.fetch import make_session
from transforms.read_feeds import read_feed
from transforms.read_files import (
    FILE_KEY,
    FILES,
    HOST_KEY,
    expand_pattern,
    file_size,
    keyed_shards,
    read_file,
)
from transforms.read_files import pattern_as_text as pattern_as_text
from transforms.read_outputs import DEAD_LETTERS, FEED_STATES, FETCHES, fetch_row, host_key, skipped_outputs
from transforms.read_settings import MAX_ENTRIES_PER_FEED as MAX_ENTRIES_PER_FEED
from transforms.read_settings import ReadSettings as ReadSettings
from transforms.schema import Outcome, SourceType, Stage, dead_letter

# Retrievers by URL scheme (lemon24/reader's shape): the key a source is grouped under before it
# is read. A scheme not listed (none: a local path; gs, s3, ...: an object store) is a file.
RETRIEVERS: dict[str, str] = {"http": HOST_KEY, "https": HOST_KEY}
DEFAULT_RETRIEVER = FILE_KEY


def retriever_for(source: str) -> str:
    try:
        scheme = urlsplit(source).scheme.lower()
    except ValueError:
        return DEFAULT_RETRIEVER
    return RETRIEVERS.get(scheme, DEFAULT_RETRIEVER)


class ReadOutputs(NamedTuple):
    """What `ReadSources` gives: the raw entries, one fetch row per input, dead letters, feed states.

    The fetch rows come in the parts their steps make them (patterns expanded, reads planned, reads
    done), not flattened: every step applied to a Flatten of them runs as one more stage of a local
    runner, which sends every row to a worker and back after the read (see `CountPerSource`).
    """

    entries: PCollection[Any]
    fetches: tuple[PCollection[Any], ...]
    dead_letters: PCollection[Any]
    feed_states: PCollection[Any]  # each fetched feed's next state, for `WriteFeedState` after the commit


class _ExpandPatternFn(beam.DoFn):
    def __init__(self) -> None:
        beam.DoFn.__init__(self)  # by name: see `poll_cycles.SumCounts`

    def process(self, pattern: str) -> Iterator[Any]:
        try:
            yield from expand_pattern(pattern)
        except (OSError, ValueError, RecursionError) as error:  # RecursionError: a folder tree too deep
            started = datetime.now(UTC)
            message, pattern = redact_url(str(error)), redact_url(pattern)
            yield beam.pvalue.TaggedOutput(
                FETCHES,
                fetch_row(
                    pattern,
                    SourceType.FEED,
                    started,
                    outcome=str(Outcome.ERROR),
                    error_type="no_match",
                    message=message,
                ),
            )
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, dead_letter(Stage.READ, "no_match", message, pattern, SourceType.FEED)
            )


class _PlanReadsFn(beam.DoFn):
    """Input -> a file (on `files`, with its size), a feed ((host key), (url, stored state)) to fetch, or
    a `skipped` row when the feed is not due."""

    def __init__(self, settings: ReadSettings) -> None:
        self._settings = settings
        self._skipped = Metrics.counter("read", "feeds_skipped")

    def setup(self) -> None:
        self._states = load_states(self._settings.state_path)

    def process(self, source: str) -> Iterator[Any]:
        if retriever_for(source) == FILE_KEY:
            yield beam.pvalue.TaggedOutput(FILES, (source, file_size(source)))
            return
        now = datetime.now(UTC)
        state = self._states.get(redact_url(source))  # stored under the URL as recorded
        reason = poll_decision(state, now, force=self._settings.force)
        if state is not None and reason is not None:
            self._skipped.inc()
            yield from skipped_outputs(source, state, reason, now)
            return
        yield (HOST_KEY, host_key(state.target if state else source)), (source, state)


class _ReadGroupFn(beam.DoFn):
    """(key, inputs) -> what `read_file` or `fetched_to_outputs` gives, plus each feed's next state.

    A file is read and parsed right away. All feeds of one host arrive as one element (grouped by
    host), so at most `max_per_host` requests go to a host at a time however many workers run: each
    host's feeds are split into that many lanes fetched one after another. The lanes of every host
    in the bundle share one pool of `max_concurrent` threads per worker. Finished feeds pass through
    a bounded queue, so fetching waits for the bundle to emit what it has: memory stays bounded.
    """

    def __init__(self, settings: ReadSettings) -> None:
        self._settings = settings
        self._inputs = Metrics.counter("read", "inputs")
        self._entries = Metrics.counter("read", "entries")
        self._not_modified = Metrics.counter("read", "feeds_not_modified")
        self._failed = Metrics.counter("read", "feeds_failed")

    def setup(self) -> None:
        workers = max(1, self._settings.fetch.max_concurrent)
        self._session = make_session(self._settings.fetch, pool_size=workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="newsbeam-fetch")

    def teardown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._session.close()

    def start_bundle(self) -> None:
        self._done: queue.Queue[list[Any]] = queue.Queue(
            maxsize=2 * max(1, self._settings.fetch.max_concurrent)
        )
        self._lanes: list[Future[None]] = []

    def process(
        self, element: tuple[tuple[str, str], Iterable[tuple[str, FeedState | None]]]
    ) -> Iterator[Any]:
        (kind, _name), inputs = element
        plans = list(inputs)
        if kind == FILE_KEY:
            for path, _state in plans:
                yield from self._count(
                    list(read_file(path, self._settings, datetime.now(UTC), time.monotonic()))
                )
            return
        lanes = max(1, min(self._settings.fetch.max_per_host, len(plans)))
        for lane in range(lanes):
            self._lanes.append(self._pool.submit(self._run_lane, plans[lane::lanes], self._done))
        while True:
            try:
                yield from self._count(self._done.get_nowait())
            except queue.Empty:
                return

    def finish_bundle(self) -> Iterator[Any]:
        while True:
            finished = all(lane.done() for lane in self._lanes)
            try:
                outputs = self._done.get(timeout=0.05)
            except queue.Empty:
                if finished:
                    break
                continue
            for output in self._count(outputs):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(output.tag, at_end_of_global_window(output.value))
                else:
                    yield at_end_of_global_window(output)
        for lane in self._lanes:
            lane.result()  # a lane never raises (see _fetch_one); if it did, fail loudly, drop nothing

    def _count(self, outputs: list[Any]) -> list[Any]:
        self._inputs.inc()
        for output in outputs:
            if isinstance(output, dict) and "ordinal" in output:
                self._entries.inc()
            elif isinstance(output, beam.pvalue.TaggedOutput) and output.tag == FETCHES:
                if output.value["outcome"] == Outcome.NOT_MODIFIED:
                    self._not_modified.inc()
                elif output.value["outcome"] in (Outcome.ERROR, Outcome.NOT_A_FEED):
                    self._failed.inc()
        return outputs

    def _run_lane(self, plans: list[tuple[str, FeedState | None]], done: queue.Queue[list[Any]]) -> None:
        # `done` is this bundle's queue: a lane left over from a failed bundle cannot leak into the next.
        for url, state in plans:
            done.put(self._fetch_one(url, state))

    def _fetch_one(self, url: str, state: FeedState | None) -> list[Any]:
        return read_feed(self._session, url, state, self._settings)


def at_end_of_global_window(value: Any) -> WindowedValue:
    """`value` in the global window at its end, for outputs of `finish_bundle`.

    Not at MAX_TIMESTAMP: the global window ends a day before that, so a runner that drops late data
    (Prism) drops elements stamped MAX_TIMESTAMP at the next grouping.
    """
    return cast(WindowedValue, GlobalWindows.windowed_value_at_end_of_window(value))


# The one type of both inputs of the `GroupByHost` Flatten: ((kind, host or shard), (input, state)).
# Both must carry the same coder as the Flatten's output, or Prism, which rewrites the inputs' coder
# to the output's by coder id, corrupts every collection sharing the generic pickled coder.
KeyedInput = tuple[tuple[str, str], Any]


class ReadSources(beam.PTransform[Any, Any]):
    """Input patterns -> `ReadOutputs` (raw entries, feed_fetches rows, dead letters, feed states).

    Files are read in shards of about equal bytes; feed URLs are grouped by host and fetched by
    `_ReadGroupFn` under the per-host limit. The feeds' next states are for `WriteFeedState` to
    store after the commit.
    """

    def __init__(self, settings: ReadSettings | None = None) -> None:
        super().__init__()
        self._settings = settings or ReadSettings()

    def expand(self, patterns: PCollection[Any]) -> ReadOutputs:
        expanded = patterns | "ExpandPatterns" >> beam.ParDo(_ExpandPatternFn()).with_outputs(
            FETCHES, DEAD_LETTERS, main="sources"
        )
        planned = (
            expanded.sources
            | "OneElementPerInput" >> beam.Distinct()
            | "PlanReads"
            >> beam.ParDo(_PlanReadsFn(self._settings))
            .with_output_types(KeyedInput)
            .with_outputs(FILES, FETCHES, FEED_STATES, main="due")
        )
        file_shards = (
            planned[FILES]
            | "AllFiles" >> ToList()
            | "ShardFilesBySize" >> beam.FlatMap(keyed_shards).with_output_types(KeyedInput)
        )
        # The group also redistributes: file shards and hosts spread over the workers.
        read = (
            (planned.due, file_shards)
            | "FilesAndFeeds" >> beam.Flatten()
            | "GroupByHost" >> beam.GroupByKey()
            | "ReadAndParse"
            >> beam.ParDo(_ReadGroupFn(self._settings)).with_outputs(
                FETCHES, DEAD_LETTERS, FEED_STATES, main="entries"
            )
        )
        feed_states = (planned[FEED_STATES], read[FEED_STATES]) | "AllFeedStates" >> beam.Flatten()
        entries = read.entries
        fetches = (expanded[FETCHES], planned[FETCHES], read[FETCHES])
        failures = (expanded[DEAD_LETTERS], read[DEAD_LETTERS])
        dead_letters = failures | "AllReadDeadLetters" >> beam.Flatten()
        return ReadOutputs(entries, fetches, dead_letters, feed_states)
