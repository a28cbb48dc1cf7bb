"""WriteWindowedParquet: the streaming job's sink, which decides what is stored, exactly once.

The streaming job writes each window of fetch time as its own files, in the same Hive layout as
batch. Records are buffered per (window, partition) in Beam state, in the global window, and
committed when an event-time timer at the window's end fires; a record that arrives after its
window was written (late data) is buffered again and committed as the window's next pane. Nothing
is ever dropped for lateness, and no Beam trigger or allowed lateness is needed (Prism 2.62
supports neither).

**The commit of a pane decides.** Runner state is not trusted to be right: Prism 2.62 splits slow
bundles of stateful DoFns and runs the split-off elements of a key in a new bundle while the first
still runs, so a pane can be flushed twice, or hold revisions the dedupe state had already let
through. So `commit_pane`, under the commit lock, checks each article revision against the
committed version index (`transforms.io.committed.decide_revisions`): a content already stored is
never stored again, a text older than the stored latest never becomes a newer version, and the
others get the next versions in fetch-time order. A record the runner loses is never committed, so
`DeduplicateStream` lets it through again on a later poll.

**Names are deterministic:** `part-<window start>-<run_id>-<digest of the decided rows>.parquet`,
the same for the index delta under `OUTPUT/_state/articles/`. A retried or duplicated pane decides
the same rows as already stored (nothing is added) or, when its first attempt died before
publishing, the same rows under the same names (it replaces).

**Atomic for readers and crash-safe:** under the commit lock, the pane's files (articles, their
index delta, the dead letters of rejected rows) are written to `OUTPUT/_runs/_pending_panes/<pane>/`,
then the decision, a marker listing the moves, beside it (`<pane>.json`), then the files are renamed
into place and both removed. A crash after the marker is rolled forward by the next pane commit or
stream start (`recover_panes`); a crash before it leaves files that the same step removes. Nothing is
staged under `OUTPUT/_staging/`, whose abandoned folders batch runs and restarts delete.

**Story index deltas stay bounded:** a pane's deltas are `pane-<window>-...` files; once a bucket
holds `MAX_DELTAS`, the pane merges the earlier panes' deltas into its own (`bound_pane_deltas`),
lists them in its decision as `replaced` and deletes them after its renames, so a stream that runs
for weeks keeps a lookup at a bounded number of files per bucket.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from transforms.io.commit import publish
from transforms.io.committed import (
    ALREADY_STORED,
    CommittedVersions,
    decide_revisions,
    report_records_committed,
    shared_versions,
)
from transforms.io.faults import fault_point
from transforms.io.lock import CommitLock
from transforms.io.manifests import read_json, write_json_atomically
from transforms.io.parquet import (
    DatasetFiles,
    ParquetSettings,
    RejectedRecord,
    convert_records,
    records_to_table,
    refuse_records,
    rejected_dead_letter,
    write_table_file,
)
from transforms.io.paths import (
    INDEX_DATASET,
    RUNS_DIR,
    STATE_DIR,
    delete_inside,
    join_path,
    list_children,
    list_files,
    partition_path,
    validate_run_id,
)
from transforms.io.story_index import (
    StorySettings,
    bound_pane_deltas,
    decide_stories,
    is_story_index,
    pane_story_name,
    print_row,
    story_file_path,
)
from transforms.io.versions import INDEX_SCHEMA, index_record
from transforms.schema import DEAD_LETTER_SCHEMA, STORY_PRINT

PENDING_PANES_DIR = "_pending_panes"
DEAD_LETTER_DATASET = "dead_letters"  # where the dead letters of rejected rows go
log = logging.getLogger(__name__)


def window_start(epoch_seconds: float, window_seconds: int) -> int:
    """Start (epoch seconds) of the fixed window of `window_seconds` that holds a moment."""
    return int(epoch_seconds // window_seconds) * window_seconds


def window_label(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")


def rows_digest(records: Iterable[dict[str, Any]]) -> str:
    """A digest of a pane's rows, independent of their order: the same rows give the same file name."""
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in records)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


def window_file_name(start: int, run_id: str, digest: str) -> str:
    return f"part-{window_label(start)}-{run_id}-{digest}.parquet"


