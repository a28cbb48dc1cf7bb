"""CommitRun: publish a run's staged files so that readers only ever see whole files.

`CommitRun` gathers every staged file of the run (all datasets, and the run's delta of the version
index, see transforms/io/versions.py) and, under the commit lock (transforms/io/lock.py): rolls
forward commits a crash interrupted, reconciles with runs that committed since this one read the
index, decides the near-duplicate stories of what it publishes (transforms/io/story_index.py: the
`stories` rows and the story index's deltas join the run's files), writes a pending marker
`OUTPUT/_runs/_pending/<run_id>` and the run manifest `OUTPUT/_runs/<run_id>.json` with status
`committing` and the list of moves (the decision), renames each file into
`OUTPUT/<dataset>/<key>=<value>/...`, marks the manifest `committed`, and removes the staging
folder and the marker. A commit interrupted after its decision is rolled forward from
its manifest (`recover_runs`) by the next run, compact or prune.

`apply_manifest` carries out the same protocol for `newsbeam compact` and `newsbeam prune`, whose
manifests also retire replaced files (`retired`: moves into `OUTPUT/_trash/`). Between the first
and the last rename readers listing the folders may see part of a commit (the exposure window,
documented in the README); they never see a temporary or partial file. `publish` is also how the
streaming writer (transforms/io/window.py) moves a pane's files into place.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection
from apache_beam.transforms.combiners import ToListCombineFn
from apache_beam.transforms.core import CombineGlobally

from transforms.fetch import redact_url
from transforms.io.faults import fault_point
from transforms.io.lock import CommitLock
from transforms.io.manifests import (
    manifest_path,
    pending_folder,
    pending_path,
    read_json,
    write_json_atomically,
)
from transforms.io.parquet import ParquetSettings, return_freed_memory_at_once
from transforms.io.paths import RUNS_DIR, delete_inside, ensure_parent, join_path, list_files, validate_run_id
from transforms.io.run_stories import stage_run_stories
from transforms.io.staging import StagedFile, remove_abandoned_staging, remove_staging
from transforms.io.story_index import STAGED_PRINTS, StorySettings
from transforms.io.versions import reconcile_with_store


def publish(moves: list[dict[str, Any]], fault_prefix: str = "", strict: bool = True) -> int:
    """Rename staged files to their final paths; files already moved (a resumed commit) are skipped.

    With `strict`, a file found at neither end is an error (a staged file lost before its commit);
    without, it is skipped (a retired file whose trash was already emptied).
    """
    moved = 0
    for number, move in enumerate(moves, start=1):
        staged, final = move["staged_path"], move["final_path"]
        if FileSystems.exists(staged):
            ensure_parent(final)
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
    ensure_parent(marker)
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


def commit_run(
    output: str,
    run_id: str,
    started_at: datetime,
    inputs: list[str],
    files: Iterable[StagedFile],
    snapshot: list[str] | None = None,
    lock_timeout: float = 600.0,
    settings: ParquetSettings | None = None,
    stories: StorySettings | None = None,
) -> dict[str, Any]:
    """Publish a run's staged files under the protocol in the module docstring; returns the manifest.

    Runs under the commit lock: first rolls forward any commit a crash interrupted, then (with the
    store `snapshot`) reconciles with runs committed meanwhile (files it changes are written again
    with `settings`), then (with `stories` enabled) decides the stories of the article versions it
    publishes against the committed story index (transforms/io/story_index.py: its files join the
    manifest), then publishes. A run id that is
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
        prints = [f for f in files if f.dataset == STAGED_PRINTS]  # read here, never published
        files = [f for f in files if f.dataset != STAGED_PRINTS]
        if snapshot is not None:
            files, reconciled = reconcile_with_store(output, files, snapshot, settings)
        lost = [f.staged_path for f in [*files, *prints] if not FileSystems.exists(f.staged_path)]
        if lost:  # before the decision: a manifest naming a lost file could never be rolled forward
            raise FileNotFoundError(
                f"run {run_id}: {len(lost)} staged files are gone (e.g. {lost[0]}; was its staging "
                "removed as abandoned?); nothing was published, run it again"
            )
        retired: list[StagedFile] = []  # story deltas merged by this commit (stage_run_stories)
        if stories is not None and stories.enabled:
            now = datetime.now(UTC)
            story_files, retired = stage_run_stories(
                output, run_id, files, prints, stories, settings or ParquetSettings(), now
            )
            files += story_files
        files = sorted(files, key=lambda f: f.final_path)
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
        if retired:
            manifest["retired"] = [asdict(f) | {"rows_per_source": None} for f in retired]
        return apply_manifest(output, manifest, "commit")


