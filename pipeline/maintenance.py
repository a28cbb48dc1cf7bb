"""Maintenance of an output folder: recovery before a run, `newsbeam compact` and `newsbeam prune`.

All three change the datasets only through the commit protocol of transforms/io/commit.py: a manifest
under `OUTPUT/_runs/` (`kind` compact or prune) lists new files to publish (`files`) and replaced
files to retire (`retired`, moved to `OUTPUT/_trash/<id>/`), carried out under the commit lock and
rolled forward after a crash. They take the lock only for that short publish step, so they can
run beside a long batch job or a stream (which take it for their own commits).

Retired files stay in `OUTPUT/_trash/<id>/` for a grace period (default one hour), so that a
reader that opened them keeps reading; each compact or prune empties the trash older than that.

    newsbeam compact --output /data/news                 # every partition with 2+ small files
    newsbeam prune --output /data/news --older-than 90d  # ingest_date partitions older than 90 days

Longer than ~400 lines for a reason: recovery, repair, compact, prune and the trash share one
operation shape (lease, plan, manifest of moves, trash) and its helpers; the storage they rest on
is in transforms/io/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.durations import parse_duration
from transforms.io.commit import apply_manifest, recover_runs
from transforms.io.faults import fault_point
from transforms.io.lock import CommitLock
from transforms.io.manifests import manifest_path, pending_path, read_json
from transforms.io.parquet import (
    ParquetSettings,
    open_parquet,
    read_parquet,
    read_parquet_metadata,
    read_parquet_schema,
    write_parquet,
    write_table_file,
)
from transforms.io.paths import (
    INDEX_DATASET,
    STAGING_DIR,
    TRASH_DIR,
    is_local,
    join_path,
    list_files,
    validate_run_id,
)
from transforms.io.staging import (
    StagingInUseError,
    check_staging_free,
    release_staging_lease,
    remove_staging,
    staging_lease,
    take_staging_lease,
)
from transforms.io.story_check import StoryDamage, rebuild_index, story_index_damage
from transforms.io.story_index import (
    BANDS,
    PRINTS,
    index_buckets,
    index_file_name,
    index_files,
    is_story_index,
    merge_bucket,
    partition_name,
    prune_index,
)
from transforms.io.versions import (
    INDEX_FIELDS,
    INDEX_SCHEMA,
    check_index,
    index_damage,
    index_dir,
    list_index_files,
)
from transforms.schema import DATASETS
from transforms.stories import DEFAULT_WINDOW

DEFAULT_GRACE = timedelta(hours=1)
# Files at least this big are left alone: compaction is for the many small files of frequent runs.
DEFAULT_LARGE_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_ROWS_PER_FILE = 1_000_000


class MaintenanceError(RuntimeError):
    pass


@dataclass
class MaintenanceReport:
    operation_id: str
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    retired: list[str] = field(default_factory=list)
    trash_emptied: int = 0
    damaged: list[str] = field(default_factory=list)  # repair: what was wrong
    story_files: int = 0  # repair: the story index's new files
    story_rows: int = 0  # repair: the articles filed in the story index

    def text(self, verb: str) -> str:
        return (
            f"newsbeam {verb} {self.operation_id}: {self.partitions} partitions, {self.files_before} files "
            f"-> {self.files_after}, {self.rows} rows; {self.trash_emptied} expired trash folders emptied"
        )


def operation_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def parse_age(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `90d`, `2w` -> a timedelta (the one grammar of `pipeline.durations`)."""
    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as error:
        raise MaintenanceError(str(error)) from None


# --- recovery -------------------------------------------------------------------------------------


def prepare_run(output: str, run_id: str, lock_timeout: float = 600.0) -> dict[str, Any] | None:
    """Before a run: roll forward interrupted commits and clear this run id's partial staging.

    Returns the manifest when `run_id` is already committed (a retry after a crash that came after
    the commit): the run has nothing left to do. Otherwise this process holds the run's staging
    lease (transforms/io/staging.py) until the commit removes the staging or `release_staging_lease`.
    """
    validate_run_id(run_id)
    with CommitLock(output, f"recovery before run {run_id}", timeout=lock_timeout):
        recover_runs(output)  # also removes the staging of runs that died before their decision
        path = manifest_path(output, run_id)
        if FileSystems.exists(path):
            manifest = read_json(path)
            if manifest.get("status") == "committed":
                return manifest
        try:
            check_staging_free(output, run_id)
        except StagingInUseError as error:
            raise MaintenanceError(str(error)) from None
        remove_staging(output, run_id)  # a failed attempt's files: this attempt replaces them
        check_index(output)
        take_staging_lease(output, run_id)  # released when the commit removes the staging
    return None