def stamp_fetch_time(
    record: dict[str, Any], fetched_at: datetime, run_id: str, version: str
) -> dict[str, Any]:
    """A streamed record with its fetch time as ingest time and partition date (UTC), and the run."""
    stamped = {**record, "ingest_date": fetched_at.strftime("%Y-%m-%d"), "run_id": run_id}
    stamped["pipeline_version"] = version
    if "ingested_at" in record:
        stamped["ingested_at"] = fetched_at
    return stamped


@dataclass(frozen=True)
class WindowFileSpec(DatasetFiles):
    """What `WriteWindowedParquet` writes: one dataset, its columns and partition keys, its windows."""

    window_seconds: int
    settings: ParquetSettings = field(default_factory=ParquetSettings)
    with_index: bool = False  # articles: decide against the version index, publish its delta with them
    cleanup_after: int = 86_400  # seconds after a window's end its pane counter is forgotten
    rejects_to_dead_letters: bool = False  # articles: a record Arrow rejects becomes a dead letter
    stories: StorySettings | None = None  # articles: decide the stories of the pane's stored revisions


class PaneCommit(NamedTuple):
    """What one pane's commit did: the files published (articles first), the rows kept and dropped,
    and the longest time from a kept row's fetch to its publication (milliseconds)."""

    paths: list[str]
    rows: int
    already_stored: int
    stale: int
    latency_ms: int = 0


def latency_ms(records: Iterable[dict[str, Any]], published_at: datetime) -> int:
    """Milliseconds from the earliest fetch of `records` to `published_at` (0 when none has a fetch time)."""
    fetched = [r["ingested_at"] for r in records if isinstance(r.get("ingested_at"), datetime)]
    return max(0, round((published_at - min(fetched)).total_seconds() * 1000)) if fetched else 0


def pane_marker_dir(output: str) -> str:
    return join_path(output, RUNS_DIR, PENDING_PANES_DIR)


def recover_panes(output: str) -> int:
    """Roll forward every pane commit a crash left decided but unpublished; the caller holds the lock.

    A pane's staged files sit in `_runs/_pending_panes/<pane>/`, its decision in `<pane>.json` beside
    it. With the decision, the moves are carried out; without (the crash came before it), the files
    are garbage: panes are staged and decided under the commit lock, so none is being written now.
    Nothing here is in `_staging/`, whose abandoned folders batch runs and restarts remove.
    """
    folder = pane_marker_dir(output)
    if not FileSystems.exists(folder):
        return 0
    recovered = 0
    for match in list_files(folder, ".json"):
        decision = read_json(match.path)
        publish(decision.get("moves", []), strict=False)  # one found at neither end was rolled forward
        _delete_replaced(output, decision.get("replaced", []))
        delete_inside(folder, [match.path])
        recovered += 1
    leftovers = list_children(folder)  # listed, not matched: the output may be named `out[1]`
    delete_inside(folder, [path for path in leftovers if not path.endswith(".json")])
    if recovered:
        log.info("rolled forward %d interrupted pane commits in %s", recovered, output)
    return recovered


def _delete_replaced(output: str, paths: list[str]) -> None:
    """Delete the story deltas a published pane merged (only commits, under the lock, read them)."""
    delete_inside(join_path(output, STATE_DIR), paths)


