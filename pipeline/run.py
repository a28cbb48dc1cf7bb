"""One batch run, from Python or the CLI: run ids, the pipeline version, `run_batch`.

In a notebook or a script:

    from pipeline import run_batch

    result = run_batch("configs/local.yaml", {"output": "/tmp/news"})
    result.counts.articles, result.manifest["files"][0]["final_path"]

`run_batch` takes validated `Settings` or a config path with overrides (the keys of the config
file, dotted for nested ones), runs the batch pipeline once, commits, and returns what was
committed as a `BatchResult`. The CLI (`newsbeam run`) is a thin shell around it. Beam is imported
only once a run starts, so `newsbeam --help` stays quick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger("newsbeam")


def pipeline_version() -> str:
    try:
        return metadata.version("newsbeam")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def new_run_id(started_at: datetime | None = None) -> str:
    """`20261202T083000Z-3fa2c1`: the start time (now when None) and a random suffix."""
    at = started_at or datetime.now(UTC).replace(microsecond=0)
    return f"{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class RunCounts(NamedTuple):
    """What a committed run read and wrote, from its manifest and its `feed_fetches` rows."""

    inputs: int  # inputs read (files, folders' files, feeds), one `feed_fetches` row each
    failed_inputs: int  # of them, those that failed (error or not a feed)
    entries: int  # entries found in the inputs
    articles: int  # article rows committed
    duplicates: int  # entries that repeated another of this run
    already_stored: int  # articles the store had, unchanged, from earlier runs
    dead_letters: int  # dead-letter rows committed


@dataclass(frozen=True)
class BatchResult:
    """A committed batch run: its id, output, manifest, counts and the end-of-run report."""

    run_id: str
    output: str
    manifest: dict[str, Any]
    counts: RunCounts
    report: str  # the text `newsbeam run` prints
    already_committed: bool = False  # the run id was committed before: nothing was run

    @property
    def article_files(self) -> list[str]:
        return [f["final_path"] for f in self.manifest.get("files", []) if f["dataset"] == "articles"]


def _metrics(result: Any) -> dict[str, int]:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # not every runner reports metrics
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        key = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
        totals[key] = totals.get(key, 0) + int(counter.committed or counter.attempted or 0)
    return totals


def listed_input_count(settings: Settings) -> int | None:
    """How many inputs the run will read, when every one is a URL or a file; None for folders and globs."""
    count = len(settings.feed_list.feeds)
    for item in settings.inputs:
        if "://" in item:
            if not item.startswith(("http://", "https://")):
                return None
        elif any(ch in item for ch in "*?[") or not os.path.isfile(item):
            return None
        count += 1
    return count


def _shows_progress(settings: Settings) -> bool:
    """Progress datagrams reach the caller only from workers on this machine (see pipeline/progress.py)."""
    from pipeline.runners import LOCAL_ALIASES, PRISM_ALIASES

    return settings.runner.strip().lower() in LOCAL_ALIASES | PRISM_ALIASES


def committed_counts(manifest: dict[str, Any], output: str) -> RunCounts:
    """The counts of a committed run, read from its manifest and files."""
    return _summarized(manifest, output)[0]


def _summarized(manifest: dict[str, Any], output: str) -> tuple[RunCounts, Any]:
    from pipeline.report import RunSummary

    summary = RunSummary.of(manifest, output)
    fetches = summary.fetches
    counts = RunCounts(
        inputs=summary.inputs,
        failed_inputs=summary.failed_inputs,
        entries=sum(row["entries"] or 0 for row in fetches),
        articles=int(manifest.get("counts", {}).get("articles", {}).get("rows", 0)),
        duplicates=sum(row["duplicates"] or 0 for row in fetches),
        already_stored=sum(row["already_stored"] or 0 for row in fetches),
        dead_letters=len(summary.dead),
    )
    return counts, summary


def run_batch(
    settings: Settings | str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    beam_args: Sequence[str] = (),
    run_id: str | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> BatchResult:
    """Run the batch job once and return what it committed.

    `settings` is validated `Settings`, or a config path that `overrides` apply to. `beam_args`
    are Beam pipeline flags (`--direct_num_workers=2`). A `run_id` already committed runs nothing
    (`already_committed`). With `progress`, a local run shows its progress while it goes (a bar on
    a terminal, else a log line every `progress_interval`); `verbose` adds Beam's counters to the
    report. Raises ConfigError for settings a batch run cannot use, RunIdError for a bad id.
    """
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.pipeline import Pipeline

    from pipeline.build import build_batch, pages_folder
    from pipeline.config import Settings, load_settings
    from pipeline.maintenance import prepare_run
    from pipeline.options import make_pipeline_options
    from pipeline.progress import showing_progress
    from pipeline.runners import make_runner
    from transforms.io.manifests import manifest_path, read_json
    from transforms.io.parquet import giving_back_free_heap
    from transforms.io.paths import validate_run_id
    from transforms.io.staging import release_staging_lease
    from transforms.schema import RunInfo

    if isinstance(settings, Settings):
        if overrides:
            raise TypeError("overrides apply to a config path; give Settings with the values set instead")
        settings.check_mode("batch")
    else:
        settings = load_settings(settings, overrides, mode="batch")
    if run_id is not None:
        validate_run_id(run_id)
    started_at = datetime.now(UTC).replace(microsecond=0)
    run = RunInfo(run_id or new_run_id(started_at), started_at, pipeline_version())
    flags = list(beam_args)
    # Roll forward commits a crash interrupted (so the seen-set is whole) and clear this run id's
    # partial staging; a run id already committed has nothing left to do.
    # s3:// and gs:// outputs need the run's options (endpoint, credentials) before the pipeline exists.
    options = make_pipeline_options(settings.runner, settings.beam_options, flags)
    FileSystems.set_options(options)
    done = prepare_run(settings.output, run.run_id)
    if done is not None:
        counts = committed_counts(done, settings.output)
        text = f"newsbeam run {run.run_id}: already committed at {done.get('ended_at')}; nothing to do"
        return BatchResult(run.run_id, settings.output, done, counts, text, already_committed=True)
    total = listed_input_count(settings)
    reading = f"reading {total} inputs" if total is not None else "reading its inputs"
    log.info(
        "newsbeam run %s on the %s runner: %s, writing into %s",
        run.run_id,
        settings.runner,
        reading,
        settings.output,
    )
    clock = time.monotonic()
    pipeline = Pipeline(runner=make_runner(settings.runner), options=options)
    with contextlib.ExitStack() as stack:
        address = None
        if progress and _shows_progress(settings):
            address = stack.enter_context(showing_progress(run.run_id, total, settings.progress_interval))
        build_batch(pipeline, settings, run, progress=address)
        stack.enter_context(giving_back_free_heap())  # a local runner's buffers live in this process
        try:
            result = pipeline.run()
            result.wait_until_finish()
        finally:  # a failed run's staging is garbage for the next run once this lease is free
            release_staging_lease(settings.output, run.run_id)
            # The page-fetching folder of the run's workers on this machine: nothing in it outlives the run.
            shutil.rmtree(pages_folder(run), ignore_errors=True)
    manifest: dict[str, Any] = read_json(manifest_path(settings.output, run.run_id))
    counts, summary = _summarized(manifest, settings.output)
    text = summary.text(time.monotonic() - clock, _metrics(result) if verbose else None)
    return BatchResult(run.run_id, settings.output, manifest, counts, text)
