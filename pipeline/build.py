"""Compose the stages: read, normalize, detect, enrich, write (staged), dedupe, commit.

`build_batch` reads as the pipeline does. It knows nothing of runners or config files: it takes
validated `Settings` and the run's `RunInfo`, and the stages take plain settings objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.pipeline import Pipeline
from apache_beam.pvalue import PCollection

from pipeline.config import Settings
from pipeline.feeds import feed_list
from pipeline.progress import CountProgress
from transforms.accounting import CountPerSource, CountUnaccounted
from transforms.dedupe import (
    ALREADY_STORED,
    DUPLICATES,
    INDEX_ROWS,
    STORE_SNAPSHOT,
    DeduplicateArticles,
    DeduplicateStream,
    SpillRefs,
)
from transforms.enrich import EnrichArticles
from transforms.feed_state import FeedSource, WriteFeedState, state_path
from transforms.language import DetectLanguage
from transforms.normalize import NormalizeArticles
from transforms.poll import GeneratePollTicks, LogPollCycles, PollFeeds, PollSchedule
from transforms.read import ReadSettings, ReadSources, pattern_as_text
from transforms.schema import ARTICLE_SCHEMA, DEAD_LETTER_SCHEMA, FEED_FETCH_SCHEMA, RunInfo
from transforms.window_write import WindowFileSpec, WriteWindowedParquet, stamp_fetch_time
from transforms.write import CommitRun, WritePartitionedParquet, WriteVersionIndex

ARTICLES = "articles"
DEAD_LETTERS = "dead_letters"
FEED_FETCHES = "feed_fetches"
DATASETS = (ARTICLES, DEAD_LETTERS, FEED_FETCHES)


def build_batch(
    p: Pipeline, settings: Settings, run: RunInfo, progress: tuple[str, int] | None = None
) -> PCollection:
    """The batch pipeline; returns the one-element PCollection of the committed run manifest.

    With `progress` (a 127.0.0.1 address), steps fused into the reading stages send their counts
    there while the run goes on (pipeline/progress.py).
    """
    parquet = settings.parquet.settings()
    feeds = feed_list(settings).feeds
    read_settings = ReadSettings(
        fetch=settings.fetch.settings(),
        feeds={feed.url: feed for feed in feeds},
        state_path=(settings.state.path or state_path(settings.output)) if settings.state.enabled else None,
        state_policy=settings.state.policy(),
        force=settings.state.force,
        max_entries_per_feed=settings.fetch.max_entries_per_feed,
    )

    # A path given in bytes that are not UTF-8 travels as text (`pattern_as_text`), as every path does.
    inputs = [pattern_as_text(pattern) for pattern in (*settings.inputs, *(feed.url for feed in feeds))]
    patterns = p | "Inputs" >> beam.Create(inputs)
    read = ReadSources(read_settings)
    entries, fetches, read_failures = patterns | "ReadSources" >> read
    normalized, normalize_failures = entries | "NormalizeArticles" >> NormalizeArticles(run.started_at)
    detected, detect_failures = normalized | "DetectLanguage" >> DetectLanguage(settings.language.settings())
    enriched, enrich_failures = detected | "EnrichArticles" >> EnrichArticles(run)
    # Articles are staged first and deduplicated on compact references to the staged rows, spilled
    # to staging, so that neither whole records nor per-article refs wait in the runner's memory.
    staged_articles = enriched | "WriteArticles" >> WritePartitionedParquet(
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
    article_files = deduplicated["files"]
    duplicates, already_stored = deduplicated[DUPLICATES], deduplicated[ALREADY_STORED]
    index_files = deduplicated[INDEX_ROWS] | "WriteVersionIndex" >> WriteVersionIndex(
        settings.output, run.run_id, parquet
    )

    write_failures = staged_articles.dead_letters
    dead_letters = (
        (read_failures, normalize_failures, detect_failures, enrich_failures, write_failures)
        | "AllDeadLetters" >> beam.Flatten()
        | "StampDeadLetters" >> beam.Map(run.stamp)
    )
    fetch_rows = (
        (fetches, article_files, duplicates, dead_letters, already_stored)
        | "CountPerSource" >> CountPerSource()
        | "StampFetchRows" >> beam.Map(run.stamp)
    )
    dead_letter_writer = WritePartitionedParquet(
        settings.output, DEAD_LETTERS, DEAD_LETTER_SCHEMA, ("ingest_date",), run.run_id, parquet
    )
    fetch_writer = WritePartitionedParquet(
        settings.output, FEED_FETCHES, FEED_FETCH_SCHEMA, ("ingest_date",), run.run_id, parquet
    )
    dead_letter_files = (dead_letters | "WriteDeadLetters" >> dead_letter_writer).files
    fetch_files = (fetch_rows | "WriteFeedFetches" >> fetch_writer).files
    if progress is not None:
        for kind, counted in (("inputs", fetches), ("articles", enriched), ("dead_letters", dead_letters)):
            _ = counted | f"Progress{kind.title()}" >> beam.ParDo(CountProgress(progress, kind))
    manifest = (
        (article_files, dead_letter_files, fetch_files, index_files)
        | "AllStagedFiles" >> beam.Flatten()
        | "CommitRun"
        >> CommitRun(
            settings.output,
            run.run_id,
            run.started_at,
            inputs,
            snapshot=deduplicated[STORE_SNAPSHOT],
            unaccounted=fetch_rows | "CountUnaccounted" >> CountUnaccounted(),
        )
    )
    if read_settings.state_path and read.feed_states is not None:
        # Takes the manifest as a side input: runs only after the commit, so a failed run keeps the old state.
        _ = read.feed_states | "WriteFeedState" >> WriteFeedState(
            read_settings.state_path, manifest, lock_output=settings.output
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
) -> PCollection:
    """The streaming pipeline: poll ticks through the batch stages to windowed Parquet.

    Returns the per-poll-cycle log lines. Every record is timestamped with its fetch (tick) time;
    windows, `ingest_date` and `ingested_at` come from it.
    """
    stream = settings.stream
    parquet = settings.parquet.settings()

    def spec(dataset: str, schema: Any, keys: tuple[str, ...], with_index: bool = False) -> WindowFileSpec:
        # Articles: a record Arrow rejects becomes a dead letter of the same pane.
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
        )

    ticks = p | "PollTicks" >> GeneratePollTicks(schedule)
    entries, fetches, read_failures = ticks | "PollFeeds" >> PollFeeds(
        feeds,
        schedule.tick_seconds,
        stream.poll_interval,
        settings.fetch.settings(),
        settings.fetch.max_entries_per_feed,
        output=settings.output,
    )
    normalized, normalize_failures = entries | "NormalizeArticles" >> NormalizeArticles(now=None)
    detected, detect_failures = normalized | "DetectLanguage" >> DetectLanguage(settings.language.settings())
    enriched, enrich_failures = detected | "EnrichArticles" >> EnrichArticles(run)
    stamped = enriched | "StampFetchTime" >> beam.Map(_stamped_with_fetch_time(run))
    unique, duplicates = stamped | "DeduplicateStream" >> DeduplicateStream(settings.output)
    article_files = unique | "WriteArticles" >> WriteWindowedParquet(
        spec(ARTICLES, ARTICLE_SCHEMA, settings.article_partition_keys, with_index=True)
    )

    dead_letters = (
        (read_failures, normalize_failures, detect_failures, enrich_failures)
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
    files = (article_files, dead_letter_files, fetch_files) | "AllWrittenFiles" >> beam.Flatten()
    return (fetch_rows, unique, duplicates, dead_letters, files) | "LogPollCycles" >> LogPollCycles(
        schedule.tick_seconds
    )