# --- the version index: repaired from the article files -----------------------------------------


def index_rows_of_articles(path: str, dataset_root: str) -> pa.Table:
    """The version-index rows of one article file: its columns, and `ingest_date` from its folder."""
    names = set(read_parquet_schema(path).names)
    wanted = [name for name in INDEX_FIELDS if name in names and name != "ingest_date"]
    table = read_parquet(path, columns=wanted)
    ingest_date = None
    for segment in path[len(dataset_root) :].strip("/").split("/")[:-1]:
        key, _, value = segment.partition("=")
        if key == "ingest_date":
            ingest_date = unquote(value)
    columns = []
    for field_ in INDEX_SCHEMA:
        if field_.name == "ingest_date":
            columns.append(pa.array([ingest_date] * table.num_rows, field_.type))
        elif field_.name in table.column_names:
            columns.append(table.column(field_.name).cast(field_.type))
        elif field_.name == "version":  # files of schema 1 predate versions: each row is version 1
            columns.append(pa.array([1] * table.num_rows, field_.type))
        else:
            columns.append(pa.nulls(table.num_rows, field_.type))
    return pa.Table.from_arrays(columns, schema=INDEX_SCHEMA)


def repair_index(
    output: str,
    settings: ParquetSettings | None = None,
    lock_timeout: float = 600.0,
    force: bool = False,
    story_window: timedelta = DEFAULT_WINDOW,
) -> MaintenanceReport:
    """Rebuild the version index from the article files, and the story index from the `stories`
    dataset and the articles' recomputed fingerprints, under the commit lock.

    An index that is whole is left alone (unless `force`). A damaged one is replaced as a whole (its
    missing, broken and sound deltas alike) in one manifest of kind `repair`, so the replaced deltas
    go to the trash and the manifests agree with the indexes again.
    """
    settings = settings or ParquetSettings()
    op = operation_id("repair")
    report = MaintenanceReport(op)
    with CommitLock(output, f"repair {op}", timeout=lock_timeout), staging_lease(output, op):
        recover_runs(output)
        damage = index_damage(output)
        story_damage = story_index_damage(output)
        report.damaged = [f"{d.path} is {d.problem}" for d in damage]
        report.damaged += [f"{d.path} is {d.problem}" for d in story_damage]
        files: list[dict[str, Any]] = []
        retired: list[dict[str, Any]] = []
        try:
            if damage or force:
                files, retired = _rebuild_version_index(output, op, settings, damage, report)
            if story_damage or (force and index_files(output)):
                story_files, story_retired = _rebuild_story_index(
                    output, op, settings, story_damage, story_window
                )
                files += story_files
                retired += story_retired
                report.story_files = len(story_files)
                report.story_rows = sum(m["rows"] for m in story_files if m["dataset"] == PRINTS)
        except BaseException:
            remove_staging(output, op)  # the partial deltas; nothing was published
            raise
        if not files and not retired:
            return report
        fault_point("repair.locked")
        apply_manifest(output, _manifest(op, "repair", files, retired), "repair")
        report.retired = [m["staged_path"] for m in retired]
    return report


