"""DeduplicateArticles: one article per `article_id` within a run, and only what the store lacks.

Articles are deduplicated after they are staged, on compact references: every staged row has an
`ArticleRef` (its id, rank, file and row, and its version-index fields). The writer puts the refs of
each staged file in a Parquet file of their own in the run's staging (`SpillRefs`), and only those
files' names cross to the next stage. Neither whole records nor per-article refs wait in the runner:
the in-process runner buffers in memory every PCollection that crosses a stage, which made its
memory grow with every article of the run (6.7 KB each, with the refs in a GroupByKey and their
ids in a side input). The decision reads the refs back from staging in hash buckets of at most
`BUCKET_ROWS` refs (spilled to a local temporary folder), with the stored versions of each bucket's
ids, so its memory is bounded by a bucket, not by the run.

Within the run, when several entries share an id (the same link in two feeds, or twice in one
feed), the most recently updated one wins, then the most complete; the order is total, so
exactly one wins. Across runs, the winner is compared with the latest stored version of its id
(the version index of transforms/io/versions.py): already stored, it is dropped; changed, it gets the
next version number. The decisions that change a staged file (rows dropped, versions other than
1) are applied to it before the commit; files without any are left as staged.

(The early known-revision checks, before the costly stages, are in transforms/known_revisions.py.)
Slightly over ~400 lines for a reason: the ranking rule, the spilled refs it decides on and the
edits it makes are one decision, read top to bottom.
"""

from __future__ import annotations

import math
import posixpath
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToListCombineFn

