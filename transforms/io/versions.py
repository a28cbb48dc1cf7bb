"""The version index: which article versions the store holds, how a run's versions are reconciled.

Every committed run publishes, beside its articles, one small Parquet delta under
`OUTPUT/_state/articles/` with one row per article version it wrote: `article_id`, `content_hash`,
`updated_at`, `version`, `run_id`, `ingest_date` (about 60 bytes a row on disk). The next run reads
only four columns of the index, keeps only the ids it is about to write (a vectorized Arrow filter),
and decides for each article (`next_version`): new (version 1), changed (a different content hash or
a newer `updated_at` than the latest stored version: version + 1), or already stored (not written).
`newsbeam compact` merges the deltas into one file and `newsbeam prune` drops the rows of pruned
partitions, so the index stays proportional to the retained dataset, not to the number of polls.

Versions of staged rows change in one place, `renumber_rows`: when the dedupe decides (duplicates,
already stored, next versions) and when a commit reconciles with runs that committed meanwhile
(`reconcile_with_store`). Rewritten files keep the configured Parquet settings.

`check_index` compares the deltas with what the committed manifests say they hold, so that no run
starts on a damaged index (which would store articles again as duplicates).
"""

from __future__ import annotations

import posixpath
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.pvalue import PCollection

from transforms.io.manifests import committed_manifests
from transforms.io.parquet import (
    ParquetSettings,
    open_parquet,
    read_parquet,
    read_parquet_metadata,
    write_parquet,
)
from transforms.io.paths import INDEX_DATASET, delete_inside, join_path, list_files
from transforms.io.staging import StagedFile, WritePartitionedParquet
from transforms.io.story_check import story_index_damage
from transforms.schema import TIMESTAMP, Column, arrow_schema

INDEX_COLUMNS: tuple[Column, ...] = (
    Column("article_id", pa.string(), "The article's id"),
    Column("content_hash", pa.string(), "Content hash of this version"),
    Column("updated_at", TIMESTAMP, "Update time of this version"),
    Column("version", pa.int32(), "Version number, 1 for the first"),
    Column("run_id", pa.string(), "Run that wrote this version"),
    Column("ingest_date", pa.string(), "Partition of the articles dataset that holds this version"),
)
INDEX_SCHEMA = arrow_schema(INDEX_COLUMNS)
INDEX_FIELDS = tuple(c.name for c in INDEX_COLUMNS)
LOOKUP_FIELDS = ["article_id", "content_hash", "updated_at", "version"]  # what deciding a version needs
LOOKUP_SCHEMA = pa.schema([INDEX_SCHEMA.field(name) for name in LOOKUP_FIELDS])


class IndexFileError(RuntimeError):
    """A delta of the version index that cannot be read; the message names it and the repair."""


@dataclass(frozen=True)
class StoredVersion:
    """The latest stored version of one article id."""

    content_hash: str | None
    updated_at: datetime | None
    version: int


def index_dir(output: str) -> str:
    return join_path(output, INDEX_DATASET)


def list_index_files(output: str) -> list[str]:
    """The index deltas, sorted: listed, never matched (the output's name may hold `[`, `*`, `?`)."""
    return [m.path for m in list_files(index_dir(output), ".parquet")]


def index_batches(files: Iterable[str], batch_size: int = 262_144) -> Iterator[pa.Table]:
    """The index rows of `files` (the `LOOKUP_FIELDS`), a batch at a time: never the whole index."""
    for path in files:
        with open_parquet(path) as source:
            try:
                reader = pq.ParquetFile(source)
                for batch in reader.iter_batches(batch_size=batch_size, columns=LOOKUP_FIELDS):
                    yield pa.Table.from_batches([batch]).select(LOOKUP_FIELDS).cast(LOOKUP_SCHEMA)
            except (pa.ArrowException, KeyError) as error:  # KeyError: a file without the columns
                raise IndexFileError(
                    f"the version index file {path} cannot be read ({error}); rebuild the index from the "
                    "article files with `newsbeam repair OUTPUT`"
                ) from error


def read_index(files: Iterable[str], ids: Iterable[str] | None = None) -> pa.Table:
    """The index rows of `files`, only those of `ids` when given (filtered in Arrow, not in Python)."""
    wanted = None if ids is None else pa.array(sorted(set(ids)), pa.string())
    tables = []
    for table in index_batches(files):
        if wanted is not None:
            # Batch by batch: memory holds the matches, never the whole index.
            table = table.filter(pc.is_in(table["article_id"], value_set=wanted))
        tables.append(table)
    if not tables:
        return LOOKUP_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def latest_versions(table: pa.Table) -> dict[str, StoredVersion]:
    """Latest version per id of index rows (rows repeated in several files count once)."""
    latest: dict[str, StoredVersion] = {}
    for row in table.to_pylist():
        known = latest.get(row["article_id"])
        if known is None or row["version"] > known.version:
            latest[row["article_id"]] = StoredVersion(row["content_hash"], row["updated_at"], row["version"])
    return latest