def _rebuild_version_index(
    output: str, op: str, settings: ParquetSettings, damage: list[Any], report: MaintenanceReport
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The version index from the article files: (its one new delta, the deltas it replaces)."""
    articles_root = join_path(output, "articles")
    name = f"part-{op}-0000.parquet"
    staged = join_path(output, STAGING_DIR, op, INDEX_DATASET, name)
    _ensure_folder(posixpath.dirname(staged))
    with FileSystems.create(staged) as stream, pq.ParquetWriter(stream, INDEX_SCHEMA) as writer:
        for path in list_parquet(articles_root):
            try:
                table = index_rows_of_articles(path, articles_root)
            except (OSError, pa.ArrowException) as error:
                raise MaintenanceError(
                    f"cannot rebuild the version index: the article file {path} cannot be read "
                    f"({error}); move it out of the output (or restore it), then repair again"
                ) from error
            writer.write_table(table, row_group_size=settings.row_group_size)
            report.rows += table.num_rows
    files = [_move(INDEX_DATASET, "", staged, join_path(index_dir(output), name), report.rows)]
    present = list_index_files(output)
    trash = join_path(output, TRASH_DIR, op, INDEX_DATASET)
    # The missing deltas are retired too (a retired file that is gone is skipped): their names
    # leave the set the manifests expect.
    replaced = sorted({*present, *(d.path for d in damage if d.problem == "missing")})
    retired = [_move(INDEX_DATASET, "", p, join_path(trash, posixpath.basename(p)), 0) for p in replaced]
    report.files_before, report.files_after = len(present), 1
    return files, retired


def _rebuild_story_index(
    output: str, op: str, settings: ParquetSettings, damage: list[StoryDamage], window: timedelta
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The story index rebuilt (transforms/io/story_index.py `rebuild_index`): (new files, retired)."""
    name = f"part-{op}-0000.parquet"
    files = []
    try:
        for story_file in rebuild_index(output, datetime.now(UTC), window):
            file_name = index_file_name(story_file.dataset, name)
            staged = join_path(output, STAGING_DIR, op, story_file.dataset, story_file.partition, file_name)
            write_table_file(story_file.table, staged, settings)
            final = join_path(output, story_file.dataset, story_file.partition, file_name)
            files.append(
                _move(story_file.dataset, story_file.partition, staged, final, story_file.table.num_rows)
            )
    except (OSError, pa.ArrowException) as error:
        raise MaintenanceError(
            f"cannot rebuild the story index from the stories and article files ({error}); restore "
            "the file it names (or move it out of the output), then repair again"
        ) from error
    retired = []
    missing = [d.path for d in damage if d.problem == "missing"]
    for path in sorted({*index_files(output), *missing}):
        dataset, partition = (BANDS if f"/{BANDS}/" in path else PRINTS), partition_name(path)
        trash = join_path(output, TRASH_DIR, op, dataset, partition, posixpath.basename(path))
        retired.append(_move(dataset, partition, path, trash, 0))
    return files, retired


def _ensure_folder(folder: str) -> None:
    if is_local(folder):
        os.makedirs(folder, exist_ok=True)


def run_repair(settings: Any, args: argparse.Namespace) -> int:
    """Repair `settings.output`'s index and say what was wrong and what was done; the exit code."""
    report = repair_index(
        settings.output,
        settings.stages.parquet,
        lock_timeout=args.lock_timeout,
        force=args.force,
        story_window=settings.stages.stories.window,
    )
    for problem in report.damaged:
        print(f"newsbeam repair: {problem}")
    if report.files_after == 0 and report.story_files == 0:
        print(f"newsbeam repair {settings.output}: the version index is whole; nothing to do")
    if report.story_files:
        print(
            f"newsbeam repair {report.operation_id}: the story index rebuilt from the stories and the "
            f"article files: {report.story_rows} articles in {report.story_files} files"
        )
    if report.files_after:
        print(
            f"newsbeam repair {report.operation_id}: the version index rebuilt from the article files: "
            f"{report.rows} rows in 1 file, replacing {report.files_before} files (moved to {TRASH_DIR}/)"
        )
    return 0


# --- listing --------------------------------------------------------------------------------------


def list_parquet(root: str) -> list[str]:
    """Every Parquet file under `root`, sorted (listed, never matched as a pattern)."""
    return [m.path for m in list_files(root, ".parquet", recursive=True)]


def partitions_of(output: str, dataset: str) -> dict[str, list[str]]:
    """Leaf partition (relative folder, e.g. `ingest_date=2026-11-29/language=en`) -> its files."""
    root = join_path(output, dataset)
    grouped: dict[str, list[str]] = {}
    for path in list_parquet(root):
        relative = posixpath.dirname(path[len(root) :].lstrip("/"))
        grouped.setdefault(relative, []).append(path)
    return grouped


def _size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(path)
    listed = [m for m in list_files(posixpath.dirname(path)) if m.path == path]
    return int(listed[0].size_in_bytes)


# --- compact --------------------------------------------------------------------------------------


def merged_schema(paths: list[str]) -> pa.Schema:
    """One schema for files of several schema versions: every column of each, newest file first."""
    schemas = [read_parquet_schema(path) for path in reversed(paths)]
    return pa.unify_schemas(schemas)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with every column of `schema`, in its order; missing columns are nulls."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def merge_files(
    paths: list[str], staged_folder: str, name_prefix: str, settings: ParquetSettings, rows_per_file: int
) -> list[tuple[str, str, int]]:
    """Copy the rows of `paths`, in order, into files of at most `rows_per_file` rows.

    Returns (staged path, file name, rows) per new file. Streams row group by row group through a
    Parquet writer, so memory holds one row group, whatever the partition's size.
    """
    schema = merged_schema(paths)
    written: list[tuple[str, str, int]] = []
    current: tuple[Any, Any, str, str] | None = None  # (stream, writer, path, name)
    rows = 0

    def close() -> None:
        nonlocal current, rows
        if current is not None:
            stream, writer, staged, name = current
            writer.close()
            stream.close()
            written.append((staged, name, rows))
        current, rows = None, 0

    for path in paths:
        with open_parquet(path) as source:
            reader = pq.ParquetFile(source)
            for group in range(reader.num_row_groups):
                table = conform(reader.read_row_group(group), schema)
                while table.num_rows:
                    if current is None:
                        name = f"{name_prefix}-{len(written):04d}.parquet"
                        staged = join_path(staged_folder, name)
                        stream = FileSystems.create(staged)
                        writer = pq.ParquetWriter(
                            stream,
                            schema,
                            compression=settings.compression,
                            compression_level=settings.compression_level,
                            use_dictionary=True,
                            write_statistics=True,
                        )
                        current = (stream, writer, staged, name)
                    take = min(table.num_rows, rows_per_file - rows)
                    current[1].write_table(table.slice(0, take), row_group_size=settings.row_group_size)
                    rows += take
                    table = table.slice(take)
                    if rows >= rows_per_file:
                        close()
    close()
    return written


