"""WritePartitionedParquet and CommitRun: Hive-partitioned Parquet that readers only see complete.

Writing has two steps, both inside the pipeline (so that they also run on Dataflow, where the
launcher exits after submitting):

1. `WritePartitionedParquet` buffers each bundle's records per partition and writes them as
   Parquet files under `OUTPUT/_staging/<run_id>/<dataset>/<partition>/`, outside the datasets
   (DuckDB's `**/*.parquet` reads dot-files too, so a hidden temp name inside would be read). It
   emits one small `StagedFile` record per file.
2. `CommitRun` gathers every staged file of the run (all datasets, and the run's delta of the
   version index, see transforms/store.py) and, under the commit lock: rolls forward commits a
   crash interrupted, reconciles with runs that committed since this one read the index, writes a
   pending marker `OUTPUT/_runs/_pending/<run_id>` and the run manifest
   `OUTPUT/_runs/<run_id>.json` with status `committing` and the list of moves (the decision),
   renames each file into `OUTPUT/<dataset>/<key>=<value>/...`, marks the manifest `committed`,
   and removes the staging folder and the marker. A commit interrupted after its decision is
   rolled forward from its manifest (`recover_runs`) by the next run, compact or prune.

`apply_manifest` carries out the same protocol for `newsbeam compact` and `newsbeam prune`, whose
manifests also retire replaced files (`retired`: moves into `OUTPUT/_trash/`). Between the first
and the last rename readers listing the folders may see part of a commit (the exposure window,
documented in the README); they never see a temporary or partial file.

Partition values are escaped the way Hive escapes them, so no input can write outside OUTPUT.
Beam's FileSystems API does the IO, so `gs://` and `s3://` outputs work as local ones do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToListCombineFn
from apache_beam.transforms.core import CombineGlobally
from apache_beam.transforms.window import GlobalWindows

from transforms.fetch import redact_url
from transforms.paths import child, delete_inside, list_files, validate_run_id
from transforms.schema import Stage, dead_letter, entry_ref, escaped_text
from transforms.store import (
    INDEX_DATASET,
    INDEX_SCHEMA,
    CommitLock,
    fault_point,
    is_local,
    latest_versions,
    list_index_files,
    next_version,
    read_index,
    read_parquet,
)

STAGING_DIR = "_staging"
RUNS_DIR = "_runs"
PENDING_DIR = "_pending"  # markers of commits under way: what recovery looks at
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# The longest folder name most filesystems allow (NAME_MAX, in bytes), for the whole `key=value`.
MAX_PARTITION_SEGMENT_BYTES = 255
_DIGEST_CHARS = 16
# ASCII characters kept as they are; every other ASCII character is %XX-escaped (Hive escapes a
# subset of them). Other characters are kept when they are letters, marks or digits of any script
# (Hive keeps them too): an IDN host stays readable and short. Spaces, controls, format characters
# (bidi overrides) and symbols or punctuation of any script (fullwidth or division slashes) are escaped.
_SAFE_PARTITION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+@,")
_KEPT_CATEGORIES = ("L", "M", "N")


@dataclass(frozen=True)
class ParquetSettings:
    compression: str = "zstd"
    compression_level: int = 3
    row_group_size: int = 64_000
    max_buffered_rows: int = 10_000  # per bundle; a full buffer writes its largest partition


ROW_REFS = "row_refs"
DEAD_LETTERS = "dead_letters"
DEAD_LETTER_DATASET = "dead_letters"  # where the streaming writer puts the dead letters of rejected rows
# (the records of one staged file, its staged path) -> one element per file (transforms/dedupe.py
# writes the file's refs to staging and gives their path: per-article data never waits in the runner).
RowRefs = Callable[[list[dict[str, Any]], str], Any]


@dataclass(frozen=True)
class StagedFile:
    """One Parquet file written to staging, waiting for the run's commit."""

    dataset: str
    partition: str  # e.g. "ingest_date=2026-11-29/language=en"
    staged_path: str
    final_path: str
    rows: int
    rows_per_source: dict[str, int] = field(default_factory=dict)


def join_path(*parts: str) -> str:
    """Join paths for local folders and object-store URLs alike."""
    head, *rest = parts
    if "://" in head:
        return posixpath.join(head, *rest)
    return FileSystems.join(head, *rest)


