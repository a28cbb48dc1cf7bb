"""WritePartitionedParquet and staging leases: a batch run's files, written outside the datasets.

`WritePartitionedParquet` buffers each bundle's records per partition (as Arrow tables, a few hundred
records at a time: not as dicts) and writes them as Parquet
files under `OUTPUT/_staging/<run_id>/<dataset>/<partition>/`, outside the datasets (DuckDB's
`**/*.parquet` reads dot-files too, so a hidden temp name inside would be read). It emits one small
`StagedFile` record per file; `CommitRun` (transforms/io/commit.py) publishes them.

A live run holds a lease on its staging folder (an `flock`, released by the kernel when its holder
dies), so whoever holds the commit lock next can tell the staging of a dead run (removed, see
`abandoned_staging`) from that of a live one (kept).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import GlobalWindows

from transforms.io.manifests import pending_path
from transforms.io.parquet import (
    DatasetFiles,
    ParquetSettings,
    convert_records,
    give_back_free_heap,
    refuse_records,
    rejected_dead_letter,
    return_freed_memory_at_once,
    write_parquet,
)
from transforms.io.paths import (
    STAGING_DIR,
    child,
    delete_inside,
    is_local,
    join_path,
    list_files,
    partition_path,
    validate_run_id,
)

ROW_REFS = "row_refs"
DEAD_LETTERS = "dead_letters"
# Records a partition's buffer holds as dicts before they become an Arrow table: a buffered article
# takes about 11 KB as a dict and 4 KB in Arrow, so the buffer of `max_buffered_rows` is held in Arrow.
CONVERT_EVERY = 500


class RowRefs(Protocol):
    """Compact references to a staged file's rows (transforms/dedupe.py `SpillRefs`).

    `of_records` makes the refs of records as they are buffered (an Arrow table, one row per record,
    in order); `spill` gets those of one whole file with its staged path and gives one element per
    file: per-article data never waits in the runner, nor as dicts in the writer.
    """

    def of_records(self, records: list[dict[str, Any]]) -> pa.Table: ...

    def spill(self, refs: pa.Table, staged_path: str) -> Any: ...


@dataclass(frozen=True)
class StagedFile:
    """One Parquet file written to staging, waiting for the run's commit."""

    dataset: str
    partition: str  # e.g. "ingest_date=2026-11-29/language=en"
    staged_path: str
    final_path: str
    rows: int
    rows_per_source: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StagingTarget(DatasetFiles):
    """What one `WritePartitionedParquet` stages: see its docstring for each field."""

    settings: ParquetSettings = field(default_factory=ParquetSettings)
    defaults: Mapping[str, Any] | None = None
    row_refs: RowRefs | None = None
    rejects_to_dead_letters: bool = False


@dataclass
class _Buffer:
    """One partition's buffered rows: converted to Arrow `CONVERT_EVERY` records at a time."""

    pending: list[dict[str, Any]] = field(default_factory=list)  # records not yet converted
    tables: list[pa.Table] = field(default_factory=list)
    refs: list[pa.Table] = field(default_factory=list)
    per_source: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: int = 0  # pending and converted