def _merge_story_bucket(
    dataset: str, paths: list[str], staged_folder: str, name_prefix: str, settings: ParquetSettings
) -> list[tuple[str, str, int]]:
    """A story index bucket's deltas merged into one file sorted by key (the lookup's binary search
    needs it; a bucket is at most ~60 MB at a million indexed articles)."""
    table = merge_bucket(dataset, paths)
    name = index_file_name(dataset, f"{name_prefix}-0000.parquet")
    staged = join_path(staged_folder, name)
    write_table_file(table, staged, settings)
    return [(staged, name, table.num_rows)]


def compact(
    output: str,
    datasets: tuple[str, ...] = DATASETS,
    min_files: int = 2,
    large_file_bytes: int = DEFAULT_LARGE_FILE_BYTES,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    grace: timedelta = DEFAULT_GRACE,
    settings: ParquetSettings | None = None,
    lock_timeout: float = 600.0,
) -> MaintenanceReport:
    """Merge the small files of each partition (and the version index's deltas) into fewer files."""
    settings = settings or ParquetSettings()
    op = operation_id("compact")
    report = MaintenanceReport(op)
    with contextlib.ExitStack() as lease:
        with CommitLock(output, f"recovery before {op}", timeout=lock_timeout):
            recover_runs(output)  # an interrupted compaction is finished before planning this one
            check_index(output)  # merging a broken delta fails, naming no file
            take_staging_lease(output, op)  # it stages outside the lock: live till it ends
            lease.callback(release_staging_lease, output, op)
        files: list[dict[str, Any]] = []
        retired: list[dict[str, Any]] = []
        groups = [(d, p, f) for d in datasets for p, f in sorted(partitions_of(output, d).items())]
        groups.append((INDEX_DATASET, "", list_index_files(output)))
        groups += index_buckets(output)  # the story index: each bucket's deltas merged
        for dataset, partition, paths in groups:
            small = [path for path in paths if _size(path) < large_file_bytes]
            if len(small) < min_files:
                continue
            staged_folder = join_path(output, STAGING_DIR, op, dataset, partition)
            final_folder = join_path(output, dataset, partition)
            merged = (
                _merge_story_bucket(dataset, small, staged_folder, f"part-{op}", settings)
                if is_story_index(dataset)
                else merge_files(small, staged_folder, f"part-{op}", settings, rows_per_file)
            )
            for staged, name, rows in merged:
                files.append(_move(dataset, partition, staged, join_path(final_folder, name), rows))
                report.files_after += 1
                report.rows += rows if dataset != INDEX_DATASET else 0
            trash_folder = join_path(output, TRASH_DIR, op, dataset, partition)
            retired += [
                _move(dataset, partition, p, join_path(trash_folder, posixpath.basename(p)), 0) for p in small
            ]
            report.partitions += 1
            report.files_before += len(small)
        if files:
            with CommitLock(output, f"compact {op}", timeout=lock_timeout):
                fault_point("compact.locked")
                recover_runs(output)
                missing = [m["staged_path"] for m in retired if not FileSystems.exists(m["staged_path"])]
                if missing:  # pruned meanwhile: merging would bring the rows back
                    remove_staging(output, op)
                    raise MaintenanceError(
                        f"files changed during compaction (e.g. {missing[0]}); run it again"
                    )
                apply_manifest(output, _manifest(op, "compact", files, retired), "compact")
            report.retired = [m["staged_path"] for m in retired]
        else:
            remove_staging(output, op)
    report.trash_emptied = empty_trash(output, grace)
    return report


