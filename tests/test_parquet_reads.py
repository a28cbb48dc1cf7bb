"""Reading the store's Parquet files: a process that read them exits cleanly, and object-store paths
read what local ones do.

pyarrow 16 (the newest Beam 2.62 allows) frees the buffers it made of a Python file object's reads on
its own threads, and one freed while the interpreter exits aborts the process (apache/arrow#49942):
a notebook that ran a batch died with "terminate called without an active exception" one run in
four. The exit is checked in fresh interpreters, several times, since the abort is a race.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from tests.conftest import PROJECT
from transforms.io.parquet import (
    open_parquet,
    read_arrow,
    read_parquet,
    read_parquet_metadata,
    read_parquet_schema,
    read_table_file,
    write_arrow,
)

READER = """
import sys
import pyarrow.parquet as pq
from transforms.io.parquet import open_parquet, read_parquet

path, how = sys.argv[1:]
if how == "table":
    table = read_parquet(path)
else:
    with open_parquet(path) as source:
        reader = pq.ParquetFile(source)
        table = reader.read() if how == "file" else next(reader.iter_batches(batch_size=1000))
print(table.num_rows)
"""  # the process exits right after the read: the race is with threads still freeing its buffers

ROWS = 20_000


def write_sample(path: Path) -> pa.Table:
    table = pa.table({f"c{i}": [f"text {j} " * 5 for j in range(ROWS)] for i in range(8)})
    pq.write_table(table, path, row_group_size=2000)
    return table


def test_a_process_that_read_parquet_exits_cleanly(tmp_path: Path) -> None:
    sample = tmp_path / "sample.parquet"
    write_sample(sample)
    script = tmp_path / "reader.py"
    script.write_text(READER, encoding="utf-8")
    reads = [("table", ROWS), ("file", ROWS), ("batches", 1000)] * 6
    outcomes = []
    for how, _ in reads:
        completed = subprocess.run(
            [sys.executable, str(script), str(sample), how],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        aborted = "terminate called" in completed.stderr
        outcomes.append((how, completed.returncode, completed.stdout.strip(), aborted))
    # Read through a Python file object, one exit in two aborted after read_table.
    assert outcomes == [(how, 0, str(rows), False) for how, rows in reads]


class ObjectStoreLike(LocalFileSystem):
    """A stand-in for an object store: `objtest://` paths served from local files through Beam's
    FileSystems, so the code path of `gs://` and `s3://` (no local path for Arrow) is the one taken."""

    PREFIX = "objtest://"

    @classmethod
    def scheme(cls) -> str:
        return "objtest"

    def open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return super().open(path.removeprefix(self.PREFIX), *args, **kwargs)

    def create(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return super().create(path.removeprefix(self.PREFIX), *args, **kwargs)


def test_an_object_store_file_reads_as_the_local_file(tmp_path: Path) -> None:
    sample = tmp_path / "sample.parquet"
    table = write_sample(sample)
    remote = ObjectStoreLike.PREFIX + str(sample)

    assert read_parquet(remote).equals(table)
    assert read_parquet(remote, columns=["c3"]).equals(table.select(["c3"]))
    with open_parquet(remote) as source:
        assert pq.ParquetFile(source).read_row_group(4).equals(table.slice(8000, 2000))
    metadata = read_parquet_metadata(remote)
    assert (metadata.num_rows, metadata.num_row_groups) == (ROWS, 10)
    assert metadata.to_dict() == read_parquet_metadata(str(sample)).to_dict()
    assert read_parquet_schema(remote).equals(pq.read_schema(sample), check_metadata=True)


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not parquet at all", b"PAR1\xff\xff\xff\x7fPAR1"])
def test_a_file_that_is_not_parquet_is_an_arrow_error_local_or_remote(tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(content)
    for path in (str(broken), ObjectStoreLike.PREFIX + str(broken)):
        with pytest.raises((pa.ArrowException, OSError)):
            read_parquet_metadata(path)
        with pytest.raises((pa.ArrowException, OSError)):
            read_parquet(path)


def test_an_arrow_file_reads_back_local_memory_mapped_or_remote(tmp_path: Path) -> None:
    """The story index's band deltas: Arrow IPC, memory-mapped locally, read whole from an object store."""
    table = pa.table(
        {
            "band": pa.array(range(0, 300_000, 3), pa.int64()),
            "article_key": pa.array(range(100_000), pa.int64()),
        }
    )
    chunked = pa.concat_tables([table.slice(0, 40_000), table.slice(40_000)])  # one batch is written
    local = tmp_path / "bands.arrow"
    write_arrow(chunked, str(local))
    write_arrow(chunked, ObjectStoreLike.PREFIX + str(tmp_path / "remote.arrow"))
    for path in (str(local), ObjectStoreLike.PREFIX + str(tmp_path / "remote.arrow")):
        read = read_arrow(path)
        assert read.equals(table) and read.column("band").num_chunks == 1
        assert read_table_file(path, ["article_key"]).equals(table.select(["article_key"]))
    broken = tmp_path / "broken.arrow"
    broken.write_bytes(local.read_bytes()[:1000])  # truncated
    for path in (str(broken), ObjectStoreLike.PREFIX + str(broken)):
        with pytest.raises((pa.ArrowException, OSError)):
            read_arrow(path)