def next_version(content_hash: str | None, updated_at: datetime | None, stored: StoredVersion | None) -> int:
    """The version to write for an article, or 0 when the latest stored version is the same article.

    A changed article has a different content hash, or a newer `updated_at`, than the latest stored
    version; an older `updated_at` with the same content is the same article polled again.
    """
    if stored is None:
        return 1
    newer = updated_at is not None and (stored.updated_at is None or updated_at > stored.updated_at)
    if content_hash != stored.content_hash or newer:
        return stored.version + 1
    return 0


def read_stored_versions(output: str, ids: Iterable[str], attempts: int = 5) -> tuple[list[str], pa.Table]:
    """(index files read, their rows of `ids`); re-listed when compaction retires a file meanwhile."""
    wanted = list(ids)
    for attempt in range(attempts):
        files = list_index_files(output)
        try:
            return files, read_index(files, wanted)
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def index_record(article: dict[str, Any]) -> dict[str, Any]:
    return {name: article.get(name) for name in INDEX_FIELDS}


def reconcile_with_store(
    output: str, files: list[StagedFile], snapshot: list[str], settings: ParquetSettings | None = None
) -> tuple[list[StagedFile], int]:
    """Staged files made consistent with index deltas committed since this run read the index.

    Returns them and how many articles were dropped or renumbered. Files it changes are written
    again with `settings` (the run's Parquet settings).

    Two runs that read the index at the same time both see an article as new; the one that commits
    second drops what the first stored and renumbers what it changed, so no version is written
    twice. Runs alone (the usual case) find no new delta and change nothing.
    """
    seen = set(snapshot)
    newer = [path for path in list_index_files(output) if path not in seen]
    ours = [f for f in files if f.dataset == INDEX_DATASET]
    if not newer or not ours:
        return files, 0
    our_rows = pa.concat_tables([read_parquet(f.staged_path) for f in ours]).to_pylist()
    stored = latest_versions(read_index(newer, [row["article_id"] for row in our_rows]))
    decisions: dict[str, int] = {}
    for row in our_rows:
        known = stored.get(row["article_id"])
        if known is not None and known.version >= row["version"]:
            decisions[row["article_id"]] = next_version(row["content_hash"], row["updated_at"], known)
    if not decisions:
        return files, 0
    dropped: dict[str, int] = defaultdict(int)
    result = []
    for staged in files:  # versioned files first: the fetch rows need their dropped counts
        table = read_parquet(staged.staged_path)
        if {"article_id", "version"} <= set(table.column_names):
            decided = [decisions.get(article_id) for article_id in table.column("article_id").to_pylist()]
            if staged.dataset != INDEX_DATASET and "source" in table.column_names:
                for source, version in zip(table.column("source").to_pylist(), decided, strict=True):
                    if version == 0:
                        dropped[source or ""] += 1
            staged = _rewrite(staged, renumber_rows(table, decided), settings)
        if staged.rows:
            result.append(staged)
    final = []
    for staged in result:
        table = read_parquet(staged.staged_path)
        if {"already_stored", "articles_written"} <= set(table.column_names):
            staged = _rewrite(staged, move_to_already_stored(table, dropped), settings)
        final.append(staged)
    return final, len(decisions)


def renumber_rows(table: pa.Table, decided: Sequence[int | None]) -> pa.Table:
    """`table` with each row's decided version: 0 drops the row, None leaves it as it is, any other
    number becomes its `version`. The one place where versions of staged rows change."""
    versions = table.column("version").to_pylist()
    keep: list[int] = []
    for row, version in enumerate(decided):
        if version == 0:
            continue
        if version is not None:
            versions[row] = version
        keep.append(row)
    position = table.column_names.index("version")
    field = table.field("version")
    table = table.set_column(position, field, pa.array(versions, field.type))
    return table.take(pa.array(keep, pa.int64()))


def move_to_already_stored(table: pa.Table, dropped: dict[str, int]) -> pa.Table:
    """Fetch rows with `dropped` entries per source moved from `articles_written` to `already_stored`.

    A source with several fetch rows has its counts on one of them (`CountPerSource`) and zeros on
    the others: the entries move once, on the row that counted them as written.
    """
    rows = table.to_pylist()
    moved: set[str] = set()
    for row in rows:
        source = row["source"] or ""
        n = dropped.get(source, 0)
        if n and source not in moved and (row["articles_written"] or 0) >= n:
            moved.add(source)
            row["articles_written"] = (row["articles_written"] or 0) - n
            row["already_stored"] = (row["already_stored"] or 0) + n
    return pa.Table.from_pylist(rows, schema=table.schema)


def _rewrite(staged: StagedFile, table: pa.Table, settings: ParquetSettings | None) -> StagedFile:
    delete_inside(posixpath.dirname(staged.staged_path), [staged.staged_path])
    if table.num_rows:
        write_parquet(table, staged.staged_path, settings or ParquetSettings())
    return replace(staged, rows=table.num_rows, rows_per_source={})