def commit_pane(
    spec: WindowFileSpec,
    partition: str,
    start: int,
    records: list[dict[str, Any]],
    committed: CommittedVersions | None = None,
) -> PaneCommit:
    """Decide a pane's rows against what is committed and publish them (see the module docstring)."""
    with CommitLock(spec.output, f"stream {spec.run_id}"):
        fault_point("pane.locked")
        recover_panes(spec.output)
        already = stale = 0
        if spec.with_index:
            committed = committed if committed is not None else CommittedVersions(spec.output)
            committed.refresh()
            records, dropped = decide_revisions(records, committed)
            already = sum(1 for _, reason in dropped if reason == ALREADY_STORED)
            stale = len(dropped) - already
        if not records:
            return PaneCommit([], 0, already, stale)
        name = window_file_name(start, spec.run_id, rows_digest(records))
        file_schema = spec.file_schema()
        # Records Arrow rejects (transforms/io/parquet.py, `convert_records`) become `write` dead letters
        # of the same pane when the spec says so; they are not stored, so not in the index.
        table, written, rejected = convert_records(records, file_schema)
        if rejected and not spec.rejects_to_dead_letters:
            raise refuse_records(spec.dataset, rejected)
        tables = []
        if written:
            tables.append((join_path(spec.output, spec.dataset, partition, name), table))
        index_rows = [index_record(r) for r in written] if spec.with_index else []
        if index_rows:
            tables.append(
                (join_path(spec.output, INDEX_DATASET, name), records_to_table(index_rows, INDEX_SCHEMA))
            )
        replaced: list[str] = []  # earlier panes' story deltas merged into this pane's (bounded buckets)
        if spec.stories is not None and written:
            # Under the lock, against the committed story index: published with the pane, or not at all.
            prints = [print_row(r) for r in written if STORY_PRINT in r]
            for story_file in decide_stories(
                spec.output, prints, spec.run_id, spec.stories, datetime.now(UTC)
            ):
                story_file, merged = bound_pane_deltas(spec.output, story_file)
                replaced += merged
                file_name = pane_story_name(name) if is_story_index(story_file.dataset) else name
                tables.append((story_file_path(spec.output, story_file, file_name), story_file.table))
        tables += _window_dead_letter_tables(spec, name, rejected)
        pane = f"{spec.run_id}-{spec.dataset.replace('/', '_')}-{name.removesuffix('.parquet')}"
        staging = join_path(pane_marker_dir(spec.output), pane)
        moves = []
        for number, (final, table) in enumerate(tables):
            staged = join_path(staging, f"{number}{posixpath.splitext(final)[1]}")
            write_table_file(table, staged, spec.settings)  # Parquet, or Arrow for a band delta
            moves.append({"staged_path": staged, "final_path": final})
        # The same rows published before: replace nothing, and then delete no delta either (the
        # published file may not hold the merge).
        published = {move["final_path"] for move in moves if FileSystems.exists(move["final_path"])}
        if published:
            replaced = []
        marker = f"{staging}.json"
        write_json_atomically(marker, {"run_id": spec.run_id, "moves": moves, "replaced": replaced})
        fault_point("pane.decided")
        for move in moves:
            if move["final_path"] in published:
                delete_inside(staging, [move["staged_path"]])
            else:
                publish([move])
        fault_point("pane.published")
        _delete_replaced(spec.output, replaced)
        delete_inside(pane_marker_dir(spec.output), [marker, staging])
        if committed is not None and index_rows:
            committed.note_committed(join_path(spec.output, INDEX_DATASET, name), index_rows)
        latency = latency_ms(written, datetime.now(UTC))
        return PaneCommit([move["final_path"] for move in moves], len(written), already, stale, latency)


def _window_dead_letter_tables(
    spec: WindowFileSpec, name: str, rejected: list[RejectedRecord]
) -> list[tuple[str, pa.Table]]:
    """The dead letters of a pane's rejected records, one table per `ingest_date` (the records' own)."""
    by_date: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bad in rejected:
        letter = rejected_dead_letter(spec.dataset, bad)
        letter.update(
            ingest_date=bad.record.get("ingest_date"),
            run_id=bad.record.get("run_id") or spec.run_id,
            pipeline_version=bad.record.get("pipeline_version"),
        )
        by_date[partition_path(letter, ("ingest_date",))].append(letter)
    schema = pa.schema(
        [f for f in DEAD_LETTER_SCHEMA if f.name != "ingest_date"], metadata=DEAD_LETTER_SCHEMA.metadata
    )
    return [
        (join_path(spec.output, DEAD_LETTER_DATASET, folder, name), records_to_table(letters, schema))
        for folder, letters in sorted(by_date.items())
    ]


# --- the stateful writer -----------------------------------------------------------------------------


