"""DeduplicateArticles: one article per `article_id` within a run.

When several entries share an id (the same link in two feeds, or twice in one feed), the most
recently updated one wins, then the most complete; the order is total, so exactly one wins.

Across runs, `DeduplicateAgainstStore` compares each article with the latest stored version of
its id (the version index of transforms/store.py): already stored articles are not written again,
changed ones get the next version number.

Only compact keys go through the shuffle: (article_id, rank) pairs are combined to find the ids
that occur more than once and their winning rank; that small map is a side input to a filter over
the articles. Whole records never pass through a GroupByKey, which the in-process runner would
hold in memory.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms import userstate

from transforms.schema import Record
from transforms.store import (
    StoredVersion,
    latest_versions,
    list_index_files,
    next_version,
    read_index,
    read_stored_versions,
)

DUPLICATES = "duplicates"

Rank = tuple[float, int, str, str, int]


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("-inf")


def rank(article: Record) -> Rank:
    """Higher is better: newest update, then most complete, then a stable tie-break."""
    freshest = max(_epoch(article.get("updated_at")), _epoch(article.get("published_at")))
    completeness = (
        len(article.get("text") or "")
        + len(article.get("summary") or "")
        + 20 * len(article.get("authors") or [])
        + 5 * len(article.get("tags") or [])
        + (50 if article.get("published_at") else 0)
    )
    return (
        freshest,
        completeness,
        article.get("content_hash") or "",
        article["source"],
        article.get("ordinal", 0),
    )


class BestRankAndCount(beam.CombineFn):
    """(best rank, occurrences) of one article id."""

    def create_accumulator(self) -> tuple[Rank | None, int]:
        return None, 0

    def add_input(self, accumulator: tuple[Rank | None, int], element: Rank) -> tuple[Rank | None, int]:
        best, count = accumulator
        return (element if best is None or element > best else best), count + 1

    def merge_accumulators(self, accumulators: Iterable[tuple[Rank | None, int]]) -> tuple[Rank | None, int]:
        best: Rank | None = None
        total = 0
        for candidate, count in accumulators:
            total += count
            if candidate is not None and (best is None or candidate > best):
                best = candidate
        return best, total

    def extract_output(self, accumulator: tuple[Rank | None, int]) -> tuple[Rank | None, int]:
        return accumulator


class _KeepWinnerFn(beam.DoFn):
    def __init__(self) -> None:
        self._duplicates = Metrics.counter("dedupe", "duplicates")

    def process(self, article: Record, contested: dict[str, Rank]) -> Iterator[Any]:
        winner = contested.get(article["article_id"])
        if winner is None or tuple(winner) == rank(article):
            yield article
            return
        self._duplicates.inc()
        yield beam.pvalue.TaggedOutput(
            DUPLICATES, {"source": article["source"], "article_id": article["article_id"]}
        )


class DeduplicateArticles(beam.PTransform):
    """Articles -> (one article per id, duplicates dropped as {source, article_id})."""

    def expand(self, articles: PCollection) -> tuple[PCollection, PCollection]:
        contested = (
            articles
            | "RankById" >> beam.Map(lambda a: (a["article_id"], rank(a)))
            | "BestRankPerId" >> beam.CombinePerKey(BestRankAndCount())
            | "OnlyRepeatedIds" >> beam.Filter(lambda kv: kv[1][1] > 1)
            | "WinningRank" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
        )
        results = articles | "KeepWinners" >> beam.ParDo(
            _KeepWinnerFn(), contested=beam.pvalue.AsDict(contested)
        ).with_outputs(DUPLICATES, main="articles")
        return results.articles, results[DUPLICATES]


# --- across runs: against the store ---------------------------------------------------------------

ALREADY_STORED = "already_stored"
STORE_SNAPSHOT = "store_snapshot"


class _ReadStoredVersionsFn(beam.DoFn):
    """The output folder -> (article_id, StoredVersion) of the run's ids; the index files read."""

    def __init__(self) -> None:
        self._stored = Metrics.counter("dedupe", "index_rows_matched")

    def process(self, output: str, ids: list[str]) -> Iterator[Any]:
        files, table = read_stored_versions(output, ids)
        latest = latest_versions(table)
        self._stored.inc(len(latest))
        yield from latest.items()
        yield beam.pvalue.TaggedOutput(STORE_SNAPSHOT, files)