from transforms.io.parquet import (
    ParquetSettings,
    give_back_free_heap,
    open_parquet,
    read_parquet,
    return_freed_memory_at_once,
    write_parquet,
)
from transforms.io.paths import STAGING_DIR, join_path
from transforms.io.staging import StagedFile
from transforms.io.versions import (
    LOOKUP_SCHEMA,
    StoredVersion,
    index_batches,
    latest_versions,
    list_index_files,
    next_version,
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


# --- the refs, spilled to staging and read back in buckets ----------------------------------------

REFS_DIR = "_refs"  # OUTPUT/_staging/<run_id>/_refs/: removed with the run's staging at its commit
# Refs decided at once: memory holds one bucket's refs and their stored versions; smaller than a
# 10k run's share, so that a run of any size decides buckets of the same size.
BUCKET_ROWS = 2_000
REF_SCHEMA = pa.schema(
    [
        ("article_id", pa.string()),
        ("freshest", pa.float64()),  # the rank's fields, in its order
        ("completeness", pa.int64()),
        ("content_hash", pa.string()),
        ("source", pa.string()),
        ("ordinal", pa.int64()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("updated_micros", pa.int64()),
        ("ingest_date", pa.string()),
    ]
)


def refs_table(refs: Iterable[ArticleRef]) -> pa.Table:
    """`ArticleRef`s as a table of `REF_SCHEMA` (read back exactly by `refs_of_table`)."""
    columns: dict[str, list[Any]] = {name: [] for name in REF_SCHEMA.names}
    for ref in refs:
        for name, value in zip(REF_SCHEMA.names[1:6], ref.rank, strict=True):
            columns[name].append(value)
        columns["article_id"].append(ref.article_id)
        columns["file"].append(ref.file)
        columns["row"].append(ref.row)
        columns["updated_micros"].append(ref.updated_micros)
        columns["ingest_date"].append(ref.ingest_date)
    return pa.table(columns, schema=REF_SCHEMA)


def refs_of_table(table: pa.Table) -> list[ArticleRef]:
    return [
        ArticleRef(
            row["article_id"],
            (row["freshest"], row["completeness"], row["content_hash"], row["source"], row["ordinal"]),
            row["file"],
            row["row"],
            row["updated_micros"],
            row["ingest_date"],
        )
        for row in table.to_pylist()
    ]


@dataclass(frozen=True)
class SpillRefs:
    """The articles writer's `row_refs` (transforms/io/staging.py `RowRefs`): the refs of one staged
    file go to a Parquet file in staging.

    `of_records` gives the refs of records as the writer buffers them (`REF_SCHEMA`, the file and
    row left to `spill`); `spill` writes those of one file and returns (that file's path, its number
    of refs): one small element per staged file is all that crosses to `DeduplicateArticles`,
    however many articles the run has.
    """

    output: str
    run_id: str

    def of_records(self, records: list[Record]) -> pa.Table:
        return refs_table(article_ref(record, "", row) for row, record in enumerate(records))

    def spill(self, refs: pa.Table, staged_path: str) -> tuple[str, int]:
        name = posixpath.basename(staged_path)
        rows = refs.num_rows
        refs = refs.set_column(
            REF_SCHEMA.get_field_index("file"), REF_SCHEMA.field("file"), pa.array([name] * rows, pa.string())
        )
        refs = refs.set_column(
            REF_SCHEMA.get_field_index("row"), REF_SCHEMA.field("row"), pa.array(range(rows), pa.int64())
        )
        path = join_path(self.output, STAGING_DIR, self.run_id, REFS_DIR, name)
        write_parquet(refs, path, ParquetSettings())
        return path, rows

    def __call__(self, records: list[Record], staged_path: str) -> tuple[str, int]:
        """The refs of one whole file's records, spilled: `spill(of_records(records), staged_path)`."""
        return self.spill(self.of_records(records), staged_path)


def bucket_of(article_ids: list[str], buckets: int) -> list[int]:
    """A stable bucket per id (the same in every process: not Python's salted `hash`)."""
    if buckets == 1:
        return [0] * len(article_ids)
    return [zlib.crc32(i.encode("utf-8", "surrogatepass")) % buckets for i in article_ids]


class _BucketFiles:
    """One Arrow stream file per bucket in a local folder, written table by table, read batch by batch."""

    def __init__(self, folder: Path, kind: str, schema: pa.Schema, buckets: int) -> None:
        self._paths = [folder / f"{kind}-{n:05d}.arrows" for n in range(buckets)]
        self._schema, self._buckets = schema, buckets
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def add(self, table: pa.Table) -> None:
        per_bucket: dict[int, list[int]] = defaultdict(list)
        for row, bucket in enumerate(bucket_of(table.column("article_id").to_pylist(), self._buckets)):
            per_bucket[bucket].append(row)
        for bucket, rows in per_bucket.items():
            writer = self._writers.get(bucket)
            if writer is None:
                writer = self._writers[bucket] = pa.ipc.new_stream(str(self._paths[bucket]), self._schema)
            part = table if len(rows) == table.num_rows else table.take(pa.array(rows, pa.int64()))
            writer.write_table(part)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def reset(self) -> None:
        self.close()
        for path in self._paths:
            path.unlink(missing_ok=True)

    def batches(self, bucket: int) -> Iterator[pa.RecordBatch]:
        path = self._paths[bucket]
        if path.exists():
            with pa.ipc.open_stream(str(path)) as reader:
                yield from reader


def _stored_of(index: _BucketFiles, bucket: int, ids: set[str]) -> dict[str, StoredVersion]:
    """The latest stored version of each of `ids` that the bucket's index rows know."""
    wanted = pa.array(sorted(ids), pa.string())
    matches = [
        table.filter(pc.is_in(table["article_id"], value_set=wanted))
        for table in (pa.Table.from_batches([batch]) for batch in index.batches(bucket))
    ]
    return latest_versions(pa.concat_tables(matches)) if matches else {}


def _spill_index(output: str, index: _BucketFiles, attempts: int = 5) -> list[str]:
    """The store's version index into `index`'s buckets; the files read (re-listed when compaction
    retires one meanwhile, as `store.read_stored_versions` does)."""
    for attempt in range(attempts):
        files = list_index_files(output)
        try:
            for table in index_batches(files):
                index.add(table)
            return files
        except FileNotFoundError:
            index.reset()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _dropped(ref: ArticleRef) -> Record:
    return {"source": ref.source, "article_id": ref.article_id}


class _DecideFn(beam.DoFn):
    """The run's ref files -> edits of staged rows (file name, (row, version, source)), what was
    dropped, the index rows, and the index files read (`STORE_SNAPSHOT`, for the commit).

    One call for the whole run: the refs are read back from staging into hash buckets (a local
    temporary folder), the store's index into the same buckets, and each bucket is decided alone.
    """

    def __init__(self, output: str, run_id: str) -> None:
        self._output = output
        self._run_id = run_id
        self._stored = Metrics.counter("dedupe", "index_rows_matched")
        self._duplicates = Metrics.counter("dedupe", "duplicates")
        self._already = Metrics.counter("dedupe", "already_stored")
        self._changed = Metrics.counter("dedupe", "new_versions")

    def setup(self) -> None:
        return_freed_memory_at_once()

    def process(self, ref_files: list[tuple[str, int]]) -> Iterator[Any]:
        buckets = max(1, math.ceil(sum(rows for _path, rows in ref_files) / BUCKET_ROWS))
        with tempfile.TemporaryDirectory(prefix="newsbeam-dedupe-") as folder:
            refs = _BucketFiles(Path(folder), "refs", REF_SCHEMA, buckets)
            index = _BucketFiles(Path(folder), "index", LOOKUP_SCHEMA, buckets)
            try:
                for path, _rows in ref_files:
                    refs.add(read_parquet(path).cast(REF_SCHEMA))
                refs.close()
                files = _spill_index(self._output, index) if ref_files else list_index_files(self._output)
                index.close()
                yield beam.pvalue.TaggedOutput(STORE_SNAPSHOT, files)
                for bucket in range(buckets):
                    by_id: dict[str, list[ArticleRef]] = defaultdict(list)
                    for batch in refs.batches(bucket):
                        for ref in refs_of_table(pa.Table.from_batches([batch])):
                            by_id[ref.article_id].append(ref)
                    stored = _stored_of(index, bucket, set(by_id)) if by_id else {}
                    self._stored.inc(len(stored))
                    for article_id, group in by_id.items():
                        yield from self._outcomes(decide(group, stored.get(article_id)))
                    del by_id, stored
                    give_back_free_heap()
            finally:
                refs.close()
                index.close()

    def _outcomes(self, decision: Decision) -> Iterator[Any]:
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

    def setup(self) -> None:
        return_freed_memory_at_once()

    def process(self, grouped: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[StagedFile]:
        _path, parts = grouped
        edits = list(parts["edits"])
        for staged in parts["files"]:
            if not edits:
                yield staged
                continue
            self._rewritten.inc()
            decided = {row: version for row, version, _ in edits}
            table = edited_table(staged.staged_path, decided)
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
                del table
                give_back_free_heap()
                yield edited


EDIT_BATCH_ROWS = 1_000  # rows of a staged file decoded at once while its edits are applied


def edited_table(path: str, decided: dict[int, int]) -> pa.Table:
    """The staged file's rows with their decided versions (`renumber_rows`; row number -> version).

    Read a batch at a time: memory holds the kept rows and one decoded batch, not the whole file
    twice (decoded, then copied without its dropped rows). The rows, their order and the schema are
    those `renumber_rows` gives on the whole file.
    """
    parts, start = [], 0
    with open_parquet(path) as source:
        reader = pq.ParquetFile(source)
        for batch in reader.iter_batches(batch_size=EDIT_BATCH_ROWS):
            rows = range(start, start + batch.num_rows)
            parts.append(renumber_rows(pa.Table.from_batches([batch]), [decided.get(row) for row in rows]))
            start += batch.num_rows
        schema = reader.schema_arrow
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _edited_name(path: str) -> str:
    return path.removesuffix(".parquet") + "-edited.parquet"


class DeduplicatedArticles(NamedTuple):
    files: PCollection[Any]  # the staged article files to commit (`StagedFile`s)
    index_rows: PCollection[Any]  # the run's version-index delta
    duplicates: PCollection[Any]  # {source, article_id} of each entry another entry of the run beat
    already_stored: PCollection[Any]  # {source, article_id} of each winner whose revision is stored
    store_snapshot: PCollection[Any]  # the index files read, for `CommitRun` to reconcile with later commits


class DeduplicateArticles(beam.PTransform[Any, Any]):
    """(staged article files, their ref files from `SpillRefs`) -> `DeduplicatedArticles`.

    `output` is the dataset whose version index is read; `run_id` goes into the index rows.
    """

    def __init__(self, output: str, run_id: str, settings: ParquetSettings | None = None) -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._settings = settings or ParquetSettings()

    def expand(self, staged: tuple[PCollection[Any], PCollection[Any]]) -> DeduplicatedArticles:
        files, ref_files = staged
        # One element per staged file crosses here (its refs' path and count), never one per article.
        decided = (
            ref_files
            | "GatherRefFiles" >> beam.CombineGlobally(ToListCombineFn())
            | "Decide"
            >> beam.ParDo(_DecideFn(self._output, self._run_id))
            .with_output_types(tuple[str, Any])
            .with_outputs(DUPLICATES, ALREADY_STORED, INDEX_ROWS, STORE_SNAPSHOT, main="edits")
        )
        # Both sides of the join keyed by file name with one declared type, so that the CoGroupByKey's
        # Flatten inputs share its coder (Prism rewrites mismatched ones by coder id and fails the run).
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
            store_snapshot=decided[STORE_SNAPSHOT],
        )