class _StageFilesFn(beam.DoFn):
    def __init__(self, target: StagingTarget) -> None:
        output, dataset, schema, partition_keys = (
            target.output,
            target.dataset,
            target.schema,
            target.partition_keys,
        )
        self._output = output
        self._dataset = dataset
        self._defaults = dict(target.defaults or {})
        self._row_refs = target.row_refs
        self._rejects_to_dead_letters = target.rejects_to_dead_letters
        # Hive layout: partition values live in the folder names, not in the files, as every
        # engine (Spark, BigQuery, Athena) expects.
        self._schema = pa.schema(
            [f for f in schema if f.name not in partition_keys], metadata=schema.metadata
        )
        self._keys = partition_keys
        self._run_id = validate_run_id(target.run_id)
        self._settings = target.settings
        self._rows = Metrics.counter("write", f"{dataset}_rows")
        self._files = Metrics.counter("write", f"{dataset}_files")
        self._rejected = Metrics.counter("write", f"{dataset}_dead_letters")

    def setup(self) -> None:
        return_freed_memory_at_once()

    def start_bundle(self) -> None:
        self._buffers: dict[str, _Buffer] = defaultdict(_Buffer)
        self._buffered = 0
        self._bundle = uuid.uuid4().hex[:12]
        self._sequence = 0

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        buffer = self._buffers[partition_path(record, self._keys)]
        buffer.pending.append(record)
        buffer.rows += 1
        self._buffered += 1
        if len(buffer.pending) >= CONVERT_EVERY:
            yield from self._convert(buffer)
        if self._buffered >= self._settings.max_buffered_rows:
            # A full buffer writes its largest partition: memory stays bounded and files stay large;
            # the small partitions wait for the end of the bundle.
            largest = max(self._buffers, key=lambda partition: self._buffers[partition].rows)
            yield from self._write(largest, self._buffers.pop(largest))

    def finish_bundle(self) -> Iterator[Any]:
        # Outputs of finish_bundle need a window: the global one, at its end (not MAX_TIMESTAMP, which is
        # past that end, so Prism drops such elements as late at the next grouping).
        for output in self._flush():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    output.tag, GlobalWindows.windowed_value_at_end_of_window(output.value)
                )
            else:
                yield GlobalWindows.windowed_value_at_end_of_window(output)

    def _flush(self) -> Iterator[Any]:
        buffers, self._buffers = self._buffers, defaultdict(_Buffer)
        for partition, buffer in buffers.items():
            yield from self._write(partition, buffer)
        self._buffered = 0

    def _convert(self, buffer: _Buffer) -> Iterator[Any]:
        """The buffer's pending records into an Arrow table (and their refs); rejected ones out."""
        if not buffer.pending:
            return
        records, buffer.pending = buffer.pending, []
        table, records, rejected = convert_records(records, self._schema, self._defaults)
        if rejected and not self._rejects_to_dead_letters:
            raise refuse_records(self._dataset, rejected)
        buffer.rows -= len(rejected)
        self._buffered -= len(rejected)
        for bad in rejected:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, rejected_dead_letter(self._dataset, bad))
        if not records:
            return
        buffer.tables.append(table)
        if self._row_refs is not None:
            buffer.refs.append(self._row_refs.of_records(records))
        for record in records:
            buffer.per_source[record.get("source") or ""] += 1

    def _write(self, partition: str, buffer: _Buffer) -> Iterator[Any]:
        yield from self._convert(buffer)
        self._buffered -= buffer.rows
        if not buffer.rows:
            return
        table = pa.concat_tables(buffer.tables)
        name = f"part-{self._run_id}-{self._bundle}-{self._sequence:04d}.parquet"
        self._sequence += 1
        staged_path = join_path(self._output, STAGING_DIR, self._run_id, self._dataset, partition, name)
        write_parquet(table, staged_path, self._settings)
        rows = table.num_rows
        del table  # the written rows are freed before the heap is trimmed
        buffer.tables.clear()
        give_back_free_heap()
        self._rows.inc(rows)
        self._files.inc()
        yield StagedFile(
            self._dataset,
            partition,
            staged_path,
            join_path(self._output, self._dataset, partition, name),
            rows,
            dict(buffer.per_source),
        )
        if self._row_refs is not None:
            yield beam.pvalue.TaggedOutput(
                ROW_REFS, self._row_refs.spill(pa.concat_tables(buffer.refs), staged_path)
            )


class StagedOutputs(NamedTuple):
    """What `WritePartitionedParquet` gives: staged files, row refs of each (empty without `row_refs`) and
    the `write` dead letters of records Arrow rejected (empty unless `rejects_to_dead_letters`)."""

    files: PCollection[Any]
    row_refs: PCollection[Any]
    dead_letters: PCollection[Any]


class WritePartitionedParquet(beam.PTransform[Any, Any]):
    """Records -> Parquet files in staging, one `StagedFile` each; `CommitRun` publishes them.

    `defaults` fills the columns the records lack. With `row_refs` (a `RowRefs`), its `spill` comes
    out for every file written (the refs of its rows, in order): compact references that later
    steps can decide on without holding the records (see transforms/dedupe.py).

    A record Arrow cannot convert (a lone surrogate, a number out of range, a wrong type) never
    fails the bundle silently: with `rejects_to_dead_letters` (records that are entries of their
    sources: articles) it becomes a `write` dead letter naming the entry and the column, and the
    other records are written; without (fetch rows, dead letters, the index: records the run must
    write, built valid) the bundle fails with an error naming the column and the source.
    """

    def __init__(
        self,
        output: str,
        dataset: str,
        schema: pa.Schema,
        partition_keys: tuple[str, ...],
        run_id: str,
        settings: ParquetSettings | None = None,
        defaults: Mapping[str, Any] | None = None,
        row_refs: RowRefs | None = None,
        rejects_to_dead_letters: bool = False,
    ) -> None:
        super().__init__()
        target = StagingTarget(
            output,
            dataset,
            schema,
            partition_keys,
            run_id,
            settings or ParquetSettings(),
            defaults,
            row_refs,
            rejects_to_dead_letters,
        )
        self._fn = _StageFilesFn(target)

    def expand(self, records: PCollection[Any]) -> StagedOutputs:
        staged = records | "StageParquetFiles" >> beam.ParDo(self._fn).with_outputs(
            ROW_REFS, DEAD_LETTERS, main="files"
        )
        return StagedOutputs(staged.files, staged[ROW_REFS], staged[DEAD_LETTERS])


# --- staging leases: a live run's staging is kept, a dead one's is garbage ------------------------