class _VersionFn(beam.DoFn):
    def __init__(self) -> None:
        self._already = Metrics.counter("dedupe", "already_stored")
        self._changed = Metrics.counter("dedupe", "new_versions")

    def process(self, article: Record, stored: dict[str, StoredVersion]) -> Iterator[Any]:
        known = stored.get(article["article_id"])
        version = next_version(article.get("content_hash"), article.get("updated_at"), known)
        if version == 0:
            self._already.inc()
            yield beam.pvalue.TaggedOutput(
                ALREADY_STORED, {"source": article["source"], "article_id": article["article_id"]}
            )
            return
        if version > 1:
            self._changed.inc()
        yield {**article, "version": version}


class DeduplicateAgainstStore(beam.PTransform):
    """Articles (one per id) -> (new or changed articles with `version`, already stored, snapshot).

    Reads the version index under `OUTPUT/_state/articles/` (see transforms/store.py), only the rows
    of this run's ids. The snapshot (the index files read) lets `CommitRun` reconcile, under its
    lock, with runs that committed meanwhile.
    """

    def __init__(self, output: str) -> None:
        super().__init__()
        self._output = output

    def expand(self, articles: PCollection) -> tuple[PCollection, PCollection, PCollection]:
        ids = articles | "ArticleIds" >> beam.Map(lambda a: a["article_id"])
        stored = (
            articles.pipeline
            | "IndexLocation" >> beam.Create([self._output])
            | "ReadStoredVersions"
            >> beam.ParDo(_ReadStoredVersionsFn(), ids=beam.pvalue.AsList(ids)).with_outputs(
                STORE_SNAPSHOT, main="versions"
            )
        )
        results = articles | "NumberVersions" >> beam.ParDo(
            _VersionFn(), stored=beam.pvalue.AsDict(stored.versions)
        ).with_outputs(ALREADY_STORED, main="articles")
        return results.articles, results[ALREADY_STORED], stored[STORE_SNAPSHOT]


# --- streaming: across polls and restarts ---------------------------------------------------------
#
# The streaming job sees the same entries on every poll of a feed. `DeduplicateStream` keeps, per
# article id, the latest version it let through (content hash, `updated_at`, version) and when it
# last saw the id, and decides with the batch job's rule (`next_version`): new (version 1), changed
# (version + 1) or a duplicate. Ids go to one of `buckets` keys (a stable hash of the id), and a
# bucket forgets the ids it has not seen for `expire_after` seconds of event (fetch) time each time
# it is touched: that bounds the state by the ids seen within the horizon, whatever the run length.
# Expiry is done this way, not with a timer per id, because Prism 2.62 delivers a key's pending
# event-time timers in its next bundle whatever the watermark (engine/elementmanager.go,
# startEventTimeBundle), which would forget every id right after it is seen.
#
# At start each worker seeds itself from the store's version index (what batch runs and earlier
# streams wrote), so a restarted job does not write again what is stored. The seed is dropped once
# `expire_after` has passed, when the state has taken over.

NEW_ARTICLES = "new"
STREAM_DUPLICATES = "duplicates"

# article_id -> (content hash, updated_at as epoch seconds or None, version, last seen epoch seconds)
SeenIds = dict[str, tuple[str | None, float | None, int, float]]


def dedupe_bucket(article_id: str, buckets: int) -> int:
    """A stable bucket for an id (ids are hex digests; any other string is hashed first)."""
    try:
        return int(article_id[:8], 16) % buckets
    except ValueError:
        return int(hashlib.sha256(article_id.encode("utf-8")).hexdigest()[:8], 16) % buckets


def forget_expired(seen: SeenIds, now: float, expire_after: float) -> int:
    """Drop the ids last seen more than `expire_after` seconds before `now`; returns how many."""
    expired = [article_id for article_id, entry in seen.items() if entry[3] < now - expire_after]
    for article_id in expired:
        del seen[article_id]
    return len(expired)


