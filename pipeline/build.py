"""Compose the stages: read, normalize, detect, enrich, dedupe, write, commit.

`build_batch` reads as the pipeline does. It knows nothing of runners or config files: it takes
validated `Settings` and the run's `RunInfo`, and the stages take plain settings objects.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.pipeline import Pipeline
from apache_beam.pvalue import PCollection

from pipeline.config import Settings
from pipeline.feeds import feed_list
from transforms.accounting import CountPerSource
from transforms.dedupe import DeduplicateAgainstStore, DeduplicateArticles
from transforms.enrich import EnrichArticles
from transforms.feed_state import WriteFeedState, state_path
from transforms.language import DetectLanguage
from transforms.normalize import NormalizeArticles
from transforms.read import ReadSettings, ReadSources
from transforms.schema import ARTICLE_SCHEMA, DEAD_LETTER_SCHEMA, FEED_FETCH_SCHEMA, RunInfo
from transforms.write import CommitRun, WritePartitionedParquet, WriteVersionIndex

ARTICLES = "articles"
DEAD_LETTERS = "dead_letters"
FEED_FETCHES = "feed_fetches"
DATASETS = (ARTICLES, DEAD_LETTERS, FEED_FETCHES)


def build_batch(p: Pipeline, settings: Settings, run: RunInfo) -> PCollection:
    """The batch pipeline; returns the one-element PCollection of the committed run manifest."""
    parquet = settings.parquet.settings()
    feeds = feed_list(settings).feeds
    read_settings = ReadSettings(
        fetch=settings.fetch.settings(),
        feeds={feed.url: feed for feed in feeds},
        state_path=(settings.state.path or state_path(settings.output)) if settings.state.enabled else None,
        state_policy=settings.state.policy(),
        force=settings.state.force,
    )

    patterns = p | "Inputs" >> beam.Create([*settings.inputs, *(feed.url for feed in feeds)])
    read = ReadSources(read_settings)
    entries, fetches, read_failures = patterns | "ReadSources" >> read
    normalized, normalize_failures = entries | "NormalizeArticles" >> NormalizeArticles(run.started_at)
    detected, detect_failures = normalized | "DetectLanguage" >> DetectLanguage(settings.language.settings())
    enriched, enrich_failures = detected | "EnrichArticles" >> EnrichArticles(run)
    unique, duplicates = enriched | "DeduplicateArticles" >> DeduplicateArticles()
    versioned, already_stored, store_snapshot = unique | "DeduplicateAgainstStore" >> DeduplicateAgainstStore(
        settings.output
    )
    article_files = versioned | "WriteArticles" >> WritePartitionedParquet(
        settings.output, ARTICLES, ARTICLE_SCHEMA, settings.article_partition_keys, run.run_id, parquet
    )
    index_files = versioned | "WriteVersionIndex" >> WriteVersionIndex(settings.output, run.run_id, parquet)

    dead_letters = (
        (read_failures, normalize_failures, detect_failures, enrich_failures)
        | "AllDeadLetters" >> beam.Flatten()
        | "StampDeadLetters" >> beam.Map(run.stamp)
    )
    fetch_rows = (
        (fetches, article_files, duplicates, dead_letters, already_stored)
        | "CountPerSource" >> CountPerSource()
        | "StampFetchRows" >> beam.Map(run.stamp)
    )
    dead_letter_files = dead_letters | "WriteDeadLetters" >> WritePartitionedParquet(
        settings.output, DEAD_LETTERS, DEAD_LETTER_SCHEMA, ("ingest_date",), run.run_id, parquet
    )
    fetch_files = fetch_rows | "WriteFeedFetches" >> WritePartitionedParquet(
        settings.output, FEED_FETCHES, FEED_FETCH_SCHEMA, ("ingest_date",), run.run_id, parquet
    )
    manifest = (
        (article_files, dead_letter_files, fetch_files, index_files)
        | "AllStagedFiles" >> beam.Flatten()
        | "CommitRun"
        >> CommitRun(settings.output, run.run_id, run.started_at, settings.inputs, snapshot=store_snapshot)
    )
    if read_settings.state_path and read.feed_states is not None:
        # Takes the manifest as a side input: runs only after the commit, so a failed run keeps the old state.
        _ = read.feed_states | "WriteFeedState" >> WriteFeedState(read_settings.state_path, manifest)
    return manifest
