"""WritePartitionedParquet and CommitRun: Hive-partitioned Parquet that readers only see complete.

Writing has two steps, both inside the pipeline (so that they also run on Dataflow, where the
launcher exits after submitting):

1. `WritePartitionedParquet` buffers each bundle's records per partition and writes them as
   Parquet files under `OUTPUT/_staging/<run_id>/<dataset>/<partition>/`, outside the datasets
   (DuckDB's `**/*.parquet` reads dot-files too, so a hidden temp name inside would be read). It
   emits one small `StagedFile` record per file.
2. `CommitRun` gathers every staged file of the run (all datasets), writes the run manifest
   `OUTPUT/_runs/<run_id>.json` with status `committing` and the list of moves, renames each file
   into `OUTPUT/<dataset>/<key>=<value>/...`, then marks the manifest `committed` and removes
   the staging folder. A commit interrupted half way is rolled forward from its manifest.

Partition values are escaped the way Hive escapes them, so no input can write outside OUTPUT.
Beam's FileSystems API does the IO, so `gs://` and `s3://` outputs work as local ones do.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToListCombineFn
from apache_beam.transforms.core import CombineGlobally
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

STAGING_DIR = "_staging"
RUNS_DIR = "_runs"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
MAX_PARTITION_VALUE_CHARS = 100
# Characters Hive itself escapes in partition values, plus any non-ASCII and control character.
_SAFE_PARTITION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+@,")


@dataclass(frozen=True)
class ParquetSettings:
    compression: str = "zstd"
    compression_level: int = 3
    row_group_size: int = 64_000
    max_buffered_rows: int = 50_000  # per bundle; a full buffer is written as files


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


def escape_partition_value(value: Any) -> str:
    """A partition value that is one safe path segment: Hive-style %XX escapes, bounded length.

    `..`, `/`, `%2F`, empty and very long values all stay inside their dataset folder.
    """
    if value is None:
        return NULL_PARTITION
    text = str(value)
    if text == "":
        return NULL_PARTITION
    escaped = "".join(
        ch if ch in _SAFE_PARTITION_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in text
    )
    if escaped.startswith("."):  # no hidden segments and never "." or ".."
        escaped = "%2E" + escaped[1:]
    if len(escaped) > MAX_PARTITION_VALUE_CHARS:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        escaped = f"{escaped[: MAX_PARTITION_VALUE_CHARS - 17]}~{digest}"
    return escaped


def partition_path(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "/".join(f"{key}={escape_partition_value(record.get(key))}" for key in keys)


def records_to_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {name: [r.get(name) for r in records] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


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
    ) -> None:
        self._output = output
        self._dataset = dataset
        # Hive layout: partition values live in the folder names, not in the files, as every
        # engine (Spark, BigQuery, Athena) expects.
        self._schema = pa.schema(
            [f for f in schema if f.name not in partition_keys], metadata=schema.metadata
        )
        self._keys = partition_keys
        self._run_id = run_id
        self._settings = settings
        self._rows = Metrics.counter("write", f"{dataset}_rows")
        self._files = Metrics.counter("write", f"{dataset}_files")

    def start_bundle(self) -> None:
        self._buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._buffered = 0
        self._bundle = uuid.uuid4().hex[:12]
        self._sequence = 0

    def process(self, record: dict[str, Any]) -> Iterator[StagedFile]:
        self._buffers[partition_path(record, self._keys)].append(record)
        self._buffered += 1
        if self._buffered >= self._settings.max_buffered_rows:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for staged in self._flush():
            yield WindowedValue(staged, MAX_TIMESTAMP, (GlobalWindow(),))

    def _flush(self) -> Iterator[StagedFile]:
        for partition, records in self._buffers.items():
            name = f"part-{self._run_id}-{self._bundle}-{self._sequence:04d}.parquet"
            self._sequence += 1
            staged_path = join_path(self._output, STAGING_DIR, self._run_id, self._dataset, partition, name)
            write_parquet(records_to_table(records, self._schema), staged_path, self._settings)
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
        self._buffers = defaultdict(list)
        self._buffered = 0


class WritePartitionedParquet(beam.PTransform):
    """Records -> Parquet files in staging, one `StagedFile` each; `CommitRun` publishes them."""

    def __init__(
        self,
        output: str,
        dataset: str,
        schema: pa.Schema,
        partition_keys: tuple[str, ...],
        run_id: str,
        settings: ParquetSettings | None = None,
    ) -> None:
        super().__init__()
        self._fn = _StageFilesFn(
            output, dataset, schema, partition_keys, run_id, settings or ParquetSettings()
        )

    def expand(self, records: PCollection) -> PCollection:
        return records | "StageParquetFiles" >> beam.ParDo(self._fn)


# --- commit -------------------------------------------------------------------------------------


def manifest_path(output: str, run_id: str) -> str:
    return join_path(output, RUNS_DIR, f"{run_id}.json")


def write_json_atomically(path: str, document: dict[str, Any]) -> None:
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with FileSystems.create(temporary) as stream:
        stream.write(json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8"))
    _ensure_parent(path)
    if FileSystems.exists(path):
        FileSystems.delete([path])  # object stores cannot rename over an existing object
    FileSystems.rename([temporary], [path])


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


def publish(moves: list[dict[str, Any]]) -> int:
    """Rename staged files to their final paths; files already moved (a resumed commit) are skipped."""
    moved = 0
    for move in moves:
        staged, final = move["staged_path"], move["final_path"]
        if FileSystems.exists(staged):
            _ensure_parent(final)
            FileSystems.rename([staged], [final])
            moved += 1
        elif not FileSystems.exists(final):
            raise FileNotFoundError(f"staged file {staged} is missing and was never published to {final}")
    return moved


def commit_run(
    output: str, run_id: str, started_at: datetime, inputs: list[str], files: Iterable[StagedFile]
) -> dict[str, Any]:
    """Publish a run's staged files under the protocol in the module docstring; returns the manifest."""
    files = sorted(files, key=lambda f: f.final_path)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for staged in files:
        counts[staged.dataset]["rows"] += staged.rows
        counts[staged.dataset]["files"] += 1
        for part in staged.partition.split("/"):
            key, _, value = part.partition("=")
            if key != "ingest_date":
                counts[staged.dataset][f"{key}={value}"] += staged.rows
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "committing",
        "started_at": started_at.isoformat(),
        "commit_started_at": datetime.now(UTC).isoformat(),
        "inputs": inputs,
        "counts": {dataset: dict(c) for dataset, c in counts.items()},
        "files": [asdict(f) | {"rows_per_source": None} for f in files],
    }
    path = manifest_path(output, run_id)
    write_json_atomically(path, manifest)
    publish(manifest["files"])
    manifest["status"] = "committed"
    manifest["ended_at"] = datetime.now(UTC).isoformat()
    write_json_atomically(path, manifest)
    remove_staging(output, run_id)
    return manifest


