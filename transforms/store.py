"""The store: the seen-set of stored article versions, and the lock that serializes commits.

**Seen-set (version index).** Every committed run publishes, beside its articles, one small Parquet
delta under `OUTPUT/_state/articles/` with one row per article version it wrote: `article_id`,
`content_hash`, `updated_at`, `version`, `run_id`, `ingest_date` (about 60 bytes a row on disk).
The next run reads only those four columns of the index, keeps only the ids it is about to write
(a vectorized Arrow filter), and decides for each article: new (version 1), changed (a different
content hash or a newer `updated_at` than the latest stored version: version + 1), or already
stored (not written). The index grows by one row per article version; `newsbeam compact` merges
its deltas into one file and `newsbeam prune` drops the rows of pruned partitions, so it stays
proportional to the retained dataset, not to the number of polls.

**Commit lock.** Commits (runs, compaction, pruning) publish by renames and must not interleave.
On a local or POSIX filesystem the lock is `fcntl.flock` on `OUTPUT/_state/commit.lock`: the kernel
releases it when its holder dies, even by SIGKILL, so a crashed run can never leave it behind; the
file also names the holder (pid, host, since) for a clear message to whoever waits. Object stores
have no locks: on s3:// and gs:// the lock is a lease object written only by conditional requests
(created if absent, renewed every `stale_after / 4` seconds, taken over atomically once unrenewed
for `stale_after` seconds, deleted only by its holder; see transforms/object_lock.py). A holder that
lost it fails its commit with `CommitLockLost`. Other remote filesystems (hdfs://, azfs://) keep the
best-effort lock newsbeam had everywhere before: write, wait a second, read back.

**Fault points.** `fault_point(name)` marks the steps of a commit. When `NEWSBEAM_PAUSE_AT` names
one, the process writes the name to `NEWSBEAM_PAUSE_MARKER` and waits there until the test removes
that file, so that a test can kill it at exactly that point (or let it go on at the moment it
chooses). Without the variable it does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.object_lock import ObjectLease, conditional_objects, has_conditional_writes
from transforms.paths import list_files
from transforms.schema import TIMESTAMP, Column, arrow_schema

STATE_DIR = "_state"
# The best-effort lock of filesystems without conditional writes is not renewed: a commit may last this long.
UNCONDITIONAL_STALE_AFTER_S = 900.0
INDEX_DATASET = "_state/articles"  # a dataset name: WritePartitionedParquet stages it like the others
LOCK_NAME = "commit.lock"
PAUSE_ENV = "NEWSBEAM_PAUSE_AT"
PAUSE_MARKER_ENV = "NEWSBEAM_PAUSE_MARKER"

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

log = logging.getLogger(__name__)


def join(*parts: str) -> str:
    head, *rest = parts
    if "://" in head:
        return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest if p)])
    return FileSystems.join(head, *rest)


def is_local(path: str) -> bool:
    return "://" not in path


# --- fault points --------------------------------------------------------------------------------


def fault_point(name: str) -> None:
    """Pause forever at `name` when the test hook asks for it (see the module docstring)."""
    target = os.environ.get(PAUSE_ENV)
    if not target or target != name:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if not marker:
        time.sleep(3600)
        return
    with open(f"{marker}.tmp", "w", encoding="utf-8") as stream:
        stream.write(f"{name} {os.getpid()}\n")
    os.replace(f"{marker}.tmp", marker)
    deadline = time.monotonic() + 3600
    while os.path.exists(marker) and time.monotonic() < deadline:  # the test removes it to resume
        time.sleep(0.05)


# --- the seen-set ---------------------------------------------------------------------------------


class IndexFileError(RuntimeError):
    """A delta of the version index that cannot be read; the message names it and the repair."""


@dataclass(frozen=True)
class StoredVersion:
    """The latest stored version of one article id."""

    content_hash: str | None
    updated_at: datetime | None
    version: int


def index_dir(output: str) -> str:
    return join(output, INDEX_DATASET)


def list_index_files(output: str) -> list[str]:
    """The index deltas, sorted: listed, never matched (the output's name may hold `[`, `*`, `?`)."""
    return [m.path for m in list_files(index_dir(output), ".parquet")]


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    with FileSystems.open(path) as stream:
        return pq.read_table(stream, columns=columns)


def index_batches(files: Iterable[str], batch_size: int = 262_144) -> Iterator[pa.Table]:
    """The index rows of `files` (the `LOOKUP_FIELDS`), a batch at a time: never the whole index."""
    for path in files:
        with FileSystems.open(path) as stream:
            try:
                reader = pq.ParquetFile(stream)
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


# --- the commit lock ------------------------------------------------------------------------------


class CommitLockTimeout(RuntimeError):
    """Another commit held the lock for longer than we were willing to wait."""


class CommitLockLost(RuntimeError):
    """An object store's commit lock was taken over while held: the commit was not serialized."""


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    return (
        f"{info.get('owner', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('since', '?')})"
    )


class CommitLock:
    """Exclusive lock around the commit steps of one output (see the module docstring).

    Waits up to `timeout` seconds, then raises `CommitLockTimeout` naming the holder. On object
    stores `stale_after` is the lease: the holder renews it every quarter of it, and a holder that
    has not renewed it for that long is taken over; waits there back off from `poll` to at most
    20 times `poll` (2 s by default), each with jitter, so that waiters do not poll in step.
    """

    def __init__(
        self,
        output: str,
        owner: str,
        timeout: float = 600.0,
        stale_after: float = 120.0,
        poll: float = 0.1,
    ) -> None:
        self.path = join(output, STATE_DIR, LOCK_NAME)
        self._owner, self._timeout, self._stale_after, self._poll = owner, timeout, stale_after, poll
        self._fd: int | None = None
        self._lease: ObjectLease | None = None
        self._held_unconditionally = False
        self._token = uuid.uuid4().hex

    def _info(self) -> dict[str, Any]:
        return {
            "owner": self._owner,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": self._token,
        }

    def __enter__(self) -> CommitLock:
        deadline = time.monotonic() + self._timeout
        told = False
        wait = self._poll
        while True:
            holder = self._try_acquire()
            if holder is None:
                return self
            if time.monotonic() >= deadline:
                raise CommitLockTimeout(
                    f"the commit lock {self.path} is held by {_holder_text(holder)}; "
                    f"gave up after {self._timeout:.0f}s. Another newsbeam run, compact or prune is "
                    "committing to this output; try again when it is done"
                )
            if not told:
                log.warning("waiting for the commit lock held by %s", _holder_text(holder))
                told = True
            if is_local(self.path):
                time.sleep(self._poll)
            else:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
                wait = min(wait * 2, 20 * self._poll, 2.0)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self.release()
        except CommitLockLost:
            if kind is None:
                raise
            log.exception("while failing with %s", kind.__name__)  # the first error is the one to see

    def _try_acquire(self) -> dict[str, Any] | None:
        """None when acquired, else what is known of the holder."""
        if is_local(self.path):
            import fcntl

            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
                    holder: dict[str, Any] = json.loads(text) if text.strip() else {}
                except ValueError:
                    holder = {}
                os.close(fd)
                return holder
            self._fd = fd
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(self._info()).encode("utf-8"), 0)
            except OSError as error:  # a full disk: the lock is held all the same, only unnamed
                log.warning("the commit lock %s is held but cannot name its holder: %s", self.path, error)
            return None
        if not has_conditional_writes(self.path):
            return self._try_acquire_unconditionally()
        if self._lease is None:
            store = conditional_objects(self.path)
            self._lease = ObjectLease(self.path, self._info(), self._stale_after, store)
        return self._lease.try_acquire()

    def _try_acquire_unconditionally(self) -> dict[str, Any] | None:
        # No conditional create known for this filesystem: write, wait, read back (racy, see the README).
        if FileSystems.exists(self.path):
            holder = _read_json(self.path)
            since = holder.get("since")
            age = (datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds() if since else 1e9
            if age < UNCONDITIONAL_STALE_AFTER_S:
                return holder
            log.warning("taking over the stale commit lock of %s", _holder_text(holder))
        log.warning("%s has no conditional writes: its commit lock is best effort", self.path)
        with FileSystems.create(self.path) as stream:
            stream.write(json.dumps(self._info()).encode("utf-8"))
        time.sleep(1.0)
        holder = _read_json(self.path)
        self._held_unconditionally = holder.get("token") == self._token
        return None if self._held_unconditionally else holder

    def release(self) -> None:
        """Release the lock; raises `CommitLockLost` when an object store's lock was taken over."""
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._held_unconditionally:
            self._held_unconditionally = False
            if FileSystems.exists(self.path) and _read_json(self.path).get("token") == self._token:
                FileSystems.delete([self.path])
        elif self._lease is not None:
            lease, self._lease = self._lease, None
            lost = lease.release()
            if lost is not None:
                raise CommitLockLost(
                    f"the commit lock {self.path} of {self._owner} was lost while held: {lost}. Another "
                    "commit may have run at the same time as this one; its manifest lists what it published"
                )


def lock_holder(output: str) -> dict[str, Any] | None:
    """Who holds the commit lock now (local outputs), or None when it is free."""
    path = join(output, STATE_DIR, LOCK_NAME)
    if not is_local(path) or not os.path.exists(path):
        return None
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
            try:
                return dict(json.loads(text)) if text.strip() else {}
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_json(path: str) -> dict[str, Any]:
    try:
        with FileSystems.open(path) as stream:
            return dict(json.loads(stream.read().decode("utf-8")))
    except (OSError, ValueError):
        return {}
