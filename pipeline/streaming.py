"""`newsbeam stream`: run the streaming job until Ctrl-C, SIGTERM or `--duration`, then report.

Locally it runs on Beam's Prism runner (built by `make prism`; `configs/streaming.yaml`):

    newsbeam stream --config configs/streaming.yaml                 # until Ctrl-C
    newsbeam stream --config configs/streaming.yaml --duration 10m --output /tmp/news

On Dataflow or Flink the same pipeline runs with `--runner=DataflowRunner ...` (Beam options pass
through). The local runners have no drain and `cancel()` discards buffered windows, so a stop is
a stop *flag*: the first Ctrl-C or SIGTERM creates `OUTPUT/_runs/<run_id>.stop`, the poll source
sees it within a second and finishes, the watermark reaches the end of time, every window is
committed, and the job ends on its own. Prism runs in a session of its own (pipeline/runners.py),
so a terminal's Ctrl-C reaches only this process. A second Ctrl-C cancels at once: this process
takes the commit lock (so no pane commit is half done), stops Prism and exits; the run's staging
is left outside every dataset and removed, with any decided pane rolled forward, by the next start
(`recover_panes`, `recover_runs`). Buffered windows are lost then, and polled again by the restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.pipeline import Pipeline

from pipeline.build import build_stream, pages_folder
from pipeline.config import Settings
from pipeline.maintenance import MaintenanceError
from pipeline.options import make_pipeline_options
from pipeline.run import pipeline_version
from pipeline.runners import (
    PRISM_ALIASES,
    PrismServer,
    make_runner,
    prism_binary,
    prism_job_options,
)
from transforms.feed_state import FeedSource
from transforms.io.commit import recover_runs
from transforms.io.lock import CommitLock
from transforms.io.parquet import read_parquet_metadata
from transforms.io.paths import RUNS_DIR, delete_inside, join_path, list_files, validate_run_id
from transforms.io.staging import StagingInUseError, check_staging_free, remove_staging, take_staging_lease
from transforms.io.versions import check_index
from transforms.io.window import recover_panes
from transforms.poll_schedule import PollSchedule, tick_seconds_for
from transforms.schema import DATASETS, RunInfo

STREAM_LOGGER = "newsbeam.stream"
STREAM_JOB_SERVER_TIMEOUT = 10 * 365 * 86400  # seconds: see stream_beam_args
log = logging.getLogger(STREAM_LOGGER)


def stream_feeds(settings: Settings) -> tuple[FeedSource, ...]:
    """The feeds to poll: `feeds:`, OPML lists and the (http(s): `Settings.check_mode`) `inputs`."""
    listed = settings.feed_list.feeds
    known = {feed.url for feed in listed}
    return (*listed, *(FeedSource(url) for url in settings.inputs if url not in known))


def stop_file_path(output: str, run_id: str) -> str:
    return join_path(output, RUNS_DIR, f"{run_id}.stop")


def _request_stop(path: str) -> None:
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path) as stream:
        stream.write(datetime.now(UTC).isoformat().encode("utf-8"))


class _StopOnSignal:
    """First SIGINT/SIGTERM: create the stop file. Second: KeyboardInterrupt (cancel). Installed from
    before the runner starts to after the report, so that no Ctrl-C in between kills the command."""

    def __init__(self, stop_file: str) -> None:
        self._stop_file = stop_file
        self._signalled = False
        self._ignoring = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back: Beam's job server installs its own SIGINT handler when it starts."""
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def ignore_further(self) -> None:
        """From now on (a cancel or the job's end) signals are ignored until the command returns."""
        self._ignoring = True

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            # Once the job is over the command only exits: a late Ctrl-C would otherwise land in the
            # interpreter's shutdown, when Python has put back the default action, and kill it.
            signal.signal(number, signal.SIG_IGN if self._ignoring else handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self._ignoring:
            return
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True
        print(
            "newsbeam stream: stopping; open windows are being written (Ctrl-C again to cancel)",
            file=sys.stderr,
        )
        _request_stop(self._stop_file)


_RUN_FILE = re.compile(r"^part-\d{8}T\d{6}Z-(?P<run>.+)-[0-9a-f]{16}\.parquet$")


def files_of_run(output: str, run_id: str) -> dict[str, list[str]]:
    """The published files a streaming run wrote, per dataset (local outputs and object stores)."""
    found: dict[str, list[str]] = defaultdict(list)
    for dataset in DATASETS:
        for metadata in list_files(join_path(output, dataset), ".parquet", recursive=True):
            match = _RUN_FILE.match(metadata.path.rsplit("/", 1)[-1])
            if match and match.group("run") == run_id:
                found[dataset].append(metadata.path)
    return {dataset: sorted(paths) for dataset, paths in found.items()}


def stream_report(output: str, run_id: str, state: str, elapsed: float) -> str:
    files = files_of_run(output, run_id)
    lines = [f"newsbeam stream {run_id}: {state} after {elapsed:.1f}s"]
    for dataset in DATASETS:
        paths = files.get(dataset, [])
        rows = 0
        for path in paths:
            rows += read_parquet_metadata(path).num_rows
        lines.append(f"  {dataset + ':':<14} {rows} rows in {len(paths)} files")
    lines.append(f"  output:        {output}")
    return "\n".join(lines)


def stream_beam_args(settings: Settings, beam_args: list[str]) -> list[str]:
    """The command line's Beam flags, plus what an unbounded job needs.

    Beam's portable runner opens the job's state and message streams with `job_server_timeout`
    (default 60 s) as their gRPC deadline, so a job that runs longer dies with DEADLINE_EXCEEDED
    after a minute; a streaming job gets a deadline of years unless the config or command line sets one.
    """
    flags = [*beam_args, "--streaming"]
    given = "job_server_timeout" in settings.beam_options or any(
        flag.startswith(("--job_server_timeout", "--job-server-timeout")) for flag in beam_args
    )
    if not given:
        flags.insert(0, f"--job_server_timeout={STREAM_JOB_SERVER_TIMEOUT}")
    return flags


def run_stream(settings: Settings, beam_args: list[str], run_id: str) -> int:
    """Run the streaming job until stopped (`stream.duration`, the stop flag, Ctrl-C); the exit code."""
    validate_run_id(run_id)
    settings.check_mode("stream")
    feeds = stream_feeds(settings)
    duration = settings.stream.duration
    started = time.time()
    run = RunInfo(run_id, datetime.fromtimestamp(int(started), UTC), pipeline_version())
    stop_file = stop_file_path(settings.output, run.run_id)
    schedule = PollSchedule(
        tick_seconds=tick_seconds_for(feeds, settings.stream.poll_interval),
        duration=duration or None,  # counted from the first real poll, not from the launch
        stop_file=stop_file,
    )
    logging.getLogger(STREAM_LOGGER).setLevel(logging.INFO)
    options = make_pipeline_options(
        settings.runner, settings.beam_options, stream_beam_args(settings, beam_args)
    )
    FileSystems.set_options(options)  # s3:// and gs:// outputs need them before the pipeline exists
    with CommitLock(settings.output, f"recovery before stream {run_id}"):
        recover_panes(settings.output)  # panes a stopped stream decided are published, whole
        recover_runs(settings.output)  # removes the staging of runs that died before their decision
        check_index(settings.output)  # a damaged index would seed the stream's dedupe wrongly
        try:
            check_staging_free(settings.output, run_id)
        except StagingInUseError as error:
            raise MaintenanceError(str(error)) from None
        take_staging_lease(settings.output, run_id)  # released by remove_staging when it ends
        if FileSystems.exists(stop_file):  # left by a run of this id killed while it drained
            delete_inside(join_path(settings.output, RUNS_DIR), [stop_file])
    with _StopOnSignal(stop_file) as stopper:
        try:
            state = _run_job(settings, beam_args, run, schedule, feeds, duration, stopper)
        except KeyboardInterrupt:  # a second Ctrl-C before the job was submitted
            state = "cancelled"
        finally:
            stopper.ignore_further()  # the job is over: a late Ctrl-C must not break the report
            # The page-fetching folder of the job's workers on this machine: nothing in it outlives the job.
            shutil.rmtree(pages_folder(run), ignore_errors=True)
        print(stream_report(settings.output, run.run_id, state, time.time() - started))
    return 0 if state.upper().endswith("DONE") else 1


def _run_job(
    settings: Settings,
    beam_args: list[str],
    run: RunInfo,
    schedule: PollSchedule,
    feeds: tuple[FeedSource, ...],
    duration: int | None,
    stopper: _StopOnSignal,
) -> str:
    """Start the runner, submit the job and wait for its end; returns its final state."""
    stop_file = schedule.stop_file or ""
    with contextlib.ExitStack() as resources:
        runner, job_flags = make_runner(settings.runner), []
        if settings.runner.strip().lower() in PRISM_ALIASES:
            prism = resources.enter_context(PrismServer(prism_binary()))
            runner, job_flags = "PortableRunner", prism_job_options(prism)
            print(f"newsbeam stream: Prism on {prism.endpoint} (runner pid {prism.pid})", file=sys.stderr)
        options = make_pipeline_options(
            settings.runner, settings.beam_options, stream_beam_args(settings, [*job_flags, *beam_args])
        )
        pipeline = Pipeline(runner=runner, options=options)
        build_stream(pipeline, settings, run, schedule, feeds)
        print(
            f"newsbeam stream {run.run_id}: polling {len(feeds)} feeds every {schedule.tick_seconds:g}s or "
            f"more, {settings.stream.window}s windows, into {settings.output}"
            + (f", for {duration}s" if duration else "; Ctrl-C to stop"),
            file=sys.stderr,
        )
        state = _run_until_stopped(pipeline, settings.output, stopper)
        if FileSystems.exists(stop_file):
            delete_inside(join_path(settings.output, RUNS_DIR), [stop_file])
        if state.upper().endswith("DONE"):
            # The job is over: nothing is committing. After a cancel the staging stays with its lease
            # released when this process ends; the next start (or any run's recovery) removes it.
            remove_staging(settings.output, run.run_id)
    return state


def _run_until_stopped(pipeline: Pipeline, output: str, stopper: _StopOnSignal) -> str:
    """Run the job until it ends (after a stop flag: drained); a second Ctrl-C cancels it at once."""
    result = None
    try:
        result = pipeline.run()
        stopper.reinstall()
        return str(result.wait_until_finish())
    except KeyboardInterrupt:
        stopper.ignore_further()
        print("newsbeam stream: cancelling; the next start cleans up what this run staged", file=sys.stderr)
        # Held from here to the exit: no pane commit is under way or can begin (the SDK workers
        # run in this process), so what readers see is whole.
        lock = CommitLock(output, "a cancelled stream", timeout=60)
        with contextlib.suppress(Exception):
            lock.__enter__()
        if result is not None:
            with contextlib.suppress(Exception):  # the job may already be gone
                result.cancel()
        return "cancelled"
