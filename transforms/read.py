"""ReadSources: every input (feed URL, feed file, seed file) to raw entries, a fetch row and dead letters.

Inputs arrive as a few patterns (paths, globs, folders, URLs); they are expanded inside the
pipeline, one element per file or URL, and grouped (files in shards of about equal bytes, feeds by
host) so that reading runs in parallel. Each input gives exactly one `feed_fetches` row with a
named outcome, and a dead letter when it fails: a broken feed, an HTTP error, a timeout or
undecodable bytes never stop the run.
"""

from __future__ import annotations

import heapq
import os
import queue
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToList
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.feed_state import (
    FeedSource,
    FeedState,
    StatePolicy,
    load_states,
    poll_decision,
    rss_ttl_seconds,
    state_after,
)
from transforms.fetch import FetchResult, FetchSettings, error_class, fetch, make_session
from transforms.parse import ParsedInput, is_http_url, parse_input, parse_seed_file
from transforms.schema import Outcome, Record, SourceType, Stage, dead_letter

FETCHES = "fetches"
DEAD_LETTERS = "dead_letters"
FEED_STATES = "feed_states"

# What a folder given as input contributes: seed files and feed files (the benchmark corpus
# has feeds without an extension), never READMEs or hidden files.
SEED_EXTENSIONS = (".txt",)
FEED_EXTENSIONS = (".xml", ".rss", ".atom", ".rdf", ".json", ".feed", ".cdf")
MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ReadSettings:
    fetch: FetchSettings = field(default_factory=FetchSettings)
    max_file_bytes: int = MAX_FILE_BYTES
    # Feeds over HTTP: the listed feeds' hints by URL, the per-feed state file (None: no state,
    # every feed is fetched unconditionally) and whether to ignore ttl and failure backoff.
    feeds: Mapping[str, FeedSource] = field(default_factory=dict)
    state_path: str | None = None
    state_policy: StatePolicy = field(default_factory=StatePolicy)
    force: bool = False


def source_type_of(path: str) -> SourceType:
    return SourceType.SEED_FILE if path.lower().endswith(SEED_EXTENSIONS) else SourceType.FEED


def _wanted_in_folder(path: str) -> bool:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if name.startswith((".", "_")):
        return False
    lowered = name.lower()
    return lowered.endswith(SEED_EXTENSIONS + FEED_EXTENSIONS) or "." not in name


def expand_pattern(pattern: str) -> Iterator[str]:
    """The files (or the URL) an input pattern names, in a stable order."""
    if is_http_url(pattern):
        yield pattern
        return
    is_glob = any(ch in pattern for ch in "*?[")
    if not is_glob and FileSystems.exists(pattern) and not _is_folder(pattern):
        yield pattern
        return
    query = pattern if is_glob else FileSystems.join(pattern.rstrip("/"), "**")
    paths = sorted(_match(query))
    if not is_glob:
        paths = [p for p in paths if _wanted_in_folder(p)]
    if not paths:
        raise FileNotFoundError(f"no input matches {pattern}")
    yield from paths


def _match(query: str) -> list[str]:
    if "://" in query:
        return [m.path for m in FileSystems.match([query])[0].metadata_list]
    import glob

    # Beam's local match silently skips what it cannot stat (a dangling symlink, a file removed
    # while listing), and such an input would vanish without its fetch row; Python's glob lists
    # it, and reading it then fails into a dead letter.
    return [path for path in glob.glob(query, recursive=True) if not os.path.isdir(path)]


def _is_folder(path: str) -> bool:
    if "://" in path:
        return path.endswith("/")
    return os.path.isdir(path)


def fetch_row(source: str, source_type: str, started_at: datetime, **values: Any) -> Record:
    row: Record = {
        "source": source,
        "source_type": str(source_type),
        "started_at": started_at,
        "entries": 0,
    }
    row.update(values)
    return row


