"""DeduplicateArticles: one article per `article_id` within a run, and only what the store lacks.

Articles are deduplicated after they are staged, on compact references: every staged row comes
with an `ArticleRef` (its id, rank, file and row, and its version-index fields), and only those
go through the shuffle. Whole records stay inside the stage that reads, enriches and stages them,
so the in-process runner never holds them (it buffers every PCollection that crosses a stage).

Within the run, when several entries share an id (the same link in two feeds, or twice in one
feed), the most recently updated one wins, then the most complete; the order is total, so
exactly one wins. Across runs, the winner is compared with the latest stored version of its id
(the version index of transforms/store.py): already stored, it is dropped; changed, it gets the
next version number. The decisions that change a staged file (rows dropped, versions other than
1) are applied to it before the commit; files without any are left as staged.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
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
    read_parquet,
    read_stored_versions,
)
from transforms.write import ParquetSettings, StagedFile, write_parquet

DUPLICATES = "duplicates"
ALREADY_STORED = "already_stored"
STORE_SNAPSHOT = "store_snapshot"
INDEX_ROWS = "index_rows"

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


class ArticleRef(NamedTuple):
    """A staged article without its text: what deciding its fate needs, and where it lies.

    Kept small (about 300 bytes encoded): the runner groups one for every article of the run.
    """

    article_id: str
    rank: Rank  # also carries the content hash and the source
    file: str  # the staged file's name, unique within the run
    row: int
    updated_micros: int | None  # `updated_at` as microseconds since the epoch
    ingest_date: str | None

    @property
    def content_hash(self) -> str | None:
        return self.rank[2] or None

    @property
    def source(self) -> str:
        return self.rank[3]

    @property
    def updated_at(self) -> datetime | None:
        if self.updated_micros is None:
            return None
        return _EPOCH + timedelta(microseconds=self.updated_micros)

    def index_row(self, version: int, run_id: str) -> Record:
        """Its row of the version index (transforms/store.py)."""
        return {
            "article_id": self.article_id,
            "content_hash": self.content_hash,
            "updated_at": self.updated_at,
            "version": version,
            "run_id": run_id,
            "ingest_date": self.ingest_date,
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def article_ref(article: Record, staged_path: str, row: int) -> ArticleRef:
    updated: datetime | None = article.get("updated_at")
    micros = (updated - _EPOCH) // timedelta(microseconds=1) if updated is not None else None
    return ArticleRef(
        article["article_id"],
        rank(article),
        posixpath.basename(staged_path),
        row,
        micros,
        article.get("ingest_date"),
    )


class Decision(NamedTuple):
    """The fate of the articles of one id: the winner's version (0: already stored) and the losers."""

    winner: ArticleRef
    version: int
    duplicates: list[ArticleRef]


def decide(refs: Iterable[ArticleRef], stored: StoredVersion | None) -> Decision:
    """The best of an id's articles against the latest stored version of the id."""
    ordered = sorted(refs, key=lambda ref: ref.rank, reverse=True)
    winner = ordered[0]
    version = next_version(winner.content_hash, winner.updated_at, stored)
    return Decision(winner, version, ordered[1:])


def edit_rows(table: pa.Table, edits: Mapping[int, int]) -> pa.Table:
    """A staged table with rows whose edit is 0 dropped and the others given their edited version."""
    versions = table.column("version").to_pylist()
    keep = []
    for row in range(table.num_rows):
        version = edits.get(row)
        if version == 0:
            continue
        if version is not None:
            versions[row] = version
        keep.append(row)
    position = table.column_names.index("version")
    table = table.set_column(
        position, table.field("version"), pa.array(versions, table.field("version").type)
    )
    return table.take(pa.array(keep, pa.int64()))


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


def _dropped(ref: ArticleRef) -> Record:
    return {"source": ref.source, "article_id": ref.article_id}


