"""What the store has committed: a per-worker cache of the version index, and the rule that decides.

The streaming job's exactly-once rests here, not on the runner's state. `CommittedVersions` holds,
per article id, every content hash stored and the latest stored version, read from the committed
version index (`OUTPUT/_state/articles/`, transforms/io/versions.py). It is refreshed by listing the
index: only files not read before are read (index files are immutable once published), and when a
known file has gone (`newsbeam compact` merged it) the cache is rebuilt. Commits made in this worker
are noted directly, so the cache never lags behind its own writes.

`decide_revisions` is the one rule, used by the window writer's commit under the commit lock (the
decision) and by `DeduplicateStream` before it (a cheap early drop of what is already stored):

- a content hash already stored for the id is never stored again;
- a text whose `updated_at` is older than the latest stored version's never becomes a newer version;
- anything else is the next version of its id, in fetch-time order within one decision.

One cache per output is shared by every DoFn instance of the worker process (`shared_versions`);
it holds a few hundred bytes per stored article id (the old start-up seed held as much).

**Polls that cost what is new.** `CommittedEntries` (one per worker process, `shared_entries`)
keeps, per feed, the fingerprint of each raw entry whose revision is committed (its guid and link
and a hash of its raw title, summary and content: `entry_fingerprint`) and the digest of the last
body all of whose entries were committed. A poll whose body has that digest is not parsed; an entry
whose fingerprint is known skips normalize, detect and enrich. The poll registers the fingerprints
of the entries it sends on, by (feed, fetch time, position); `DeduplicateStream` (an entry already
stored) and the window writer's commit (an entry decided) report them committed. An entry the
runner loses is never reported, so it is sent on again by the next poll. Where the poll and the
commit run in different worker processes (a cluster), nothing is learned and every poll is
parsed: slower, never wrong. When the index cache is rebuilt (`compact` or `prune` replaced index
files: a prune removes revisions, which then come back as version 1) all of it is forgotten; the
polls refresh the index cache for that, as the dedupe does.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from transforms.io.versions import StoredVersion, list_index_files, read_index

ALREADY_STORED = "already_stored"
REFRESH_SECONDS = 1.0  # how stale the committed view may be: a late refresh only lets a duplicate pass
STALE = "stale"
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass
class KnownId:
    """What is stored of one article id: all its content hashes and its latest version."""

    hashes: set[str | None] = field(default_factory=set)
    latest: StoredVersion | None = None

    def add(self, content_hash: str | None, updated_at: datetime | None, version: int) -> None:
        self.hashes.add(content_hash)
        if self.latest is None or version > self.latest.version:
            self.latest = StoredVersion(content_hash, updated_at, version)


class CommittedVersions:
    """The committed version index of one output, cached (see the module docstring). Thread-safe."""

    def __init__(self, output: str) -> None:
        self.output = output
        self._files: set[str] = set()
        self._ids: dict[str, KnownId] = {}
        self._refreshed_at = float("-inf")
        self._lock = threading.RLock()

    def refresh(self, max_age: float = 0.0) -> None:
        """Read the index files published since the last refresh (at most every `max_age` seconds)."""
        with self._lock:
            if time.monotonic() - self._refreshed_at < max_age:
                return
            for attempt in range(5):
                files = list_index_files(self.output)
                if not self._files <= set(files):  # compact or prune replaced files we read: start again
                    self._files, self._ids = set(), {}
                    _ENTRIES.forget_all()  # a prune may have removed what the polls knew committed
                new = [path for path in files if path not in self._files]
                try:
                    table = read_index(new)
                except FileNotFoundError:  # retired between the listing and the read
                    if attempt == 4:
                        raise
                    time.sleep(0.1 * (attempt + 1))
                    continue
                self._merge(table)
                self._files.update(new)
                break
            self._refreshed_at = time.monotonic()

    def _merge(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self.note(row["article_id"], row["content_hash"], row["updated_at"], row["version"])

    def note(
        self, article_id: str, content_hash: str | None, updated_at: datetime | None, version: int
    ) -> None:
        with self._lock:
            self._ids.setdefault(article_id, KnownId()).add(content_hash, updated_at, version)

    def note_committed(self, index_file: str, rows: Iterable[dict[str, Any]]) -> None:
        """Rows this worker just published in `index_file`: known without reading the file back."""
        with self._lock:
            for row in rows:
                self.note(row["article_id"], row.get("content_hash"), row.get("updated_at"), row["version"])
            self._files.add(index_file)

    def known(self, article_id: str) -> KnownId | None:
        with self._lock:
            found = self._ids.get(article_id)
            return KnownId(set(found.hashes), found.latest) if found is not None else None

    def __len__(self) -> int:
        return len(self._ids)


_SHARED: dict[str, CommittedVersions] = {}
_SHARED_LOCK = threading.Lock()


def shared_versions(output: str) -> CommittedVersions:
    """The worker's one cache of `output`'s committed versions."""
    with _SHARED_LOCK:
        if output not in _SHARED:
            _SHARED[output] = CommittedVersions(output)
        return _SHARED[output]


def _fetch_order(record: dict[str, Any]) -> tuple[datetime, str, str]:
    return (record.get("ingested_at") or _OLDEST, record["article_id"], record.get("content_hash") or "")


def decide_revisions(
    records: Iterable[dict[str, Any]], committed: CommittedVersions
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """(records to store, each with its `version`; (record, reason) for each one not to store).

    Records are taken in fetch-time order, so several revisions of an id in one decision are
    numbered in the order they were fetched; each later one is checked against the earlier ones too.
    """
    decided: dict[str, KnownId | None] = {}
    kept: list[dict[str, Any]] = []
    dropped: list[tuple[dict[str, Any], str]] = []
    for record in sorted(records, key=_fetch_order):
        article_id, content_hash = record["article_id"], record.get("content_hash")
        if article_id not in decided:
            decided[article_id] = committed.known(article_id)
        known = decided[article_id]
        if known is not None and content_hash in known.hashes:
            dropped.append((record, ALREADY_STORED))
            continue
        updated_at: datetime | None = record.get("updated_at")
        latest = known.latest if known is not None else None
        if latest is not None and updated_at and latest.updated_at and updated_at < latest.updated_at:
            dropped.append((record, STALE))
            continue
        version = latest.version + 1 if latest is not None else 1
        if known is None:
            known = decided[article_id] = KnownId()
        known.add(content_hash, updated_at, version)
        kept.append({**record, "version": version})
    return kept, dropped


# --- fingerprints of committed raw entries --------------------------------------------------------

PENDING_POLLS_KEPT = 32  # per feed: entries of older polls never reported are forgotten


def entry_fingerprint(entry: dict[str, Any]) -> str:
    """An entry's identity and raw content: guid and link, and its raw title, summary and content.

    Both guid and link: the article id is made from the canonical link first, the guid only
    without one (transforms/enrich.py), so an entry that keeps its guid under a new link is a new
    article and must not hit.
    """
    digest = hashlib.sha256()
    key = "" if entry.get("entry_id") or entry.get("link") else f"#{entry.get('ordinal', 0)}"
    parts = (entry.get("entry_id"), entry.get("link"), key, entry.get("title"), entry.get("summary"))
    for part in (*parts, entry.get("content")):
        digest.update((part or "").encode("utf-8", errors="surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:32]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def fetch_millis(fetched_at: datetime | float) -> int:
    """A fetch time as whole milliseconds: how a poll and the records it produced name that poll."""
    seconds = fetched_at.timestamp() if isinstance(fetched_at, datetime) else fetched_at
    return round(seconds * 1000)


class CommittedEntries:
    """Per feed: fingerprints of committed raw entries and the last fully committed body (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._committed: dict[str, set[str]] = {}
        self._bodies: dict[str, str] = {}
        self._pending: dict[str, OrderedDict[int, dict[int, str]]] = {}

    def body_committed(self, feed: str, digest: str | None) -> bool:
        with self._lock:
            return digest is not None and self._bodies.get(feed) == digest

    def entries_to_process(
        self, feed: str, digest: str, fetched_ms: int, entries: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The entries of a parsed body that are not known committed; those are expected back."""
        fingerprints = [entry_fingerprint(entry) for entry in entries]
        with self._lock:
            known = self._committed.get(feed, set()) & set(fingerprints)  # forget what the feed dropped
            self._committed[feed] = known
            fresh = [(e, fp) for e, fp in zip(entries, fingerprints, strict=True) if fp not in known]
            if not fresh:
                self._bodies[feed] = digest
                return []
            pending = self._pending.setdefault(feed, OrderedDict())
            pending[fetched_ms] = {entry.get("ordinal", 0): fp for entry, fp in fresh}
            while len(pending) > PENDING_POLLS_KEPT:
                pending.popitem(last=False)
        return [entry for entry, _ in fresh]

    def forget_all(self) -> None:
        """Forget every fingerprint and committed body: the store lost rows (a prune), so the next
        polls parse and send on everything again, and the commit decides."""
        with self._lock:
            self._committed.clear()
            self._bodies.clear()

    def report_committed(self, feed: str, fetched_ms: int, ordinal: int) -> None:
        """The revision of the entry at `ordinal` of the poll of `feed` at `fetched_ms` is committed."""
        with self._lock:
            polls = self._pending.get(feed)
            poll = polls.get(fetched_ms) if polls is not None else None
            fingerprint = poll.pop(ordinal, None) if poll is not None else None
            if fingerprint is not None:
                self._committed.setdefault(feed, set()).add(fingerprint)


_ENTRIES = CommittedEntries()


def shared_entries() -> CommittedEntries:
    """The worker process's one `CommittedEntries`."""
    return _ENTRIES


def report_records_committed(records: Iterable[dict[str, Any]]) -> None:
    """Report records decided (stored or found stored): each has `source`, `ordinal`, `ingested_at`."""
    for record in records:
        fetched = record.get("ingested_at")
        if isinstance(fetched, datetime) and record.get("source"):
            _ENTRIES.report_committed(record["source"], fetch_millis(fetched), record.get("ordinal", 0))