def without_source_counts(staged: StagedFile) -> StagedFile:
    """The staged file without its rows per source: counted already (`CountPerSource`), never
    published, and at a million articles tens of thousands of entries in the one gathered list."""
    return replace(staged, rows_per_source={}) if staged.rows_per_source else staged


class _CommitFn(beam.DoFn):
    def __init__(
        self,
        output: str,
        run_id: str,
        started_at: datetime,
        inputs: list[str],
        settings: ParquetSettings,
        stories: StorySettings | None,
    ) -> None:
        self._output, self._run_id, self._started_at, self._inputs = output, run_id, started_at, inputs
        self._settings = settings
        self._stories = stories

    def setup(self) -> None:
        return_freed_memory_at_once()  # the ranking's and the chunks' arrays are unmapped when freed

    def process(
        self, files: list[StagedFile], snapshot: list[str] | None = None, unaccounted: int = 0
    ) -> Iterator[dict[str, Any]]:
        if unaccounted:
            # Staged files stay in _staging/ (outside every dataset); the next run clears them.
            raise RuntimeError(
                f"run {self._run_id}: {unaccounted} entries are neither written, duplicates, dead letters, "
                "already stored nor cut; refusing to commit (see feed_fetches in the staging folder)"
            )
        yield commit_run(
            self._output,
            self._run_id,
            self._started_at,
            self._inputs,
            files,
            snapshot,
            settings=self._settings,
            stories=self._stories,
        )


class CommitRun(beam.PTransform[Any, Any]):
    """All staged files of the run -> published datasets and the run manifest (one element).

    `snapshot`, when given, is the one-element PCollection of index files that
    `DeduplicateArticles` read; the commit reconciles with deltas committed after it.
    `unaccounted`, when given, is the one-element count of entries the run's books do not explain
    (`CountUnaccounted`): any other value than 0 fails the run before anything is published.
    `settings` are the run's Parquet settings, for the files a reconciliation writes again.
    `stories`, when enabled, has the commit decide the stories of what it publishes (the staged
    prints of `StagePrints` come in with the other staged files).
    """

    def __init__(
        self,
        output: str,
        run_id: str,
        started_at: datetime,
        inputs: list[str],
        snapshot: PCollection[Any] | None = None,
        unaccounted: PCollection[Any] | None = None,
        settings: ParquetSettings | None = None,
        stories: StorySettings | None = None,
    ) -> None:
        super().__init__()
        self._fn = _CommitFn(output, run_id, started_at, inputs, settings or ParquetSettings(), stories)
        self._snapshot = snapshot
        self._unaccounted = unaccounted

    def expand(self, staged: PCollection[Any]) -> PCollection[Any]:
        gathered = (
            staged
            | "DropSourceCounts" >> beam.Map(without_source_counts)
            | "GatherStagedFiles" >> CombineGlobally(ToListCombineFn())
        )
        side_inputs: dict[str, Any] = {}
        if self._snapshot is not None:
            side_inputs["snapshot"] = beam.pvalue.AsSingleton(self._snapshot)
        if self._unaccounted is not None:
            side_inputs["unaccounted"] = beam.pvalue.AsSingleton(self._unaccounted)
        result: PCollection[Any] = gathered | "PublishAndWriteManifest" >> beam.ParDo(self._fn, **side_inputs)
        return result