def _move(dataset: str, partition: str, source: str, target: str, rows: int) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "partition": partition,
        "staged_path": source,
        "final_path": target,
        "rows": rows,
        "rows_per_source": None,
    }


def _manifest(
    op: str, kind: str, files: list[dict[str, Any]], retired: list[dict[str, Any]]
) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for move in files:
        entry = counts.setdefault(move["dataset"], {"rows": 0, "files": 0})
        entry["rows"] += move["rows"]
        entry["files"] += 1
    return {
        "run_id": op,
        "kind": kind,
        "started_at": datetime.now(UTC).isoformat(),
        "inputs": [],
        "counts": counts,
        "files": files,
        "retired": retired,
    }


# --- prune ----------------------------------------------------------------------------------------


def _ingest_date(partition: str) -> date | None:
    first = partition.split("/", 1)[0]
    key, _, value = first.partition("=")
    if key != "ingest_date":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def prune(
    output: str,
    older_than: timedelta,
    today: date | None = None,
    datasets: tuple[str, ...] = DATASETS,
    grace: timedelta = DEFAULT_GRACE,
    settings: ParquetSettings | None = None,
    lock_timeout: float = 600.0,
    story_window: timedelta | None = None,
) -> MaintenanceReport:
    """Retire the `ingest_date` partitions older than `older_than`, and their rows of the version index;
    with `story_window`, the story index's rows of articles older than it (never candidates again)."""
    settings = settings or ParquetSettings()
    cutoff = (today or datetime.now(UTC).date()) - older_than
    op = operation_id("prune")
    report = MaintenanceReport(op)
    retired: list[dict[str, Any]] = []
    for dataset in datasets:
        for partition, paths in sorted(partitions_of(output, dataset).items()):
            day = _ingest_date(partition)
            if day is None or day >= cutoff:
                continue
            trash = join_path(output, TRASH_DIR, op, dataset, partition)
            retired += [
                _move(dataset, partition, p, join_path(trash, posixpath.basename(p)), 0) for p in paths
            ]
            report.partitions += 1
            report.files_before += len(paths)
            report.rows += sum(read_parquet_metadata(p).num_rows for p in paths if is_local(p))
    with CommitLock(output, f"prune {op}", timeout=lock_timeout), staging_lease(output, op):
        fault_point("prune.locked")
        recover_runs(output)
        check_index(output)
        files, index_retired = _prune_index(output, op, cutoff.isoformat(), settings)
        retired += index_retired
        if story_window is not None:
            story_files, story_retired = _prune_story_index(output, op, story_window, settings)
            files += story_files
            retired += story_retired
        if retired:
            apply_manifest(output, _manifest(op, "prune", files, retired), "prune")
        else:
            remove_staging(output, op)
    report.retired = [m["staged_path"] for m in retired]
    _remove_empty_folders(output, datasets)
    report.trash_emptied = empty_trash(output, grace)
    return report


