"""ReadSources: every input (feed URL, feed file, seed file) to raw entries, a fetch row and dead letters.

Inputs arrive as a few patterns (paths, globs, folders, URLs); they are expanded inside the
pipeline, one element per file or URL, and grouped (files in shards of about equal bytes, feeds by
host) so that reading runs in parallel. Each input gives exactly one `feed_fetches` row with a
named outcome, and a dead letter when it fails: a broken feed, an HTTP error, a timeout or
undecodable bytes never stop the run. A feed URL is recorded (as `source`, in the fetch row, the
dead letter and the feed state) redacted: credentials in it are used for the request only.

Local patterns are expanded by a walk that always ends: symlinks are followed, but each folder
is entered once (by device and inode), so links that loop cannot make it run for ever. A path
that is no regular file (a FIFO, a socket, a device) is never opened for reading, where it could
block for ever: it gets a `skipped` row saying what it is. A file name that is not UTF-8 travels
as text with each undecodable byte written `\\xNN` (`path_as_text`), the form every dataset shows;
the file is opened under its real name (`path_from_text`).
"""

from __future__ import annotations

import fnmatch
import glob
import heapq
import os
import queue
import re
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToList
from apache_beam.transforms.window import GlobalWindows
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
from transforms.fetch import (
    FetchResult,
    FetchSettings,
    carry_credentials,
    error_class,
    fetch,
    make_session,
    redact_url,
    split_credentials,
)
from transforms.io.paths import escape_pattern
from transforms.parse import (
    TOO_MANY_ENTRIES,
    ParsedInput,
    RawEntry,
    is_http_url,
    parse_input,
    parse_seed_file,
)
from transforms.schema import (
    SOURCE_KEY,
    Outcome,
    Record,
    SourceType,
    Stage,
    dead_letter,
    escaped_text,
    valid_text,
)

FETCHES = "fetches"
DEAD_LETTERS = "dead_letters"
FEED_STATES = "feed_states"

# What a folder given as input contributes: seed files and feed files (the benchmark corpus
# has feeds without an extension), never READMEs or hidden files.
SEED_EXTENSIONS = (".txt",)
FEED_EXTENSIONS = (".xml", ".rss", ".atom", ".rdf", ".json", ".feed", ".cdf")
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


def source_type_of(path: str) -> SourceType:
    return SourceType.SEED_FILE if path.lower().endswith(SEED_EXTENSIONS) else SourceType.FEED


def _wanted_in_folder(path: str) -> bool:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if name.startswith((".", "_")):
        return False
    lowered = name.lower()
    return lowered.endswith(SEED_EXTENSIONS + FEED_EXTENSIONS) or "." not in name


# --- file names as text ---------------------------------------------------------------------------
#
# Linux file names are bytes; Python hands out the undecodable ones with lone surrogates
# (surrogateescape), which Beam's coders and Arrow reject. Inside the pipeline a local path is text
# in which each undecodable byte is written `\xNN` (Python's backslashreplace) and a backslash that
# would read as such an escape is written `\x5c`, so the text maps back to exactly one name.
# Valid UTF-8 names (nearly all) are their own text.

_BYTE_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_LOOKS_ESCAPED = re.compile(rb"\\(?=x[0-9a-fA-F]{2})")


def path_as_text(path: str) -> str:
    """A local path (as `os` gives it) as valid UTF-8 text: the form `source` shows."""
    raw = os.fsencode(path)
    if b"\\x" in raw:
        raw = _LOOKS_ESCAPED.sub(rb"\\x5c", raw)
    return raw.decode("utf-8", "backslashreplace")


def pattern_as_text(pattern: str) -> str:
    """An input pattern as the pipeline carries it: a local path as `path_as_text`, a URL unchanged."""
    return pattern if "://" in pattern else path_as_text(pattern)


def path_from_text(text: str) -> str:
    """The local path `path_as_text` made `text` from (the name to open)."""
    if "\\x" not in text:
        return text
    parts, last = [], 0
    for match in _BYTE_ESCAPE.finditer(text):
        parts += [text[last : match.start()].encode("utf-8"), bytes([int(match.group(1), 16)])]
        last = match.end()
    parts.append(text[last:].encode("utf-8"))
    return os.fsdecode(b"".join(parts))


def source_key_of(path: str) -> str:
    """What identifies a file in ids: its resolved path (absolute, symlinks followed), as text."""
    if "://" in path:
        return path
    return path_as_text(os.path.realpath(path_from_text(path)))