class _WriteWindowPanesFn(beam.DoFn):
    BUFFER = userstate.BagStateSpec("buffer", PickleCoder())
    PANE = userstate.ReadModifyWriteStateSpec("pane", VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    CLEANUP = userstate.TimerSpec("cleanup", TimeDomain.WATERMARK)
    _BUFFER_PARAM = beam.DoFn.StateParam(BUFFER)
    _PANE_PARAM = beam.DoFn.StateParam(PANE)
    _FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)
    _CLEANUP_PARAM = beam.DoFn.TimerParam(CLEANUP)
    _KEY_PARAM = beam.DoFn.KeyParam

    def __init__(self, spec: WindowFileSpec) -> None:
        self._spec = spec
        self._rows = Metrics.counter("write", f"{spec.dataset}_rows")
        self._files = Metrics.counter("write", f"{spec.dataset}_files")
        self._late = Metrics.counter("write", f"{spec.dataset}_late_rows")
        self._already = Metrics.counter("write", f"{spec.dataset}_already_stored")
        self._stale = Metrics.counter("write", f"{spec.dataset}_stale")

    def setup(self) -> None:
        self._committed = shared_versions(self._spec.output) if self._spec.with_index else None

    def process(
        self,
        keyed: tuple[str, dict[str, Any]],
        buffer: Any = _BUFFER_PARAM,
        pane: Any = _PANE_PARAM,
        flush: Any = _FLUSH_PARAM,
    ) -> Iterator[Any]:
        start = int(keyed[0].split("|", 1)[0])
        buffer.add(keyed[1])
        if pane.read():
            self._late.inc()  # its window was written already: it goes into the next pane
        flush.set(Timestamp.of(start + self._spec.window_seconds))
        return iter(())

    @userstate.on_timer(FLUSH)
    def _flush(
        self,
        key: Any = _KEY_PARAM,
        buffer: Any = _BUFFER_PARAM,
        pane: Any = _PANE_PARAM,
        cleanup: Any = _CLEANUP_PARAM,
    ) -> Iterator[dict[str, Any]]:
        records = list(buffer.read())
        if not records:
            return
        start_text, partition = key.split("|", 1)
        start, index = int(start_text), pane.read() or 0
        result = commit_pane(self._spec, partition, start, records, self._committed)
        if self._spec.with_index:
            report_records_committed(records)  # each one stored now or found stored: decided
        buffer.clear()
        pane.write(index + 1)
        cleanup.set(Timestamp.of(start + self._spec.window_seconds + self._spec.cleanup_after))
        self._rows.inc(result.rows)
        self._files.inc(1 if result.rows else 0)
        self._already.inc(result.already_stored)
        self._stale.inc(result.stale)
        yield {
            "dataset": self._spec.dataset,
            "path": result.paths[0]
            if result.rows
            else None,  # the articles file (index and dead letters follow)
            "rows": result.rows,
            "window_start": start,
            "pane": index,
            "late_rows": result.rows if index > 0 else 0,
            "already_stored": result.already_stored + result.stale,
            "latency_ms": result.latency_ms,
        }

    @userstate.on_timer(CLEANUP)
    def _cleanup(self, buffer: Any = _BUFFER_PARAM, pane: Any = _PANE_PARAM) -> None:
        if not list(buffer.read()):  # keys of old windows hold no state for ever
            pane.clear()


class WriteWindowedParquet(beam.PTransform[Any, Any]):
    """Timestamped records -> Parquet files per fetch-time window and partition (one dict per pane commit).

    Each dict names the dataset, the published file (None when every row was already stored), the
    rows written, the window, the pane and the rows the commit found already stored.
    """

    def __init__(self, spec: WindowFileSpec) -> None:
        super().__init__()
        validate_run_id(spec.run_id)
        self._spec = spec

    def expand(self, records: PCollection[Any]) -> PCollection[Any]:
        spec = self._spec

        def key_by_window(
            record: dict[str, Any], at: Any = beam.DoFn.TimestampParam
        ) -> tuple[str, dict[str, Any]]:
            start = window_start(float(at), spec.window_seconds)
            return f"{start}|{partition_path(record, spec.partition_keys)}", record

        result: PCollection[Any] = (
            records
            | "KeyByWindowAndPartition" >> beam.Map(key_by_window).with_output_types(tuple[str, Any])
            | "WritePanes" >> beam.ParDo(_WriteWindowPanesFn(spec))
        )
        return result