def _prune_index(
    output: str, op: str, cutoff: str, settings: ParquetSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The index rewritten without rows of pruned partitions: (new file, retired deltas)."""
    paths = list_index_files(output)
    if not paths:
        return [], []
    index = pa.concat_tables([read_parquet(p).select(list(INDEX_FIELDS)) for p in paths])
    keep = pc.fill_null(pc.greater_equal(index["ingest_date"], cutoff), True)
    if pc.all(keep).as_py():
        return [], []
    kept = index.filter(keep)
    name = f"part-{op}-0000.parquet"
    staged = join_path(output, STAGING_DIR, op, INDEX_DATASET, name)
    files = []
    if kept.num_rows:
        write_parquet(kept, staged, settings)
        files.append(_move(INDEX_DATASET, "", staged, join_path(output, INDEX_DATASET, name), kept.num_rows))
    trash = join_path(output, TRASH_DIR, op, INDEX_DATASET)
    return files, [_move(INDEX_DATASET, "", p, join_path(trash, posixpath.basename(p)), 0) for p in paths]


def _prune_story_index(
    output: str, op: str, window: timedelta, settings: ParquetSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The story index's buckets rewritten without articles older than `window`: (new files, retired)."""
    files, retired = [], []
    name = f"part-{op}-0000.parquet"
    for bucket in prune_index(output, datetime.now(UTC) - window):
        if bucket.table is not None:
            file_name = index_file_name(bucket.dataset, name)
            staged = join_path(output, STAGING_DIR, op, bucket.dataset, bucket.partition, file_name)
            write_table_file(bucket.table, staged, settings)
            final = join_path(output, bucket.dataset, bucket.partition, file_name)
            files.append(_move(bucket.dataset, bucket.partition, staged, final, bucket.table.num_rows))
        trash = join_path(output, TRASH_DIR, op, bucket.dataset, bucket.partition)
        retired += [
            _move(bucket.dataset, bucket.partition, p, join_path(trash, posixpath.basename(p)), 0)
            for p in bucket.replaced
        ]
    return files, retired


def _remove_empty_folders(output: str, datasets: tuple[str, ...]) -> None:
    for dataset in datasets:
        root = join_path(output, dataset)
        if not is_local(root) or not os.path.isdir(root):
            continue
        for folder, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
            if folder != root:
                with contextlib.suppress(OSError):  # not empty: still has files
                    os.rmdir(folder)


# --- trash and leftovers --------------------------------------------------------------------------


def _finished_at(output: str, op: str) -> datetime | None:
    path = manifest_path(output, op)
    if not FileSystems.exists(path):
        return None
    ended = read_json(path).get("ended_at")
    return datetime.fromisoformat(ended) if ended else None


def _children(folder: str) -> Iterator[str]:
    if os.path.isdir(folder):
        yield from sorted(os.listdir(folder))


def empty_trash(output: str, grace: timedelta, now: datetime | None = None) -> int:
    """Delete trash folders whose operation committed more than `grace` ago; returns how many."""
    now = now or datetime.now(UTC)
    trash_root = join_path(output, TRASH_DIR)
    if not is_local(trash_root):
        return 0  # object stores: a lifecycle rule on the _trash/ prefix does this (see the README)
    emptied = 0
    for op in _children(trash_root):
        finished = _finished_at(output, op)
        if (
            finished is not None
            and now - finished >= grace
            and not FileSystems.exists(pending_path(output, op))
        ):
            shutil.rmtree(join_path(trash_root, op), ignore_errors=True)
            emptied += 1
    return emptied


__all__ = [
    "MaintenanceError",
    "compact",
    "parse_age",
    "prepare_run",
    "prune",
    "repair_index",
]