class _DecideFn(beam.DoFn):
    """(id, refs) -> edits of staged rows (file name, (row, version, source)), and what was dropped."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._duplicates = Metrics.counter("dedupe", "duplicates")
        self._already = Metrics.counter("dedupe", "already_stored")
        self._changed = Metrics.counter("dedupe", "new_versions")

    def process(
        self, grouped: tuple[str, Iterable[ArticleRef]], stored: dict[str, StoredVersion]
    ) -> Iterator[Any]:
        article_id, refs = grouped
        decision = decide(refs, stored.get(article_id))
        for loser in decision.duplicates:
            self._duplicates.inc()
            yield beam.pvalue.TaggedOutput(DUPLICATES, _dropped(loser))
            yield loser.file, (loser.row, 0, loser.source)
        winner = decision.winner
        if decision.version == 0:
            self._already.inc()
            yield beam.pvalue.TaggedOutput(ALREADY_STORED, _dropped(winner))
            yield winner.file, (winner.row, 0, winner.source)
            return
        if decision.version > 1:  # staged as version 1
            self._changed.inc()
            yield winner.file, (winner.row, decision.version, winner.source)
        yield beam.pvalue.TaggedOutput(INDEX_ROWS, winner.index_row(decision.version, self._run_id))


class _ApplyEditsFn(beam.DoFn):
    """(file name, {files, edits}) -> the staged file, or an edited copy when some of its rows changed.

    The copy gets a new name and the original is left in staging (which the commit removes), so a
    retried bundle reads the same original and writes the same copy.
    """

    def __init__(self, settings: ParquetSettings) -> None:
        self._settings = settings
        self._rewritten = Metrics.counter("dedupe", "files_rewritten")

    def process(self, grouped: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[StagedFile]:
        _path, parts = grouped
        edits = list(parts["edits"])
        for staged in parts["files"]:
            if not edits:
                yield staged
                continue
            self._rewritten.inc()
            table = edit_rows(read_parquet(staged.staged_path), {row: version for row, version, _ in edits})
            per_source = defaultdict(int, staged.rows_per_source)
            for _row, version, source in edits:
                if version == 0:
                    per_source[source] -= 1
            if table.num_rows:
                edited = replace(
                    staged,
                    staged_path=_edited_name(staged.staged_path),
                    final_path=_edited_name(staged.final_path),
                    rows=table.num_rows,
                    rows_per_source={s: n for s, n in per_source.items() if n},
                )
                write_parquet(table, edited.staged_path, self._settings)
                yield edited


def _edited_name(path: str) -> str:
    return path.removesuffix(".parquet") + "-edited.parquet"


class DeduplicateArticles(beam.PTransform):
    """(staged article files, their `ArticleRef`s) -> the run's article files, deduplicated.

    Returns a dict of PCollections: `files` (the staged files to commit), `index_rows` (the run's
    version-index delta), `duplicates` and `already_stored` (each {source, article_id}) and
    `store_snapshot` (the index files read, for `CommitRun` to reconcile with runs that committed
    meanwhile). `output` is the dataset whose version index is read; `run_id` goes into the index rows.
    """

    def __init__(self, output: str, run_id: str, settings: ParquetSettings | None = None) -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._settings = settings or ParquetSettings()

    def expand(self, staged: tuple[PCollection, PCollection]) -> dict[str, PCollection]:
        files, refs = staged
        grouped = (
            refs
            | "KeyById" >> beam.Map(lambda ref: (ref.article_id, ref)).with_output_types(tuple[str, Any])
            | "GroupById" >> beam.GroupByKey()
        )
        stored = (
            files.pipeline
            | "IndexLocation" >> beam.Create([self._output])
            | "ReadStoredVersions"
            >> beam.ParDo(
                _ReadStoredVersionsFn(), ids=beam.pvalue.AsList(grouped | "Ids" >> beam.Keys())
            ).with_outputs(STORE_SNAPSHOT, main="versions")
        )
        decided = grouped | "Decide" >> beam.ParDo(
            _DecideFn(self._run_id), stored=beam.pvalue.AsDict(stored.versions)
        ).with_outputs(DUPLICATES, ALREADY_STORED, INDEX_ROWS, main="edits")
        keyed_files = files | "KeyByName" >> beam.Map(lambda f: (posixpath.basename(f.staged_path), f))
        edited = (
            {"files": keyed_files, "edits": decided.edits}
            | "EditsPerFile" >> beam.CoGroupByKey()
            | "ApplyEdits" >> beam.ParDo(_ApplyEditsFn(self._settings))
        )
        return {
            "files": edited,
            INDEX_ROWS: decided[INDEX_ROWS],
            DUPLICATES: decided[DUPLICATES],
            ALREADY_STORED: decided[ALREADY_STORED],
            STORE_SNAPSHOT: stored[STORE_SNAPSHOT],
        }


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
