"""The committed datasets of an output, for reading: which files count, and DuckDB tables over them.

`newsbeam report` and `newsbeam show` read what the store has committed and nothing else. A file
under `OUTPUT/<dataset>/` is committed unless a manifest that is still `committing` names it (a
commit between its first and last rename: rolled forward by the next run, not yet decided for a
reader). While such a manifest retires files (a compaction), the files it replaces still count,
wherever its renames have put them. Stream panes publish only after their decision, so their files
count as soon as they are listed. Nothing under `_staging/` or `_trash/` is ever listed by pattern:
folders are listed (`transforms.paths.list_files`), as every store path is data, not a glob.

Files are read through Beam's FileSystems (local, `gs://`, `s3://` alike) with only the columns a
query needs, the Hive partition columns added from each file's folder, files of older schema
versions given the newer columns as nulls; DuckDB then runs every query over these Arrow tables.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.io.manifests import read_json
from transforms.io.parquet import open_parquet
from transforms.io.paths import NULL_PARTITION, RUNS_DIR, join_path, list_files
from transforms.schema import ARTICLE_SCHEMA, DEAD_LETTER_SCHEMA, FEED_FETCH_SCHEMA, STORY_SCHEMA

SCHEMAS: dict[str, pa.Schema] = {
    "articles": ARTICLE_SCHEMA,
    "dead_letters": DEAD_LETTER_SCHEMA,
    "feed_fetches": FEED_FETCH_SCHEMA,
    "stories": STORY_SCHEMA,
}


class OutputError(ValueError):
    """An output that cannot be read: no newsbeam datasets there (a typo), or a damaged committed file."""


@dataclass(frozen=True)
class CommittedFile:
    dataset: str
    path: str
    partition: dict[str, str | None]  # e.g. {"ingest_date": "2026-12-01", "language": "en"}


def manifests(output: str) -> list[dict[str, Any]]:
    """Every run, compact and prune manifest under `OUTPUT/_runs/`, oldest commit first."""
    documents = [read_json(listed.path) for listed in list_files(join_path(output, RUNS_DIR), ".json")]
    return sorted(
        documents, key=lambda d: str(d.get("commit_started_at") or d.get("ended_at") or d.get("started_at"))
    )


def partition_of(relative_folder: str) -> dict[str, str | None]:
    """`ingest_date=2026-12-01/language=en` -> its keys and values, Hive-unescaped (the null one -> None)."""
    values: dict[str, str | None] = {}
    for segment in relative_folder.split("/"):
        key, separator, value = segment.partition("=")
        if separator:
            values[unquote(key)] = None if value == NULL_PARTITION else unquote(value)
    return values


def committed_files(output: str, dataset: str, documents: list[dict[str, Any]]) -> list[CommittedFile]:
    """The committed files of one dataset (see the module docstring), sorted by path."""
    root = join_path(output, dataset)
    undecided: set[str] = set()
    still_counting: list[dict[str, Any]] = []
    for document in documents:
        if document.get("status") == "committed":
            continue
        undecided |= {m["final_path"] for m in document.get("files", []) if m["dataset"] == dataset}
        still_counting += [m for m in document.get("retired", []) if m["dataset"] == dataset]
    paths = [m.path for m in list_files(root, ".parquet", recursive=True) if m.path not in undecided]
    listed = set(paths)
    for move in still_counting:  # a compaction half done: the replaced file is in place or in the trash
        if move["staged_path"] not in listed and FileSystems.exists(move["final_path"]):
            paths.append(move["final_path"])
    found = []
    for path in sorted(set(paths)):
        original = next((m["staged_path"] for m in still_counting if m["final_path"] == path), path)
        relative = posixpath.dirname(original[len(root) :].lstrip("/"))
        found.append(CommittedFile(dataset, path, partition_of(relative)))
    return found


def read_files(files: list[CommittedFile], schema: pa.Schema, columns: list[str]) -> pa.Table:
    """The `columns` of `files` as one table of `schema`'s types (partition columns from the folders)."""
    target = pa.schema([schema.field(name) for name in columns])
    tables = []
    for committed in files:
        try:
            with open_parquet(committed.path) as source:
                parquet = pq.ParquetFile(source)
                present = [c for c in columns if c in parquet.schema_arrow.names]
                table = parquet.read(columns=present)
        except (OSError, pa.ArrowException) as error:  # a committed file damaged since: name it
            raise OutputError(f"{committed.path}: a committed file that cannot be read: {error}") from None
        arrays = []
        for field in target:
            if field.name in present:
                arrays.append(table.column(field.name).cast(field.type))
            elif field.name in committed.partition:
                value = committed.partition[field.name]
                arrays.append(pa.array([value] * table.num_rows, pa.string()).cast(field.type))
            else:  # a column newer than the file (an older schema version)
                arrays.append(pa.nulls(table.num_rows, field.type))
        tables.append(pa.Table.from_arrays(arrays, schema=target))
    return pa.concat_tables(tables) if tables else target.empty_table()


class Store:
    """The committed datasets of `output` and its manifests, ready for DuckDB queries."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.manifests = manifests(output)
        self.files = {name: committed_files(output, name, self.manifests) for name in SCHEMAS}
        if not self.manifests and not any(self.files.values()):
            raise OutputError(f"{output}: no newsbeam datasets here (no _runs/ manifests, no Parquet files)")
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")  # days and times on the page are UTC, as in the datasets

    def load(self, dataset: str, columns: list[str], name: str | None = None) -> str:
        """Register `columns` of `dataset` as a DuckDB table `name` (default: the dataset's name)."""
        table = read_files(self.files[dataset], SCHEMAS[dataset], columns)
        name = name or dataset
        self.db.register(f"{name}_arrow", table)
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
        self.db.unregister(f"{name}_arrow")
        return name

    def rows(self, sql: str, parameters: list[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        relation = self.db.execute(sql, parameters or [])
        names = [column[0] for column in relation.description or []]
        return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