def _escape_character(ch: str) -> str:
    if ch in _SAFE_PARTITION_CHARS or (not ch.isascii() and unicodedata.category(ch)[0] in _KEPT_CATEGORIES):
        return ch
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def escape_partition_value(value: Any, max_bytes: int = MAX_PARTITION_SEGMENT_BYTES) -> str:
    """A partition value that is one safe path segment of at most `max_bytes` UTF-8 bytes.

    Hive-style %XX escapes (which DuckDB's `hive_partitioning` and `pyarrow.dataset` decode), so
    `..`, `/`, `%2F` and empty values all stay inside their dataset folder and read back exactly.
    Only a value whose escaped form is longer than `max_bytes` is cut, at a whole character, and
    ends in `~` and a digest of the value (a literal `~` is escaped, so the two never meet): distinct
    long values stay distinct, but they no longer read back exactly.
    """
    if value is None:
        return NULL_PARTITION
    text = str(value)
    if text == "":
        return NULL_PARTITION
    pieces = [_escape_character(ch) for ch in text]
    if pieces[0] == ".":  # no hidden segments and never "." or ".."
        pieces[0] = "%2E"
    escaped = "".join(pieces)
    if len(escaped.encode("utf-8")) <= max_bytes:
        return escaped
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    budget, head = max_bytes - _DIGEST_CHARS - 1, []
    for piece in pieces:  # whole pieces only: never a %XX or a UTF-8 sequence cut in two
        budget -= len(piece.encode("utf-8"))
        if budget < 0:
            break
        head.append(piece)
    return f"{''.join(head)}~{digest}"


