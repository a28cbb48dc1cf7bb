"""DeduplicateArticles: one article per `article_id` within a run, and only what the store lacks.

(The early known-revision checks, before the costly stages, are in transforms/known_revisions.py.)

Articles are deduplicated after they are staged, on compact references: every staged row comes
with an `ArticleRef` (its id, rank, file and row, and its version-index fields), and only those
go through the shuffle. Whole records stay inside the stage that reads, enriches and stages them,
so the in-process runner never holds them (it buffers every PCollection that crosses a stage).

Within the run, when several entries share an id (the same link in two feeds, or twice in one
feed), the most recently updated one wins, then the most complete; the order is total, so
exactly one wins. Across runs, the winner is compared with the latest stored version of its id
(the version index of transforms/io/versions.py): already stored, it is dropped; changed, it gets the
next version number. The decisions that change a staged file (rows dropped, versions other than
1) are applied to it before the commit; files without any are left as staged.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.io.parquet import ParquetSettings, read_parquet, write_parquet
from transforms.io.staging import StagedFile
from transforms.io.versions import (
    StoredVersion,
    latest_versions,
    next_version,
    read_stored_versions,
    renumber_rows,
)
from transforms.schema import Record

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
        """Its row of the version index (transforms/io/versions.py)."""
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
            decided = {row: version for row, version, _ in edits}
            original = read_parquet(staged.staged_path)
            table = renumber_rows(original, [decided.get(row) for row in range(original.num_rows)])
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


class DeduplicatedArticles(NamedTuple):
    files: PCollection  # the staged article files to commit (`StagedFile`s)
    index_rows: PCollection  # the run's version-index delta
    duplicates: PCollection  # {source, article_id} of each entry another entry of the run beat
    already_stored: PCollection  # {source, article_id} of each winner whose revision is stored
    store_snapshot: PCollection  # the index files read, for `CommitRun` to reconcile with later commits


class DeduplicateArticles(beam.PTransform):
    """(staged article files, their `ArticleRef`s) -> `DeduplicatedArticles`.

    `output` is the dataset whose version index is read; `run_id` goes into the index rows.
    """

    def __init__(self, output: str, run_id: str, settings: ParquetSettings | None = None) -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._settings = settings or ParquetSettings()

    def expand(self, staged: tuple[PCollection, PCollection]) -> DeduplicatedArticles:
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
            >> beam.ParDo(_ReadStoredVersionsFn(), ids=beam.pvalue.AsList(grouped | "Ids" >> beam.Keys()))
            .with_output_types(tuple[str, Any])
            .with_outputs(STORE_SNAPSHOT, main="versions")
        )
        # Both sides of the join keyed by file name with one declared type, so that the CoGroupByKey's
        # Flatten inputs share its coder (Prism rewrites mismatched ones by coder id and fails the run).
        decided = grouped | "Decide" >> beam.ParDo(
            _DecideFn(self._run_id), stored=beam.pvalue.AsDict(stored.versions)
        ).with_output_types(tuple[str, Any]).with_outputs(
            DUPLICATES, ALREADY_STORED, INDEX_ROWS, main="edits"
        )
        keyed_files = files | "KeyByName" >> beam.Map(
            lambda f: (posixpath.basename(f.staged_path), f)
        ).with_output_types(tuple[str, Any])
        edited = (
            {"files": keyed_files, "edits": decided.edits}
            | "EditsPerFile" >> beam.CoGroupByKey()
            | "ApplyEdits" >> beam.ParDo(_ApplyEditsFn(self._settings))
        )
        return DeduplicatedArticles(
            files=edited,
            index_rows=decided[INDEX_ROWS],
            duplicates=decided[DUPLICATES],
            already_stored=decided[ALREADY_STORED],
            store_snapshot=stored[STORE_SNAPSHOT],
        )