def remove_staging(output: str, run_id: str) -> None:
    staging = join_path(output, STAGING_DIR, run_id)
    if FileSystems.exists(staging):
        FileSystems.delete([staging])
    root = join_path(output, STAGING_DIR)
    if "://" not in root and FileSystems.exists(root):
        try:
            import os

            os.rmdir(root)  # only when no other run is staging
        except OSError:
            pass


class _CommitFn(beam.DoFn):
    def __init__(self, output: str, run_id: str, started_at: datetime, inputs: list[str]) -> None:
        self._output, self._run_id, self._started_at, self._inputs = output, run_id, started_at, inputs

    def process(self, files: list[StagedFile]) -> Iterator[dict[str, Any]]:
        yield commit_run(self._output, self._run_id, self._started_at, self._inputs, files)


class CommitRun(beam.PTransform):
    """All staged files of the run -> published datasets and the run manifest (one element)."""

    def __init__(self, output: str, run_id: str, started_at: datetime, inputs: list[str]) -> None:
        super().__init__()
        self._fn = _CommitFn(output, run_id, started_at, inputs)

    def expand(self, staged: PCollection) -> PCollection:
        return (
            staged
            | "GatherStagedFiles" >> CombineGlobally(ToListCombineFn())
            | "PublishAndWriteManifest" >> beam.ParDo(self._fn)
        )