class IndexDamagedError(RuntimeError):
    """A delta of the version index that a committed manifest lists is missing or unreadable."""


@dataclass(frozen=True)
class IndexDamage:
    path: str
    problem: str  # "missing", or the Parquet reader's message
    manifest: str  # the manifest that published the delta


def expected_index_files(output: str) -> dict[str, tuple[str, int | None]]:
    """The deltas the manifests say the index holds: file name -> (manifest path, rows).

    Names, not paths: a manifest records the paths of the output where it was written, and an
    output may have been moved or copied since. Each manifest adds the deltas it published and
    takes away the ones it retired (compact, prune, repair).
    """
    expected: dict[str, tuple[str, int | None]] = {}
    for document in committed_manifests(output):
        for move in document.get("retired") or []:
            if move.get("dataset") == INDEX_DATASET:
                expected.pop(posixpath.basename(move["staged_path"]), None)
        for move in document.get("files") or []:
            if move.get("dataset") == INDEX_DATASET:
                rows = move.get("rows")
                name = posixpath.basename(move["final_path"])
                expected[name] = (document["manifest_path"], rows if isinstance(rows, int) else None)
    return expected


def index_damage(output: str) -> list[IndexDamage]:
    """Deltas the manifests list that are missing, unreadable, lack the index's columns or hold
    another number of rows.

    Reads only each delta's footer. Deltas no manifest lists (those a stream publishes) are read
    too: a broken one would fail every run all the same.
    """
    present = {posixpath.basename(path): path for path in list_index_files(output)}
    expected = expected_index_files(output)
    damage = [
        IndexDamage(join_path(index_dir(output), name), "missing", manifest)
        for name, (manifest, _) in sorted(expected.items())
        if name not in present
    ]
    for name, path in sorted(present.items()):
        manifest, rows = expected.get(name, ("", None))
        try:
            metadata = read_parquet_metadata(path)
            found, columns = metadata.num_rows, set(metadata.schema.names)
        except (OSError, pa.ArrowException) as error:
            damage.append(IndexDamage(path, f"unreadable ({error})", manifest))
            continue
        lacking = [column for column in LOOKUP_FIELDS if column not in columns]
        if lacking:  # readable, but some other file (an article file copied over it, say)
            damage.append(
                IndexDamage(path, f"not a version index file (no column {', '.join(lacking)})", manifest)
            )
            continue
        if rows is not None and found != rows:
            damage.append(IndexDamage(path, f"holds {found} rows, its manifest says {rows}", manifest))
    return damage


def check_index(output: str) -> None:
    """Raise `IndexDamagedError`, naming the file and the repair, when the version index is damaged.

    A run on a damaged index would store what the lost delta knew as duplicates (a missing delta)
    or fail without naming the file (a truncated one); it refuses to start instead.
    """
    damage = index_damage(output)
    if not damage:
        check_story_index(output)
        return
    first = damage[0]
    listed = f" (published by {first.manifest})" if first.manifest else ""
    more = f"; and {len(damage) - 1} more" if len(damage) > 1 else ""
    raise IndexDamagedError(
        f"the version index is damaged: {first.path} is {first.problem}{listed}{more}. A run now would "
        f"store articles again as duplicates, so none starts. Rebuild the index from the article files "
        f"with `newsbeam repair {output}`, then run again"
    )


class WriteVersionIndex(beam.PTransform[Any, Any]):
    """Index rows (or written articles) -> the staged version-index delta (`OUTPUT/_state/articles/`)."""

    def __init__(self, output: str, run_id: str, settings: ParquetSettings | None = None) -> None:
        super().__init__()
        self._write = WritePartitionedParquet(output, INDEX_DATASET, INDEX_SCHEMA, (), run_id, settings)

    def expand(self, articles: PCollection[Any]) -> PCollection[Any]:
        # The writer keeps the index's columns.
        result: PCollection[Any] = (articles | "StageIndexDelta" >> self._write).files
        return result


def check_story_index(output: str) -> None:
    """Raise `IndexDamagedError` when a story index delta (transforms/io/story_index.py) a manifest
    published is missing or one is unreadable: a run would miss the candidates it holds and start
    new stories for copies of stored ones (or fail without naming the file)."""
    damage = story_index_damage(output)
    if not damage:
        return
    first = damage[0]
    listed = f" (published by {first.manifest})" if first.manifest else ""
    more = f"; and {len(damage) - 1} more" if len(damage) > 1 else ""
    raise IndexDamagedError(
        f"the story index is damaged: {first.path} is {first.problem}{listed}{more}. A run now would "
        f"give copies of stored stories new stories, so none starts. Rebuild it from the stories and "
        f"the article files with `newsbeam repair {output}`, then run again"
    )