def stream_version(article: Record, seen: SeenIds, seed: Mapping[str, StoredVersion], now: float) -> int:
    """The version to write for `article` (0: a duplicate) and the remembered state updated."""
    article_id = article["article_id"]
    entry = seen.get(article_id)
    if entry is not None:
        known: StoredVersion | None = StoredVersion(
            entry[0], datetime.fromtimestamp(entry[1], UTC) if entry[1] is not None else None, entry[2]
        )
    else:
        known = seed.get(article_id)
    updated_at: datetime | None = article.get("updated_at")
    version = next_version(article.get("content_hash"), updated_at, known)
    if version:
        seen[article_id] = (
            article.get("content_hash"),
            updated_at.timestamp() if updated_at is not None else None,
            version,
            now,
        )
    elif known is not None:
        seen[article_id] = (
            known.content_hash,
            known.updated_at.timestamp() if known.updated_at is not None else None,
            known.version,
            now,
        )
    return version


def load_seed(output: str) -> dict[str, StoredVersion]:
    """The latest stored version of every id in the store's version index (empty for a new output)."""
    return latest_versions(read_index(list_index_files(output)))


class _DeduplicateStreamFn(beam.DoFn):
    SEEN = userstate.ReadModifyWriteStateSpec("seen", PickleCoder())
    _SEEN_PARAM = beam.DoFn.StateParam(SEEN)
    _TIMESTAMP_PARAM = beam.DoFn.TimestampParam

    def __init__(self, output: str | None, expire_after: float) -> None:
        self._output = output
        self._expire_after = expire_after
        self._new = Metrics.counter("dedupe", "stream_new")
        self._versions = Metrics.counter("dedupe", "stream_new_versions")
        self._duplicates = Metrics.counter("dedupe", "stream_duplicates")
        self._expired = Metrics.counter("dedupe", "stream_expired_ids")

    def setup(self) -> None:
        self._seed = load_seed(self._output) if self._output else {}
        self._seed_until = time.time() + self._expire_after

    def process(
        self, keyed: tuple[int, Record], seen_state: Any = _SEEN_PARAM, timestamp: Any = _TIMESTAMP_PARAM
    ) -> Iterator[Any]:
        article = keyed[1]
        if self._seed and time.time() > self._seed_until:
            self._seed = {}
        now = float(timestamp)
        seen: SeenIds = seen_state.read() or {}
        self._expired.inc(forget_expired(seen, now, self._expire_after))
        version = stream_version(article, seen, self._seed, now)
        seen_state.write(seen)
        if version == 0:
            self._duplicates.inc()
            yield beam.pvalue.TaggedOutput(
                STREAM_DUPLICATES, {"source": article["source"], "article_id": article["article_id"]}
            )
            return
        (self._versions if version > 1 else self._new).inc()
        yield {**article, "version": version}


class DeduplicateStream(beam.PTransform):
    """Timestamped articles -> (new and changed articles with `version`, duplicates as {source, article_id}).

    `output` is the dataset to seed from (None: no seed); state is bounded by `expire_after` seconds.
    """

    def __init__(self, output: str | None, expire_after: float, buckets: int = 1024) -> None:
        super().__init__()
        if expire_after <= 0 or buckets < 1:
            raise ValueError("DeduplicateStream needs expire_after > 0 and at least one bucket")
        self._output, self._expire_after, self._buckets = output, expire_after, buckets

    def expand(self, articles: PCollection) -> tuple[PCollection, PCollection]:
        buckets = self._buckets
        results = (
            articles
            | "KeyByIdBucket"
            >> beam.Map(lambda a: (dedupe_bucket(a["article_id"], buckets), a)).with_output_types(
                tuple[int, Any]
            )
            | "KeepUnseen"
            >> beam.ParDo(_DeduplicateStreamFn(self._output, self._expire_after)).with_outputs(
                STREAM_DUPLICATES, main=NEW_ARTICLES
            )
        )
        return results[NEW_ARTICLES], results[STREAM_DUPLICATES]