def parsed_to_outputs(
    source: str,
    source_type: SourceType,
    parsed: ParsedInput,
    body: bytes | None,
    started_at: datetime,
    elapsed_ms: int,
    **http: Any,
) -> Iterator[Any]:
    """The entries, the fetch row and (for a failed input) the dead letter of one parsed input."""
    yield from parsed.entries
    yield beam.pvalue.TaggedOutput(
        FETCHES,
        fetch_row(
            source,
            source_type,
            started_at,
            outcome=str(parsed.outcome),
            feed_format=parsed.feed_format,
            feed_title=parsed.feed_title,
            error_type=parsed.error_type,
            message=parsed.message,
            bytes=len(body) if body is not None else None,
            entries=len(parsed.entries),
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


class _ExpandPatternFn(beam.DoFn):
    def process(self, pattern: str) -> Iterator[Any]:
        try:
            yield from expand_pattern(pattern)
        except (FileNotFoundError, OSError, ValueError) as error:
            started = datetime.now(UTC)
            message = str(error)
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


def read_file(path: str, settings: ReadSettings, started_at: datetime, clock: float) -> Iterator[Any]:
    """The outputs of one feed or seed file (or object-store URL): what `parsed_to_outputs` gives."""
    source_type = source_type_of(path)
    try:
        # Read one byte past the cap instead of asking for the size first: one call less per file on
        # object stores, and a file that grows after its listing is still capped.
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            body = stream.read(settings.max_file_bytes + 1)
        if len(body) > settings.max_file_bytes:
            raise ValueError(f"the file is larger than the {settings.max_file_bytes}-byte cap")
    except Exception as error:
        parsed = ParsedInput(
            Outcome.ERROR, error_type="unreadable", message=f"{type(error).__name__}: {error}"
        )
        yield from parsed_to_outputs(path, source_type, parsed, None, started_at, ms_since(clock))
        return
    seed = source_type == SourceType.SEED_FILE
    parsed = parse_seed_file(body, path) if seed else parse_input(body, path)
    yield from parsed_to_outputs(path, source_type, parsed, body, started_at, ms_since(clock))


def fetched_to_outputs(
    url: str,
    result: FetchResult,
    started_at: datetime,
    clock: float,
    *,
    feed: FeedSource | None = None,
) -> Iterator[Any]:
    """The entries, fetch row and dead letter of one HTTP fetch (shared by batch reads and stream polls).

    `url` is the feed as listed (the articles' `source`); `result.url` is what was requested (the
    listed URL, or where a permanent redirect moved it). `feed` brings the listed name and
    language, used when the feed states none.
    """
    http = http_fields(url, result)
    if result.not_modified:
        parsed = ParsedInput(Outcome.NOT_MODIFIED)
    elif not result.ok or result.body is None:
        parsed = ParsedInput(Outcome.ERROR, error_type=result.error_type or "no_body", message=result.message)
    else:
        parsed = parse_input(
            result.body, url, content_type=result.content_type, base_url=result.final_url or url
        )
        if parsed.outcome in (Outcome.ERROR, Outcome.NOT_A_FEED):
            http["error_class"] = error_class(parsed.error_type)
        if feed is not None:
            _apply_hints(parsed, feed)
    yield from parsed_to_outputs(
        url, SourceType.FEED, parsed, result.body, started_at, ms_since(clock), **http
    )


def http_fields(url: str, result: FetchResult) -> dict[str, Any]:
    """The `feed_fetches` columns that describe one HTTP fetch."""
    return {
        "url": result.url or url,
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
            url,
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


# Reads are grouped by key before they run: files in shards of about equal bytes, feed URLs under
# their host's key (the politeness limit). One DoFn reads both, so that the entries of files and
# feeds come out of a single step, fused with the stages after it: a Flatten of two readers would
# make the in-process runner hold every raw entry in memory between them. The runners hand whole
# keys to workers (the in-process one deals them out in turn), so equal shards keep the workers
# equally busy; a key per file left one worker idle for a tenth of the run on the benchmark corpus.
FILE_KEY = "file"
HOST_KEY = "host"
FILES = "files"
MIN_FILE_SHARDS = 64  # enough keys for the workers of a large cluster
FILES_PER_SHARD = 16


def file_size(path: str) -> int:
    """A file's size in bytes; 0 when it cannot be had (reading the file then fails into a dead letter)."""
    try:
        if "://" not in path:
            return os.path.getsize(path)
        return int(FileSystems.match([path])[0].metadata_list[0].size_in_bytes)
    except Exception:
        return 0


def balanced_shards(files: Iterable[tuple[str, int]]) -> list[list[str]]:
    """Paths in shards of about equal total size: largest first, each into the lightest shard."""
    ordered = sorted(files, key=lambda item: (-item[1], item[0]))
    count = min(len(ordered), max(MIN_FILE_SHARDS, len(ordered) // FILES_PER_SHARD))
    shards: list[list[str]] = [[] for _ in range(count)]
    lightest = [(0, index) for index in range(count)]
    for path, size in ordered:
        load, index = heapq.heappop(lightest)
        shards[index].append(path)
        heapq.heappush(lightest, (load + size, index))
    return shards


def _keyed_shards(files: list[tuple[str, int]]) -> Iterator[tuple[tuple[str, str], tuple[str, None]]]:
    for index, shard in enumerate(balanced_shards(files)):
        for path in shard:
            yield (FILE_KEY, str(index)), (path, None)


class _PlanReadsFn(beam.DoFn):
    """Input -> a file (on `files`, with its size), a feed ((host key), (url, stored state)) to fetch, or
    a `skipped` row when the feed is not due."""

    def __init__(self, settings: ReadSettings) -> None:
        self._settings = settings
        self._skipped = Metrics.counter("read", "feeds_skipped")

    def setup(self) -> None:
        self._states = load_states(self._settings.state_path)

    def process(self, source: str) -> Iterator[Any]:
        if not is_http_url(source):
            yield beam.pvalue.TaggedOutput(FILES, (source, file_size(source)))
            return
        now = datetime.now(UTC)
        state = self._states.get(source)
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
                    yield beam.pvalue.TaggedOutput(output.tag, _global(output.value))
                else:
                    yield _global(output)
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
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        feed = self._settings.feeds.get(url)
        try:
            result = fetch(
                self._session,
                state.target if state else url,
                self._settings.fetch,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
            )
            outputs = list(fetched_to_outputs(url, result, started_at, clock, feed=feed))
        except Exception as error:  # fetch() and parsing never raise; if a bug does, it stays this feed's
            result = FetchResult(url=url, error_type="read_crash", message=f"{type(error).__name__}: {error}")
            parsed = ParsedInput(Outcome.ERROR, error_type="read_crash", message=result.message)
            outputs = list(parsed_to_outputs(url, SourceType.FEED, parsed, None, started_at, ms_since(clock)))
        row = next(o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == FETCHES)
        fresh = [s for s in (result.max_age, rss_ttl_seconds(result.body)) if s is not None]
        outputs.append(
            beam.pvalue.TaggedOutput(
                FEED_STATES,
                state_after(
                    state,
                    url,
                    started_at,
                    outcome=row["outcome"],
                    status=result.status,
                    error_type=row.get("error_type"),
                    etag=result.etag,
                    last_modified=result.last_modified,
                    permanent_redirect=result.permanent_redirect,
                    fresh_seconds=max(fresh) if fresh else None,
                    poll_interval=feed.poll_interval if feed else None,
                    policy=self._settings.state_policy,
                ),
            )
        )
        return outputs


def _global(value: Any) -> WindowedValue:
    return WindowedValue(value, MAX_TIMESTAMP, (GlobalWindow(),))


class ReadSources(beam.PTransform):
    """Input patterns -> (raw entries, feed_fetches rows, dead letters).

    Files are read in shards of about equal bytes; feed URLs are grouped by host and fetched by
    `_ReadGroupFn` under the per-host limit. The feeds' next states come out on
    `self.feed_states` (set by `expand`) for `WriteFeedState` to store after the commit.
    """

    def __init__(self, settings: ReadSettings | None = None) -> None:
        super().__init__()
        self._settings = settings or ReadSettings()
        self.feed_states: PCollection | None = None

    def expand(self, patterns: PCollection) -> tuple[PCollection, PCollection, PCollection]:
        expanded = patterns | "ExpandPatterns" >> beam.ParDo(_ExpandPatternFn()).with_outputs(
            FETCHES, DEAD_LETTERS, main="sources"
        )
        planned = (
            expanded.sources
            | "OneElementPerInput" >> beam.Distinct()
            | "PlanReads"
            >> beam.ParDo(_PlanReadsFn(self._settings)).with_outputs(FILES, FETCHES, FEED_STATES, main="due")
        )
        file_shards = (
            planned[FILES] | "AllFiles" >> ToList() | "ShardFilesBySize" >> beam.FlatMap(_keyed_shards)
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
        self.feed_states = (planned[FEED_STATES], read[FEED_STATES]) | "AllFeedStates" >> beam.Flatten()
        entries = read.entries
        fetch_rows = (expanded[FETCHES], planned[FETCHES], read[FETCHES])
        fetches = fetch_rows | "AllFetchRows" >> beam.Flatten()
        failures = (expanded[DEAD_LETTERS], read[DEAD_LETTERS])
        dead_letters = failures | "AllReadDeadLetters" >> beam.Flatten()
        return entries, fetches, dead_letters