def partition_path(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """`key=value/...` folders, each segment at most `MAX_PARTITION_SEGMENT_BYTES` bytes."""
    segments = []
    for key in keys:
        budget = MAX_PARTITION_SEGMENT_BYTES - len(key.encode("utf-8")) - 1  # the `key=` comes first
        segments.append(f"{key}={escape_partition_value(record.get(key), budget)}")
    return "/".join(segments)


def records_to_table(
    records: list[dict[str, Any]], schema: pa.Schema, defaults: Mapping[str, Any] | None = None
) -> pa.Table:
    """Records as an Arrow table; a column the records lack takes its value from `defaults`."""
    defaults = defaults or {}
    columns = {name: [r.get(name, defaults.get(name)) for r in records] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


# What Arrow raises for a value its column cannot hold: a lone surrogate in a string
# (UnicodeEncodeError), a number out of the type's range (ArrowInvalid), a wrong type (ArrowTypeError).
CONVERSION_ERRORS = (pa.ArrowException, UnicodeError, ValueError, TypeError, OverflowError)


@dataclass(frozen=True)
class RejectedRecord:
    """A record Arrow cannot convert: the first column (in schema order) that fails, and why."""

    record: dict[str, Any]
    column: str
    error: Exception


def convert_records(
    records: list[dict[str, Any]], schema: pa.Schema, defaults: Mapping[str, Any] | None = None
) -> tuple[pa.Table, list[dict[str, Any]], list[RejectedRecord]]:
    """(table of the records Arrow accepts, those records in table order, the rejected ones).

    The whole batch is converted at once; only when that fails is each column tried on its own,
    and each value of a failing column, to find the bad records (cost in the failure path only).
    """
    try:
        return records_to_table(records, schema, defaults), records, []
    except CONVERSION_ERRORS as batch_error:
        failure = batch_error
    defaults = defaults or {}
    bad: dict[int, RejectedRecord] = {}
    for column in schema:
        values = [r.get(column.name, defaults.get(column.name)) for r in records]
        try:
            pa.array(values, column.type)
            continue
        except CONVERSION_ERRORS:
            pass
        for index, value in enumerate(values):
            if index in bad:
                continue
            try:
                pa.array([value], column.type)
            except CONVERSION_ERRORS as error:
                bad[index] = RejectedRecord(records[index], column.name, error)
    if not bad:  # no single value is to blame: nothing to set aside, fail as the batch failed
        raise failure
    good = [record for index, record in enumerate(records) if index not in bad]
    return records_to_table(good, schema, defaults), good, [bad[index] for index in sorted(bad)]


def rejected_dead_letter(dataset: str, rejected: RejectedRecord) -> dict[str, Any]:
    """The `write` dead letter of an entry (an article) Arrow rejected: counted in its source's books."""
    record = rejected.record
    return dead_letter(
        Stage.WRITE,
        type(rejected.error).__name__,
        f"{dataset} column `{rejected.column}`: {rejected.error}",
        str(record.get("source") or ""),
        str(record.get("source_type") or ""),
        entry_ref=entry_ref(record),
        data=repr(record),
    )


class RecordRejectedError(ValueError):
    """A record of a dataset whose records must all be written (not entries) that Arrow rejects."""


def refuse_records(dataset: str, rejected: list[RejectedRecord]) -> RecordRejectedError:
    first = rejected[0]
    return RecordRejectedError(
        f"{len(rejected)} {dataset} record(s) cannot be written, the first (source "
        f"{escaped_text(str(first.record.get('source')))}) in column `{first.column}`: {first.error}"
    )


def write_parquet(table: pa.Table, path: str, settings: ParquetSettings) -> None:
    with FileSystems.create(path) as stream:
        pq.write_table(
            table,
            stream,
            compression=settings.compression,
            compression_level=settings.compression_level,
            row_group_size=settings.row_group_size,
            use_dictionary=True,
            write_statistics=True,
        )


class _StageFilesFn(beam.DoFn):
    def __init__(
        self,
        output: str,
        dataset: str,
        schema: pa.Schema,
        partition_keys: tuple[str, ...],
        run_id: str,
        settings: ParquetSettings,
        defaults: Mapping[str, Any] | None = None,
        row_refs: RowRefs | None = None,
        rejects_to_dead_letters: bool = False,
    ) -> None:
        self._output = output
        self._dataset = dataset
        self._defaults = dict(defaults or {})
        self._row_refs = row_refs
        self._rejects_to_dead_letters = rejects_to_dead_letters
        # Hive layout: partition values live in the folder names, not in the files, as every
        # engine (Spark, BigQuery, Athena) expects.
        self._schema = pa.schema(
            [f for f in schema if f.name not in partition_keys], metadata=schema.metadata
        )
        self._keys = partition_keys
        self._run_id = validate_run_id(run_id)
        self._settings = settings
        self._rows = Metrics.counter("write", f"{dataset}_rows")
        self._files = Metrics.counter("write", f"{dataset}_files")
        self._rejected = Metrics.counter("write", f"{dataset}_dead_letters")

    def start_bundle(self) -> None:
        self._buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._buffered = 0
        self._bundle = uuid.uuid4().hex[:12]
        self._sequence = 0

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        self._buffers[partition_path(record, self._keys)].append(record)
        self._buffered += 1
        if self._buffered >= self._settings.max_buffered_rows:
            # A full buffer writes its largest partition: memory stays bounded and files stay large;
            # the small partitions wait for the end of the bundle.
            largest = max(self._buffers, key=lambda partition: len(self._buffers[partition]))
            records = self._buffers.pop(largest)
            self._buffered -= len(records)
            yield from self._write(largest, records)

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
        for partition, records in self._buffers.items():
            yield from self._write(partition, records)
        self._buffers = defaultdict(list)
        self._buffered = 0

    def _write(self, partition: str, records: list[dict[str, Any]]) -> Iterator[Any]:
        table, records, rejected = convert_records(records, self._schema, self._defaults)
        if rejected and not self._rejects_to_dead_letters:
            raise refuse_records(self._dataset, rejected)
        for bad in rejected:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, rejected_dead_letter(self._dataset, bad))
        if not records:
            return
        name = f"part-{self._run_id}-{self._bundle}-{self._sequence:04d}.parquet"
        self._sequence += 1
        staged_path = join_path(self._output, STAGING_DIR, self._run_id, self._dataset, partition, name)
        write_parquet(table, staged_path, self._settings)
        per_source: dict[str, int] = defaultdict(int)
        for record in records:
            per_source[record.get("source") or ""] += 1
        self._rows.inc(len(records))
        self._files.inc()
        yield StagedFile(
            self._dataset,
            partition,
            staged_path,
            join_path(self._output, self._dataset, partition, name),
            len(records),
            dict(per_source),
        )
        if self._row_refs is not None:
            yield beam.pvalue.TaggedOutput(ROW_REFS, self._row_refs(records, staged_path))


class StagedOutputs(NamedTuple):
    """What `WritePartitionedParquet` gives: staged files, row refs of each (empty without `row_refs`) and
    the `write` dead letters of records Arrow rejected (empty unless `rejects_to_dead_letters`)."""

    files: PCollection
    row_refs: PCollection
    dead_letters: PCollection


class WritePartitionedParquet(beam.PTransform):
    """Records -> Parquet files in staging, one `StagedFile` each; `CommitRun` publishes them.

    `defaults` fills the columns the records lack. With `row_refs`, `row_refs(records, staged path)`
    comes out for every file written (its records in row order): compact references that later
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
        self._fn = _StageFilesFn(
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

    def expand(self, records: PCollection) -> StagedOutputs:
        staged = records | "StageParquetFiles" >> beam.ParDo(self._fn).with_outputs(
            ROW_REFS, DEAD_LETTERS, main="files"
        )
        return StagedOutputs(staged.files, staged[ROW_REFS], staged[DEAD_LETTERS])


# --- commit -------------------------------------------------------------------------------------


def manifest_path(output: str, run_id: str) -> str:
    return join_path(output, RUNS_DIR, f"{run_id}.json")


def pending_folder(output: str) -> str:
    return join_path(output, RUNS_DIR, PENDING_DIR)


def pending_path(output: str, run_id: str) -> str:
    return join_path(pending_folder(output), run_id)


def write_json_atomically(path: str, document: dict[str, Any]) -> None:
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    _ensure_parent(temporary)
    with FileSystems.create(temporary) as stream:
        stream.write(json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8"))
    if "://" in path:
        if FileSystems.exists(path):
            delete_inside(posixpath.dirname(path), [path])  # object stores cannot rename over an object
        FileSystems.rename([temporary], [path])
    else:
        os.replace(temporary, path)  # atomic on POSIX: readers see the old or the new manifest


def read_json(path: str) -> dict[str, Any]:
    with FileSystems.open(path) as stream:
        document: dict[str, Any] = json.loads(stream.read().decode("utf-8"))
        return document


def _ensure_parent(path: str) -> None:
    # LocalFileSystem.rename does not create the target's folder (the trap that makes Beam's
    # fileio lose files silently); object stores have no folders to create.
    if "://" not in path:
        parent = posixpath.dirname(path)
        if parent and not FileSystems.exists(parent):
            try:
                FileSystems.mkdirs(parent)
            except OSError:  # created meanwhile by another worker
                if not FileSystems.exists(parent):
                    raise


def publish(moves: list[dict[str, Any]], fault_prefix: str = "", strict: bool = True) -> int:
    """Rename staged files to their final paths; files already moved (a resumed commit) are skipped.

    With `strict`, a file found at neither end is an error (a staged file lost before its commit);
    without, it is skipped (a retired file whose trash was already emptied).
    """
    moved = 0
    for number, move in enumerate(moves, start=1):
        staged, final = move["staged_path"], move["final_path"]
        if FileSystems.exists(staged):
            _ensure_parent(final)
            FileSystems.rename([staged], [final])
            moved += 1
        elif strict and not FileSystems.exists(final):
            raise FileNotFoundError(f"staged file {staged} is missing and was never published to {final}")
        if fault_prefix:
            fault_point(f"{fault_prefix}.{number}")
    return moved


def count_files(files: Iterable[StagedFile]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for staged in files:
        counts[staged.dataset]["rows"] += staged.rows
        counts[staged.dataset]["files"] += 1
        for part in staged.partition.split("/"):
            key, _, value = part.partition("=")
            if key and key != "ingest_date":
                counts[staged.dataset][f"{key}={value}"] += staged.rows
    return {dataset: dict(c) for dataset, c in counts.items()}


def apply_manifest(output: str, manifest: dict[str, Any], fault_prefix: str = "commit") -> dict[str, Any]:
    """Carry out a manifest's moves under the roll-forward protocol; the caller holds the commit lock.

    1. a pending marker, then the manifest with status `committing` (the decision: from here on
       the moves are rolled forward by whoever finds the marker);
    2. renames of `files` (staged -> final), then of `retired` (replaced files -> trash);
    3. the manifest with status `committed`, the staging folder and the marker removed.
    """
    run_id = manifest["run_id"]
    marker = pending_path(output, run_id)
    _ensure_parent(marker)
    with FileSystems.create(marker) as stream:
        stream.write(run_id.encode("utf-8"))
    manifest = {**manifest, "status": "committing", "commit_started_at": datetime.now(UTC).isoformat()}
    write_json_atomically(manifest_path(output, run_id), manifest)
    fault_point(f"{fault_prefix}.manifest_written")
    return finish_commit(output, manifest, fault_prefix)


def finish_commit(output: str, manifest: dict[str, Any], fault_prefix: str = "") -> dict[str, Any]:
    """Steps 2 and 3 of `apply_manifest`: also the roll-forward of an interrupted commit."""
    run_id = manifest["run_id"]
    publish(manifest.get("files", []), f"{fault_prefix}.publish" if fault_prefix else "")
    publish(manifest.get("retired", []), strict=False)
    if fault_prefix:
        fault_point(f"{fault_prefix}.published")
    manifest = {**manifest, "status": "committed", "ended_at": datetime.now(UTC).isoformat()}
    write_json_atomically(manifest_path(output, run_id), manifest)
    if fault_prefix:
        fault_point(f"{fault_prefix}.committed")
    remove_staging(output, run_id)
    marker = pending_path(output, run_id)
    if FileSystems.exists(marker):
        delete_inside(pending_folder(output), [marker])
    return manifest


def recover_runs(output: str) -> list[str]:
    """Roll forward every commit left `committing` by a crash; the caller holds the commit lock.

    Returns the ids rolled forward. Markers of commits that never wrote their manifest (the crash
    came before the decision) are removed: those runs never happened for readers.
    """
    recovered = []
    for match in list_files(pending_folder(output)):
        run_id = posixpath.basename(match.path)
        path = manifest_path(output, run_id)
        if FileSystems.exists(path):
            manifest = read_json(path)
            if manifest.get("status") == "committing":
                finish_commit(output, {**manifest, "recovered_at": datetime.now(UTC).isoformat()})
                recovered.append(run_id)
                continue
        # Committed but not cleaned up, or dead before its decision: the staged files are garbage
        # (the marker is written under the lock, so its run is not committing any more).
        remove_staging(output, run_id)
        delete_inside(pending_folder(output), [match.path])
    remove_abandoned_staging(output)
    # A manifest is written to a temporary name and renamed, under the lock: a temporary name
    # found now belongs to a writer that died (a full disk, a kill) before its rename.
    runs = join_path(output, RUNS_DIR)
    dead_temporaries = [m.path for m in list_files(runs, ".tmp")]
    if dead_temporaries:
        delete_inside(runs, dead_temporaries)
    return recovered


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


def reconcile_with_store(
    output: str, files: list[StagedFile], snapshot: list[str]
) -> tuple[list[StagedFile], int]:
    """Staged files made consistent with index deltas committed since this run read the index.

    Returns them and how many articles were dropped or renumbered.

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
            table, per_source = renumber_versions(table, decisions)
            for source, n in per_source.items():
                dropped[source] += n if staged.dataset != INDEX_DATASET else 0
            staged = _rewrite(staged, table)
        if staged.rows:
            result.append(staged)
    final = []
    for staged in result:
        table = read_parquet(staged.staged_path)
        if {"already_stored", "articles_written"} <= set(table.column_names):
            staged = _rewrite(staged, move_to_already_stored(table, dropped))
        final.append(staged)
    return final, len(decisions)


def renumber_versions(table: pa.Table, decisions: dict[str, int]) -> tuple[pa.Table, dict[str, int]]:
    """Rows whose id is decided 0 dropped, others given their decided version; dropped per source."""
    ids = table.column("article_id").to_pylist()
    versions = table.column("version").to_pylist()
    sources = table.column("source").to_pylist() if "source" in table.column_names else [""] * len(ids)
    keep: list[int] = []
    dropped: dict[str, int] = defaultdict(int)
    for index, article_id in enumerate(ids):
        decided = decisions.get(article_id)
        if decided == 0:
            dropped[sources[index] or ""] += 1
            continue
        if decided is not None:
            versions[index] = decided
        keep.append(index)
    position = table.column_names.index("version")
    table = table.set_column(position, table.field("version"), pa.array(versions, pa.int32()))
    return table.take(pa.array(keep, pa.int64())), dict(dropped)


def move_to_already_stored(table: pa.Table, dropped: dict[str, int]) -> pa.Table:
    """Fetch rows with `dropped` entries per source moved from `articles_written` to `already_stored`."""
    rows = table.to_pylist()
    for row in rows:
        n = dropped.get(row["source"] or "", 0)
        if n:
            row["articles_written"] = (row["articles_written"] or 0) - n
            row["already_stored"] = (row["already_stored"] or 0) + n
    return pa.Table.from_pylist(rows, schema=table.schema)


def _rewrite(staged: StagedFile, table: pa.Table) -> StagedFile:
    delete_inside(posixpath.dirname(staged.staged_path), [staged.staged_path])
    if table.num_rows:
        write_parquet(table, staged.staged_path, ParquetSettings())
    return replace(staged, rows=table.num_rows, rows_per_source={})


def commit_run(
    output: str,
    run_id: str,
    started_at: datetime,
    inputs: list[str],
    files: Iterable[StagedFile],
    snapshot: list[str] | None = None,
    lock_timeout: float = 600.0,
) -> dict[str, Any]:
    """Publish a run's staged files under the protocol in the module docstring; returns the manifest.

    Runs under the commit lock: first rolls forward any commit a crash interrupted, then (with the
    store `snapshot`) reconciles with runs committed meanwhile, then publishes. A run id that is
    already committed (a retried commit step) is not published twice.
    """
    validate_run_id(run_id)
    fault_point("commit.waiting")
    with CommitLock(output, f"run {run_id}", timeout=lock_timeout):
        fault_point("commit.locked")
        recover_runs(output)
        path = manifest_path(output, run_id)
        if FileSystems.exists(path) and read_json(path).get("status") == "committed":
            remove_staging(output, run_id)
            return read_json(path)
        files, reconciled = list(files), 0
        if snapshot is not None:
            files, reconciled = reconcile_with_store(output, files, snapshot)
        files = sorted(files, key=lambda f: f.final_path)
        lost = [f.staged_path for f in files if not FileSystems.exists(f.staged_path)]
        if lost:  # before the decision: a manifest naming a lost file could never be rolled forward
            raise FileNotFoundError(
                f"run {run_id}: {len(lost)} staged files are gone (e.g. {lost[0]}; was its staging "
                "removed as abandoned?); nothing was published, run it again"
            )
        manifest: dict[str, Any] = {
            "run_id": run_id,
            "kind": "run",
            "started_at": started_at.isoformat(),
            "inputs": [redact_url(source) for source in inputs],
            "counts": count_files(files),
            "files": [asdict(f) | {"rows_per_source": None} for f in files],
            # Rows dropped or renumbered because another run committed them meanwhile.
            "reconciled": reconciled,
        }
        return apply_manifest(output, manifest, "commit")


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


class _CommitFn(beam.DoFn):
    def __init__(self, output: str, run_id: str, started_at: datetime, inputs: list[str]) -> None:
        self._output, self._run_id, self._started_at, self._inputs = output, run_id, started_at, inputs

    def process(
        self, files: list[StagedFile], snapshot: list[str] | None = None, unaccounted: int = 0
    ) -> Iterator[dict[str, Any]]:
        if unaccounted:
            # Staged files stay in _staging/ (outside every dataset); the next run clears them.
            raise RuntimeError(
                f"run {self._run_id}: {unaccounted} entries are neither written, duplicates, dead letters, "
                "already stored nor cut; refusing to commit (see feed_fetches in the staging folder)"
            )
        yield commit_run(self._output, self._run_id, self._started_at, self._inputs, files, snapshot)


class CommitRun(beam.PTransform):
    """All staged files of the run -> published datasets and the run manifest (one element).

    `snapshot`, when given, is the one-element PCollection of index files that
    `DeduplicateArticles` read; the commit reconciles with deltas committed after it.
    `unaccounted`, when given, is the one-element count of entries the run's books do not explain
    (`CountUnaccounted`): any other value than 0 fails the run before anything is published.
    """

    def __init__(
        self,
        output: str,
        run_id: str,
        started_at: datetime,
        inputs: list[str],
        snapshot: PCollection | None = None,
        unaccounted: PCollection | None = None,
    ) -> None:
        super().__init__()
        self._fn = _CommitFn(output, run_id, started_at, inputs)
        self._snapshot = snapshot
        self._unaccounted = unaccounted

    def expand(self, staged: PCollection) -> PCollection:
        gathered = staged | "GatherStagedFiles" >> CombineGlobally(ToListCombineFn())
        side_inputs: dict[str, Any] = {}
        if self._snapshot is not None:
            side_inputs["snapshot"] = beam.pvalue.AsSingleton(self._snapshot)
        if self._unaccounted is not None:
            side_inputs["unaccounted"] = beam.pvalue.AsSingleton(self._unaccounted)
        return gathered | "PublishAndWriteManifest" >> beam.ParDo(self._fn, **side_inputs)


class WriteVersionIndex(beam.PTransform):
    """Index rows (or written articles) -> the staged version-index delta (`OUTPUT/_state/articles/`)."""

    def __init__(self, output: str, run_id: str, settings: ParquetSettings | None = None) -> None:
        super().__init__()
        self._write = WritePartitionedParquet(output, INDEX_DATASET, INDEX_SCHEMA, (), run_id, settings)

    def expand(self, articles: PCollection) -> PCollection:
        return (articles | "StageIndexDelta" >> self._write).files  # the writer keeps the index's columns
