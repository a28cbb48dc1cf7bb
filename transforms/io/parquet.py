"""Arrow tables and Parquet files of the store: the write settings, conversion with rejected records, IO.

Every file newsbeam stores (staged batch files, streaming panes, rewritten and compacted files, the
version index) is written by `write_parquet` with the configured `ParquetSettings`. Records become an
Arrow table with `convert_records`, which names the records Arrow cannot hold (`RejectedRecord`)
instead of failing the whole batch; the caller decides whether they are dead letters or an error.
Beam's FileSystems API does the IO, so `gs://` and `s3://` work as local folders do.
"""

from __future__ import annotations

import contextlib
import ctypes
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.io.paths import is_local
from transforms.schema import Stage, dead_letter, entry_ref, escaped_text


@dataclass(frozen=True)
class DatasetFiles:
    """The files of one dataset that a writer makes: where, with which columns and partition keys."""

    output: str
    dataset: str
    schema: pa.Schema
    partition_keys: tuple[str, ...]
    run_id: str

    def file_schema(self) -> pa.Schema:
        """The columns inside each file. Hive layout: partition values live in the folder names, not
        in the files, as every engine (Spark, BigQuery, Athena) expects."""
        kept = [f for f in self.schema if f.name not in self.partition_keys]
        return pa.schema(kept, metadata=self.schema.metadata)


@dataclass(frozen=True)
class ParquetSettings:
    compression: str = "zstd"
    compression_level: int = 3
    row_group_size: int = 64_000
    max_buffered_rows: int = 2_000  # per bundle; a full buffer writes its largest partition


def return_freed_memory_at_once() -> None:
    """Have Arrow's allocator (jemalloc) and the C heap give freed pages back to the system at once,
    in this process.

    By default jemalloc keeps freed pages for seconds, so the pages of the file just written are
    still held while the next one is read or written, and a worker's peak is two files, not one.
    glibc maps a large block (numpy's arrays) on its own only until one such block is freed: its
    threshold then rises to that block's size (up to 32 MB), and later arrays of a few megabytes
    come from the heap, whose freed pages stay until trimmed. A fixed threshold keeps unmapping
    them (the commit's ranking of a million prints: 148 MB over its start, 122 with it).
    Called in the setup of the steps that write or edit files; a build without jemalloc or glibc
    has nothing to do.
    """
    with contextlib.suppress(NotImplementedError):
        pa.jemalloc_set_decay_ms(0)
    libc = _glibc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 256 * 1024  # twice glibc's initial threshold: blocks of this size and more are mapped
_LIBC: Any = None


def _glibc() -> Any:
    """glibc, or False in a process without it (musl, macOS)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - a libc without it is not glibc
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def give_back_free_heap() -> None:
    """Return the free pages of the C heap to the system (glibc's `malloc_trim`), in this process.

    glibc keeps what is freed in its arenas (one per thread that allocated: the fetch threads, Beam's
    own), and a worker's heap held more free memory the longer it ran (60 MB free after 50,000
    articles, 10 MB after 3,000), so its memory grew with the run. Called after each file written;
    trimming costs about a millisecond. Without glibc (musl, macOS) there is nothing to do.
    """
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


@contextlib.contextmanager
def giving_back_free_heap(every_seconds: float = 2.0) -> Iterator[None]:
    """`give_back_free_heap` every `every_seconds` in a thread of this process while the block runs.

    For the launcher of a local run: the in-process runner's buffers of each stage's elements come
    and go there, and the free pages they left (12 MB of a 100,000-article run) were kept to its end.
    Large blocks freed there are unmapped at once from then on (`return_freed_memory_at_once`).
    """
    return_freed_memory_at_once()
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(every_seconds):
            give_back_free_heap()

    thread = threading.Thread(target=trim, name="newsbeam-heap-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pa.NativeFile]:
    """A Parquet file opened for Arrow with no Python file object in between.

    Arrow wraps what a Python file object returns in buffers that take the GIL to free, and pyarrow
    16 frees some of them on its own threads after a read returns; one freed while the interpreter
    exits aborts the process ("terminate called without an active exception", apache/arrow#49942,
    fixed in a pyarrow newer than the 16.x Beam 2.62 allows). So Arrow opens a local file itself,
    and an object-store file is read once into Arrow's memory through Beam's FileSystems.
    """
    if is_local(path):
        source: pa.NativeFile = pa.OSFile(path, "r")
    else:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            source = pa.BufferReader(_arrow_owned(stream.read()))
    with source:
        yield source


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    with open_parquet(path) as source:
        return pq.read_table(source, columns=columns)


def read_parquet_metadata(path: str) -> pq.FileMetaData:
    """The footer of a Parquet file (row count, row groups, schema); of an object-store file only
    its footer is read (a seek to its end), never the whole file."""
    if is_local(path):
        return pq.read_metadata(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        stream.seek(-8, 2)
        tail = stream.read(8)
        if len(tail) != 8 or tail[4:] != b"PAR1":
            raise pa.ArrowInvalid(f"{path}: not a Parquet file (no PAR1 footer)")
        (footer_length,) = struct.unpack("<I", tail[:4])
        stream.seek(-(footer_length + 8), 2)
        footer = stream.read(footer_length + 8)
    # The footer alone reads as a Parquet file: its length and magic are at its end.
    return pq.read_metadata(pa.BufferReader(_arrow_owned(footer)))


def read_parquet_schema(path: str) -> pa.Schema:
    return read_parquet_metadata(path).schema.to_arrow_schema()


def _arrow_owned(data: bytes) -> pa.Buffer:
    """`data` copied into a buffer of Arrow's memory pool (see `open_parquet` for why)."""
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


# --- Arrow IPC files: the story index's band deltas (transforms/io/story_index.py) ----------------

ARROW_SUFFIX = ".arrow"


def write_arrow(table: pa.Table, path: str) -> None:
    """`table` as an uncompressed Arrow IPC file of one record batch.

    Uncompressed so that a reader memory-maps it and searches a sorted column in place (`read_arrow`),
    touching only the pages a binary search visits; what it holds (64-bit hashes) would not compress.
    Serialized in Arrow's memory first, then written through FileSystems (object stores included).
    """
    sink = pa.BufferOutputStream()
    combined = table.combine_chunks()
    with pa.ipc.new_file(sink, combined.schema) as writer:
        writer.write_table(combined, max_chunksize=max(1, combined.num_rows))
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        stream.write(sink.getvalue().to_pybytes())


def read_arrow(path: str) -> pa.Table:
    """An Arrow IPC file's table: a local file memory-mapped (nothing is read until used, and then
    only the pages used), an object-store file read once into Arrow's memory."""
    if is_local(path):
        source: pa.NativeFile = pa.memory_map(path, "r")
    else:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            source = pa.BufferReader(_arrow_owned(stream.read()))
    return pa.ipc.open_file(source).read_all()


def write_table_file(table: pa.Table, path: str, settings: ParquetSettings) -> None:
    """`table` in the format its path names: `.arrow` (`write_arrow`), else Parquet."""
    if path.endswith(ARROW_SUFFIX):
        write_arrow(table, path)
    else:
        write_parquet(table, path, settings)


def read_table_file(path: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of a `.arrow` (memory-mapped: columns are read when used) or a Parquet file."""
    if path.endswith(ARROW_SUFFIX):
        table = read_arrow(path)
        return table.select(columns) if columns is not None else table
    return read_parquet(path, columns)


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