# --- pattern expansion ------------------------------------------------------------------------------


def expand_pattern(pattern: str) -> Iterator[str]:
    """The files (or the URL) an input pattern names, in a stable order."""
    if is_http_url(pattern):
        yield pattern
        return
    if "://" in pattern:
        yield from _expand_remote(pattern)
        return
    local = path_from_text(pattern)
    if glob.has_magic(local):
        paths = sorted(set(_local_glob(local)))
    elif os.path.lexists(local) and not os.path.isdir(local):
        paths = [local]
    else:
        paths = sorted(p for p in _walk(local, ["**"], 0, set()) if _wanted_in_folder(p))
    if not paths:
        raise FileNotFoundError(f"no input matches {pattern}")
    yield from (path_as_text(path) for path in paths)


def _expand_remote(pattern: str) -> Iterator[str]:
    is_glob = any(ch in pattern for ch in "*?[")
    if not is_glob and not pattern.endswith("/") and FileSystems.exists(pattern):
        yield pattern
        return
    query = pattern if is_glob else FileSystems.join(pattern.rstrip("/"), "**")
    paths = sorted(m.path for m in FileSystems.match([query])[0].metadata_list)
    if not is_glob:
        paths = [p for p in paths if _wanted_in_folder(p)]
    if not paths:
        raise FileNotFoundError(f"no input matches {pattern}")
    yield from paths


def _local_glob(pattern: str) -> Iterator[str]:
    """Python's glob (`*`, `?`, `[...]` within a name, `**` across folders, hidden names only when
    the pattern spells their dot), but over a walk that ends whatever the symlinks.

    Python's own glob follows symlinked folders without remembering them: a link to `.` makes
    `**` list paths until the kernel's 40-link limit, and two such links 2^40 of them. Dangling
    links and other non-folders are listed (reading them then fails into a dead letter or a
    `skipped` row), folders are not.
    """
    absolute = pattern.startswith("/")
    parts = [part for part in pattern.split("/") if part]
    yield from _walk("/" if absolute else "", parts, 0, set())


def _walk(folder: str, parts: list[str], at: int, visited: set[tuple[int, int, int]]) -> Iterator[str]:
    """The non-folders under `folder` matching `parts[at:]`.

    `visited` holds (device, inode, position in the pattern) of every folder a `**` entered: each
    folder is walked once per position, so the walk is bounded by folders x pattern parts.
    """
    part, last = parts[at], at == len(parts) - 1
    if part == "**":
        identity = _folder_identity(folder)
        if identity is None or (*identity, at) in visited:
            return
        visited.add((*identity, at))
        if not last:
            yield from _walk(folder, parts, at + 1, visited)
        for name, path, is_folder in _entries(folder):
            if name.startswith("."):
                continue
            if is_folder:
                yield from _walk(path, parts, at, visited)
            elif last:
                yield path
    elif glob.has_magic(part):
        for name, path, is_folder in _entries(folder):
            if name.startswith(".") and not part.startswith("."):
                continue
            if not fnmatch.fnmatchcase(name, part):
                continue
            if last and not is_folder:
                yield path
            elif not last and is_folder:
                yield from _walk(path, parts, at + 1, visited)
    else:
        path = os.path.join(folder, part) if folder else part
        if last:
            if os.path.lexists(path) and not os.path.isdir(path):
                yield path
        elif os.path.isdir(path):
            yield from _walk(path, parts, at + 1, visited)


def _folder_identity(folder: str) -> tuple[int, int] | None:
    try:
        info = os.stat(folder or ".")
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _entries(folder: str) -> list[tuple[str, str, bool]]:
    """(name, path, is a folder, symlinks followed) of a folder's entries, by name; none if unreadable."""
    try:
        with os.scandir(folder or ".") as scan:
            entries = [
                (e.name, os.path.join(folder, e.name) if folder else e.name, _is_folder_entry(e))
                for e in scan
            ]
    except OSError:
        return []
    return sorted(entries)


