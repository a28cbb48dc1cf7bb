"""Compose the stages: source -> ProcessArticles -> write -> commit, for batch and for streaming.

`build_batch` and `build_stream` read as that sentence, and share `ProcessArticles`
(transforms/process.py); they differ in the source (files and one fetch per feed, or polls), in the
known-revision check (mark, or drop) and in the sink (staged files deduplicated and committed once,
or windowed files committed per pane). They know nothing of runners or config files: they take
validated `Settings` and the run's `RunInfo`, and the stages take plain settings objects.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pipeline import Pipeline
from apache_beam.pvalue import PCollection

from pipeline.config import Settings
from pipeline.progress import CountProgress
from transforms.accounting import CountPerSource, CountUnaccounted
from transforms.dedupe import DeduplicateArticles, DeduplicatedArticles, SpillRefs
from transforms.feed_state import FeedSource, WriteFeedState
from transforms.fulltext import ExtractFullText
from transforms.io.commit import CommitRun
from transforms.io.staging import WritePartitionedParquet
from transforms.io.versions import WriteVersionIndex
from transforms.io.window import WindowFileSpec, WriteWindowedParquet, stamp_fetch_time
from transforms.poll import PollFeeds
from transforms.poll_cycles import LogPollCycles
from transforms.poll_schedule import GeneratePollTicks, PollSchedule
from transforms.process import ProcessArticles, ProcessedArticles
from transforms.read import ReadSettings, ReadSources, pattern_as_text
from transforms.schema import (
    ARTICLE_SCHEMA,
    ARTICLES,
    DEAD_LETTER_SCHEMA,
    DEAD_LETTERS,
    FEED_FETCH_SCHEMA,
    FEED_FETCHES,
    PAGE_FETCH_SCHEMA,
    PAGE_FETCHES,
    RunInfo,
)
from transforms.story_prints import FingerprintStories, StagePrints


def pages_folder(run: RunInfo) -> str:
    """The run's folder for fetching (host limits of pages and of streaming polls, robots.txt, fetched
    pages): on this machine, shared by all its worker processes (transforms/host_limits.py says what
    that means on Dataflow)."""
    return str(Path(tempfile.gettempdir()) / f"newsbeam-pages-{run.run_id}")


def _full_text(settings: Settings, run: RunInfo, now: datetime | None) -> ExtractFullText:
    return ExtractFullText(settings.stages.fulltext, pages_folder(run), now)


def build_batch(
    p: Pipeline, settings: Settings, run: RunInfo, progress: tuple[str, int] | None = None
) -> PCollection[Any]:
    """The batch pipeline; returns the one-element PCollection of the committed run manifest.

    With `progress` (a 127.0.0.1 address), steps fused into the reading stages send their counts
    there while the run goes on (pipeline/progress.py).
    """
    source = _read_sources(p, settings)
    processed = source.entries | "ProcessArticles" >> ProcessArticles(
        run,
        settings.stages.language,
        output=settings.output,
        full_text=_full_text(settings, run, run.started_at),
    )
    processed = _fingerprinted(settings, processed)
    written = _write_batch(settings, run, source, processed)
    if progress is not None:
        _send_progress(progress, source, processed, written)
    return _commit_batch(settings, run, source, written)


def _fingerprinted(settings: Settings, processed: ProcessedArticles) -> ProcessedArticles:
    """With stories on, each article not already stored carries its print to the sink."""
    stories = settings.stages.stories
    if not stories.enabled:
        return processed
    articles = processed.articles | "FingerprintStories" >> FingerprintStories(stories)
    return processed._replace(articles=articles)


class BatchSource(NamedTuple):
    inputs: list[str]  # the patterns and feed URLs read, as the manifest names them
    entries: PCollection[Any]
    fetches: tuple[PCollection[Any], ...]  # in parts: see `ReadOutputs`
    dead_letters: PCollection[Any]
    read_settings: ReadSettings
    feed_states: PCollection[Any]


def _read_sources(p: Pipeline, settings: Settings) -> BatchSource:
    feeds = settings.feed_list.feeds
    read_settings = settings.stages.read
    # A path given in bytes that are not UTF-8 travels as text (`pattern_as_text`), as every path does.
    inputs = [pattern_as_text(pattern) for pattern in (*settings.inputs, *(feed.url for feed in feeds))]
    read = p | "Inputs" >> beam.Create(inputs) | "ReadSources" >> ReadSources(read_settings)
    return BatchSource(inputs, read.entries, read.fetches, read.dead_letters, read_settings, read.feed_states)


class BatchWrite(NamedTuple):
    deduplicated: DeduplicatedArticles
    dead_letters: PCollection[Any]
    fetch_rows: PCollection[Any]
    staged_files: PCollection[Any]  # every file to commit: articles, dead letters, fetch rows, index delta


def _write_batch(
    settings: Settings, run: RunInfo, source: BatchSource, processed: ProcessedArticles
) -> BatchWrite:
    parquet = settings.stages.parquet
    # Articles are staged first and deduplicated on compact references to the staged rows, spilled
    # to staging, so that neither whole records nor per-article refs wait in the runner's memory.
    staged_articles = processed.articles | "WriteArticles" >> WritePartitionedParquet(
        settings.output,
        ARTICLES,
        ARTICLE_SCHEMA,
        settings.article_partition_keys,
        run.run_id,
        parquet,
        defaults={"version": 1},
        row_refs=SpillRefs(settings.output, run.run_id),
        rejects_to_dead_letters=True,
    )
    deduplicate = DeduplicateArticles(settings.output, run.run_id, parquet)
    deduplicated = (staged_articles.files, staged_articles.row_refs) | "DeduplicateArticles" >> deduplicate
    index_files = deduplicated.index_rows | "WriteVersionIndex" >> WriteVersionIndex(
        settings.output, run.run_id, parquet
    )
    dead_letters = (
        (source.dead_letters, processed.dead_letters, staged_articles.dead_letters)
        | "AllDeadLetters" >> beam.Flatten()
        | "StampDeadLetters" >> beam.Map(run.stamp)
    )
    counted = (
        source.fetches,
        deduplicated.files,
        deduplicated.duplicates,
        dead_letters,
        deduplicated.already_stored,
    )
    fetch_rows = counted | "CountPerSource" >> CountPerSource() | "StampFetchRows" >> beam.Map(run.stamp)
    dead_letter_writer = WritePartitionedParquet(
        settings.output, DEAD_LETTERS, DEAD_LETTER_SCHEMA, ("ingest_date",), run.run_id, parquet
    )
    fetch_writer = WritePartitionedParquet(
        settings.output, FEED_FETCHES, FEED_FETCH_SCHEMA, ("ingest_date",), run.run_id, parquet
    )
    dead_letter_files = (dead_letters | "WriteDeadLetters" >> dead_letter_writer).files
    fetch_files = (fetch_rows | "WriteFeedFetches" >> fetch_writer).files
    staged = [deduplicated.files, dead_letter_files, fetch_files, index_files]
    if settings.stages.stories.enabled:  # read by the commit, which decides the stories
        staged.append(processed.articles | "StagePrints" >> StagePrints(settings.output, run.run_id, parquet))
    if processed.page_fetches is not None:
        page_writer = WritePartitionedParquet(
            settings.output, PAGE_FETCHES, PAGE_FETCH_SCHEMA, ("ingest_date",), run.run_id, parquet
        )
        page_rows = processed.page_fetches | "StampPageFetches" >> beam.Map(run.stamp)
        staged.append((page_rows | "WritePageFetches" >> page_writer).files)
    staged_files = tuple(staged) | "AllStagedFiles" >> beam.Flatten()
    return BatchWrite(deduplicated, dead_letters, fetch_rows, staged_files)


def _send_progress(
    progress: tuple[str, int], source: BatchSource, processed: ProcessedArticles, written: BatchWrite
) -> None:
    # Each part of the fetch rows is counted where it is made (a Flatten would be one more stage).
    counted = [(f"Inputs{index}", "inputs", part) for index, part in enumerate(source.fetches)]
    counted += [
        ("Articles", "articles", processed.articles),
        ("DeadLetters", "dead_letters", written.dead_letters),
    ]
    for name, kind, collection in counted:
        _ = collection | f"Progress{name}" >> beam.ParDo(CountProgress(progress, kind))


def _commit_batch(
    settings: Settings, run: RunInfo, source: BatchSource, written: BatchWrite
) -> PCollection[Any]:
    manifest: PCollection[Any] = written.staged_files | "CommitRun" >> CommitRun(
        settings.output,
        run.run_id,
        run.started_at,
        source.inputs,
        snapshot=written.deduplicated.store_snapshot,
        unaccounted=written.fetch_rows | "CountUnaccounted" >> CountUnaccounted(),
        settings=settings.stages.parquet,
        stories=settings.stages.stories,
    )
    state_path_ = source.read_settings.state_path
    if state_path_:
        # Takes the manifest as a side input: runs only after the commit, so a failed run keeps the old state.
        _ = source.feed_states | "WriteFeedState" >> WriteFeedState(
            state_path_, manifest, lock_output=settings.output
        )
    return manifest


def _stamped_with_fetch_time(run: RunInfo) -> Any:
    def stamp(record: dict[str, Any], at: Any = beam.DoFn.TimestampParam) -> dict[str, Any]:
        return stamp_fetch_time(
            record, datetime.fromtimestamp(float(at), UTC), run.run_id, run.pipeline_version
        )

    return stamp


def build_stream(
    p: Pipeline, settings: Settings, run: RunInfo, schedule: PollSchedule, feeds: tuple[FeedSource, ...]
) -> PCollection[Any]:
    """The streaming pipeline: poll ticks -> ProcessArticles -> windowed Parquet, committed per pane.

    Returns the per-poll-cycle log lines. Every record is timestamped with its fetch (tick) time;
    windows, `ingest_date` and `ingested_at` come from it.
    """
    stream = settings.stream
    parquet = settings.stages.parquet

    def spec(dataset: str, schema: Any, keys: tuple[str, ...], with_index: bool = False) -> WindowFileSpec:
        # Articles: a record Arrow rejects becomes a dead letter of the same pane; their stories are
        # decided in the commit of the pane.
        stories = settings.stages.stories if with_index and settings.stages.stories.enabled else None
        return WindowFileSpec(
            settings.output,
            dataset,
            schema,
            keys,
            run.run_id,
            stream.window,
            parquet,
            with_index,
            stream.cleanup_after,
            rejects_to_dead_letters=with_index,
            stories=stories,
        )

    ticks = p | "PollTicks" >> GeneratePollTicks(schedule)
    polled = ticks | "PollFeeds" >> PollFeeds(
        feeds,
        schedule.tick_seconds,
        stream.poll_interval,
        settings.stages.fetch,
        settings.fetch.max_entries_per_feed,
        output=settings.output,
        state_policy=settings.stages.state_policy,
        # The polls' per-host slots, beside the pages' (the run's folder is removed when the job ends).
        hosts_folder=str(Path(pages_folder(run)) / "feed-hosts"),
    )
    entries, fetches, read_failures = polled.entries, polled.fetches, polled.dead_letters
    # A page is fetched in the poll cycle that found a new revision: known ones are dropped before.
    processed = entries | "ProcessArticles" >> ProcessArticles(
        run,
        settings.stages.language,
        output=settings.output,
        streaming=True,
        full_text=_full_text(settings, run, None),
    )
    processed = _fingerprinted(settings, processed)
    stamped = processed.articles | "StampFetchTime" >> beam.Map(_stamped_with_fetch_time(run))
    article_files = stamped | "WriteArticles" >> WriteWindowedParquet(
        spec(ARTICLES, ARTICLE_SCHEMA, settings.article_partition_keys, with_index=True)
    )
    dead_letters = (
        (read_failures, processed.dead_letters)
        | "AllDeadLetters" >> beam.Flatten()
        | "StampDeadLetters" >> beam.Map(_stamped_with_fetch_time(run))
    )
    fetch_rows = fetches | "StampFetchRows" >> beam.Map(_stamped_with_fetch_time(run))
    dead_letter_files = dead_letters | "WriteDeadLetters" >> WriteWindowedParquet(
        spec(DEAD_LETTERS, DEAD_LETTER_SCHEMA, ("ingest_date",))
    )
    fetch_files = fetch_rows | "WriteFeedFetches" >> WriteWindowedParquet(
        spec(FEED_FETCHES, FEED_FETCH_SCHEMA, ("ingest_date",))
    )
    written = [article_files, dead_letter_files, fetch_files]
    if processed.page_fetches is not None:
        page_rows = processed.page_fetches | "StampPageFetches" >> beam.Map(_stamped_with_fetch_time(run))
        written.append(
            page_rows
            | "WritePageFetches"
            >> WriteWindowedParquet(spec(PAGE_FETCHES, PAGE_FETCH_SCHEMA, ("ingest_date",)))
        )
    # Each pane's files are committed as they are written; the log of the poll cycles follows the commits.
    files = tuple(written) | "AllWrittenFiles" >> beam.Flatten()
    result: PCollection[Any] = (
        fetch_rows,
        stamped,
        processed.duplicates,
        dead_letters,
        files,
    ) | "LogPollCycles" >> LogPollCycles(schedule.tick_seconds)
    return result
