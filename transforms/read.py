"""ReadSources: every input (feed URL, feed file, seed file) to raw entries, a fetch row and dead letters.

Inputs arrive as a few patterns (paths, globs, folders, URLs); they are expanded inside the
pipeline, one element per file or URL, and reshuffled so that reading runs in parallel. Each
input gives exactly one `feed_fetches` row with a named outcome, and a dead letter when it fails:
a broken feed, an HTTP error, a timeout or undecodable bytes never stop the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.fetch import FetchSettings, fetch, make_session
from transforms.parse import ParsedInput, is_http_url, parse_input, parse_seed_file
from transforms.schema import Outcome, Record, SourceType, Stage, dead_letter

FETCHES = "fetches"
DEAD_LETTERS = "dead_letters"

# What a folder given as input contributes: seed files and feed files (the benchmark corpus
# has feeds without an extension), never READMEs or hidden files.
SEED_EXTENSIONS = (".txt",)
FEED_EXTENSIONS = (".xml", ".rss", ".atom", ".rdf", ".json", ".feed", ".cdf")
MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ReadSettings:
    fetch: FetchSettings = field(default_factory=FetchSettings)
    max_file_bytes: int = MAX_FILE_BYTES


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
    matches = FileSystems.match([query])[0].metadata_list
    paths = sorted(m.path for m in matches)
    if not is_glob:
        paths = [p for p in paths if _wanted_in_folder(p)]
    if not paths:
        raise FileNotFoundError(f"no input matches {pattern}")
    yield from paths


def _is_folder(path: str) -> bool:
    if "://" in path:
        return path.endswith("/")
    import os

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


class _ReadSourceFn(beam.DoFn):
    def __init__(self, settings: ReadSettings) -> None:
        self._settings = settings
        self._inputs = Metrics.counter("read", "inputs")
        self._entries = Metrics.counter("read", "entries")

    def setup(self) -> None:
        self._session = make_session(self._settings.fetch)

    def teardown(self) -> None:
        self._session.close()

    def process(self, source: str) -> Iterator[Any]:
        self._inputs.inc()
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        if is_http_url(source):
            outputs = self._read_url(source, started_at, clock)
        else:
            outputs = self._read_file(source, started_at, clock)
        for output in outputs:
            if isinstance(output, dict) and "ordinal" in output:
                self._entries.inc()
            yield output

    def _read_file(self, path: str, started_at: datetime, clock: float) -> Iterator[Any]:
        source_type = source_type_of(path)
        try:
            size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
            if size > self._settings.max_file_bytes:
                raise ValueError(f"file of {size} bytes is over the {self._settings.max_file_bytes}-byte cap")
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                body = stream.read()
        except Exception as error:
            parsed = ParsedInput(
                Outcome.ERROR, error_type="unreadable", message=f"{type(error).__name__}: {error}"
            )
            yield from parsed_to_outputs(path, source_type, parsed, None, started_at, _ms_since(clock))
            return
        if source_type == SourceType.SEED_FILE:
            parsed = parse_seed_file(body, path)
        else:
            parsed = parse_input(body, path)
        yield from parsed_to_outputs(path, source_type, parsed, body, started_at, _ms_since(clock))

    def _read_url(self, url: str, started_at: datetime, clock: float) -> Iterator[Any]:
        result = fetch(self._session, url, self._settings.fetch)
        http = {
            "url": url,
            "final_url": result.final_url,
            "http_status": result.status,
        }
        if result.not_modified:
            parsed = ParsedInput(Outcome.NOT_MODIFIED)
        elif not result.ok or result.body is None:
            parsed = ParsedInput(
                Outcome.ERROR, error_type=result.error_type or "no_body", message=result.message
            )
        else:
            parsed = parse_input(
                result.body, url, content_type=result.content_type, base_url=result.final_url or url
            )
        yield from parsed_to_outputs(
            url, SourceType.FEED, parsed, result.body, started_at, _ms_since(clock), **http
        )


def _ms_since(clock: float) -> int:
    return int((time.monotonic() - clock) * 1000)


class ReadSources(beam.PTransform):
    """Input patterns -> (raw entries, feed_fetches rows, dead letters)."""

    def __init__(self, settings: ReadSettings | None = None) -> None:
        super().__init__()
        self._settings = settings or ReadSettings()

    def expand(self, patterns: PCollection) -> tuple[PCollection, PCollection, PCollection]:
        expanded = patterns | "ExpandPatterns" >> beam.ParDo(_ExpandPatternFn()).with_outputs(
            FETCHES, DEAD_LETTERS, main="sources"
        )
        read = (
            expanded.sources
            # Distinct also redistributes: one element per input, each read once.
            | "OneElementPerInput" >> beam.Distinct()
            | "ReadAndParse"
            >> beam.ParDo(_ReadSourceFn(self._settings)).with_outputs(FETCHES, DEAD_LETTERS, main="entries")
        )
        fetches = (expanded[FETCHES], read[FETCHES]) | "AllFetchRows" >> beam.Flatten()
        dead_letters = (expanded[DEAD_LETTERS], read[DEAD_LETTERS]) | "AllReadDeadLetters" >> beam.Flatten()
        return read.entries, fetches, dead_letters