def _is_folder_entry(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for a dangling or looping link
    except OSError:
        return False


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


class _ExpandPatternFn(beam.DoFn):
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


class NotRegularFileError(OSError):
    """A path that names no regular file: reading a FIFO or a device may block for ever."""


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _kind_of(mode: int) -> str | None:
    """What a file mode names when it is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _read_local(path: str, cap: int) -> bytes:
    """At most `cap` bytes of a local regular file; `NotRegularFileError` for anything else.

    The kind is checked before opening and again on the open file (the path may change in
    between); the open itself never waits, even for a FIFO nobody writes to.
    """
    kind = _kind_of(os.stat(path).st_mode)
    if kind is None:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as stream:
            kind = _kind_of(os.fstat(descriptor).st_mode)
            if kind is None:
                # Left non-blocking: a disk file reads the same either way, and a pseudo-file that
                # claims to be regular but blocks (/proc/kmsg, reached through a symlink to /) ends
                # as an unreadable input instead of hanging the run.
                return stream.read(cap)
    raise NotRegularFileError(f"{kind}, not a regular file: not read")


def read_file(path: str, settings: ReadSettings, started_at: datetime, clock: float) -> Iterator[Any]:
    """The outputs of one feed or seed file (or object-store URL): what `parsed_to_outputs` gives.

    `path` is as `expand_pattern` gives it (for a local file, `path_as_text`); it is the entries' and
    the rows' `source`. A path that is no regular file gives a `skipped` row and nothing else.
    """
    source_type = source_type_of(path)
    try:
        # Read one byte past the cap instead of asking for the size first: one call less per file on
        # object stores, and a file that grows after its listing is still capped.
        if "://" in path:
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                body = stream.read(settings.max_file_bytes + 1)
        else:
            body = _read_local(path_from_text(path), settings.max_file_bytes + 1)
        if len(body) > settings.max_file_bytes:
            raise ValueError(f"the file is larger than the {settings.max_file_bytes}-byte cap")
    except NotRegularFileError as error:
        parsed = ParsedInput(Outcome.SKIPPED, error_type="not_a_regular_file", message=f"{path} is {error}")
        yield from parsed_to_outputs(path, source_type, parsed, None, started_at, ms_since(clock))
        return
    except Exception as error:
        parsed = ParsedInput(
            Outcome.ERROR, error_type="unreadable", message=f"{type(error).__name__}: {_strip_path(error)}"
        )
        yield from parsed_to_outputs(path, source_type, parsed, None, started_at, ms_since(clock))
        return
    if source_type == SourceType.SEED_FILE:
        parsed = parse_seed_file(body, path)
    else:
        parsed = parse_input(body, path, max_entries=settings.max_entries_per_feed)
    key = source_key_of(path)
    if key != path:
        for entry in parsed.entries:
            cast(dict[str, Any], entry)[SOURCE_KEY] = key
    yield from parsed_to_outputs(path, source_type, parsed, body, started_at, ms_since(clock))


def _strip_path(error: Exception) -> str:
    """An error's message; for an OS error without the path, which `source` already shows as text."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


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
            return os.path.getsize(path_from_text(path))
        return int(FileSystems.match([escape_pattern(path)])[0].metadata_list[0].size_in_bytes)
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
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        feed = self._settings.feeds.get(url)
        source = redact_url(url)
        try:
            # Where the feed moved for good, with the listed URL's credentials if on the same origin.
            target = carry_credentials(state.fetch_url, url) if state and state.fetch_url else url
            result = fetch(
                self._session,
                target,
                self._settings.fetch,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
            )
            outputs = list(
                fetched_to_outputs(
                    url, result, started_at, clock, feed=feed, max_entries=self._settings.max_entries_per_feed
                )
            )
        except Exception as error:  # fetch() and parsing never raise; if a bug does, it stays this feed's
            message = redact_url(f"{type(error).__name__}: {error}")
            result = FetchResult(url=source, error_type="read_crash", message=message)
            parsed = ParsedInput(Outcome.ERROR, error_type="read_crash", message=message)
            outputs = list(
                parsed_to_outputs(source, SourceType.FEED, parsed, None, started_at, ms_since(clock))
            )
        row = next(o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == FETCHES)
        fresh = [s for s in (result.max_age, rss_ttl_seconds(result.body)) if s is not None]
        outputs.append(
            beam.pvalue.TaggedOutput(
                FEED_STATES,
                state_after(
                    state,
                    source,
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
            >> beam.ParDo(_PlanReadsFn(self._settings))
            .with_output_types(KeyedInput)
            .with_outputs(FILES, FETCHES, FEED_STATES, main="due")
        )
        file_shards = (
            planned[FILES]
            | "AllFiles" >> ToList()
            | "ShardFilesBySize" >> beam.FlatMap(_keyed_shards).with_output_types(KeyedInput)
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