LEASE_NAME = "_alive.lock"
# Staging without a lease (object stores, or older versions) is garbage only once untouched this long.
STAGING_EXPIRY_SECONDS = 2 * 86_400
_LEASES: dict[str, int] = {}  # lease path -> open file descriptor holding its flock, in this process


class StagingInUseError(RuntimeError):
    """Another live process holds the staging lease of this run id."""


def lease_path(output: str, run_id: str) -> str:
    return join_path(child(join_path(output, STAGING_DIR), run_id), LEASE_NAME)


def _lease_is_held(path: str) -> bool:
    """Whether a live process holds the lease at `path` (this one included)."""
    import fcntl

    if path in _LEASES:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def take_staging_lease(output: str, run_id: str) -> None:
    """Mark `OUTPUT/_staging/<run_id>/` live for as long as this process runs or until released.

    An `flock` on `_alive.lock` in the folder: the kernel releases it when its holder dies, even by
    SIGKILL or after a full disk, so whoever holds the commit lock next can tell the staging of a
    dead run (removed) from that of a live one (kept). Call it under the commit lock, before the
    run writes anything. Object stores have no such locks: there staging is garbage by age.
    """
    import fcntl

    path = lease_path(output, run_id)
    if not is_local(path) or path in _LEASES:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StagingInUseError(
            f"run {run_id} is already running in another live process (it holds {path}); "
            "wait for it to end, or give this run another --run-id"
        ) from None
    _LEASES[path] = fd


def release_staging_lease(output: str, run_id: str) -> None:
    """Give up this process's lease on the run's staging (nothing when it holds none)."""
    import fcntl

    fd = _LEASES.pop(lease_path(output, run_id), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def staging_lease(output: str, run_id: str) -> Iterator[None]:
    """`take_staging_lease` for the length of a `with` block (enter it under the commit lock)."""
    take_staging_lease(output, run_id)
    try:
        yield
    finally:
        release_staging_lease(output, run_id)


def check_staging_free(output: str, run_id: str) -> None:
    """Raise `StagingInUseError` when another live process stages under this run id."""
    path = lease_path(output, run_id)
    if is_local(path) and path not in _LEASES and _lease_is_held(path):
        raise StagingInUseError(
            f"run {run_id} is already running in another live process (it holds {path}); "
            "wait for it to end, or give this run another --run-id"
        )


def abandoned_staging(output: str, now: float | None = None) -> list[str]:
    """Run ids whose staging no live run will ever commit; the caller holds the commit lock.

    A run that reached its decision has a pending marker: `recover_runs` rolls it forward, never
    this. Any other staging folder is abandoned when its lease is free (its run died, or failed
    and ended), or, without a lease, when nothing in it changed for `STAGING_EXPIRY_SECONDS`.
    """
    root = join_path(output, STAGING_DIR)
    if not is_local(root) or not os.path.isdir(root):
        return []
    now = time.time() if now is None else now
    abandoned = []
    with os.scandir(root) as entries:
        folders = sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
    for run_id in folders:
        folder = join_path(root, run_id)
        if FileSystems.exists(pending_path(output, run_id)):
            continue
        lease = join_path(folder, LEASE_NAME)
        if os.path.exists(lease):
            if not _lease_is_held(lease):
                abandoned.append(run_id)
            continue
        newest = max([m.last_updated_in_seconds for m in list_files(folder, recursive=True)], default=0.0)
        if now - max(newest, os.path.getmtime(folder)) >= STAGING_EXPIRY_SECONDS:
            abandoned.append(run_id)
    return abandoned


def remove_abandoned_staging(output: str) -> list[str]:
    """Delete the staging of every abandoned run (see `abandoned_staging`); returns their ids."""
    abandoned = abandoned_staging(output)
    for run_id in abandoned:
        remove_staging(output, run_id)
    return abandoned


def remove_staging(output: str, run_id: str) -> None:
    """Delete the run's staging folder `OUTPUT/_staging/<run_id>/`, and never anything outside it.

    `child` and `delete_inside` raise `DeleteOutsideFolderError` for an id that is not one plain
    segment (`..`, `a/b`) or a path that normalizes outside the folder: a bug must not cost the output.
    """
    root = join_path(output, STAGING_DIR)
    staging = child(root, run_id)
    release_staging_lease(output, run_id)
    if "://" in staging:
        # Object stores have no folders to delete: every object under the prefix goes (files the
        # commit did not move, such as the originals of edited files or a failed bundle's output).
        leftovers = [m.path for m in list_files(staging, recursive=True)]
        if leftovers:
            delete_inside(staging, leftovers)
    elif FileSystems.exists(staging):
        delete_inside(root, [staging])
    if "://" not in root and FileSystems.exists(root):
        with contextlib.suppress(OSError):
            os.rmdir(root)  # only when no other run is staging
