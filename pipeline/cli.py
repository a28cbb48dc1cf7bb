"""The `newsbeam` command (also `python -m pipeline`).

Run the batch job locally on the shipped seeds:

    newsbeam run                                  # configs/local.yaml: seeds/ -> output/
    newsbeam run --input 'feeds/*.xml' https://example.com/feed.xml --output /tmp/out
    newsbeam run --direct_num_workers=2 --direct_running_mode=multi_processing

Flags newsbeam does not know are Beam pipeline options and pass through to the runner.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.pipeline import Pipeline

from pipeline.build import build_batch
from pipeline.config import ConfigError, Settings, load_settings
from pipeline.feeds import FeedListError, feed_list
from pipeline.launch import DATAFLOW_CONFIG, describe, launch_dataflow
from pipeline.launch import __doc__ as launch_doc
from pipeline.maintenance import (
    MaintenanceError,
    add_repair_command,
    compact,
    parse_age,
    prepare_run,
    prune,
    run_repair,
)
from pipeline.options import make_pipeline_options
from pipeline.report import render_report
from pipeline.runners import RunnerError, make_runner
from pipeline.streaming import STREAM_CONFIG, add_stream_command, run_stream
from transforms.paths import RunIdError, validate_run_id
from transforms.schema import RunInfo
from transforms.store import CommitLockLost, CommitLockTimeout
from transforms.write import manifest_path, read_json, release_staging_lease

DEFAULT_CONFIG = Path("configs/local.yaml")


def pipeline_version() -> str:
    try:
        return metadata.version("newsbeam")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def new_run_id(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsbeam", description="News ingestion on Apache Beam.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the batch pipeline once",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, default=None, help=f"YAML config (default {DEFAULT_CONFIG})")
    run.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATH|GLOB|URL",
        help="inputs instead of the config's: files, folders, globs, http(s) URLs",
    )
    run.add_argument(
        "--output", default=None, help="output folder or gs:// / s3:// URL (default from config)"
    )
    run.add_argument("--runner", default=None, help="direct (in-process), prism, or a Beam runner name")
    run.add_argument("--run-id", default=None, help="id of this run (default: time and random suffix)")
    run.add_argument(
        "--opml",
        nargs="+",
        action="extend",
        default=None,
        metavar="FILE",
        help="OPML subscription lists to fetch (instead of the config's `opml:`), besides `feeds:`",
    )
    run.add_argument(
        "--force", action="store_true", help="poll every feed now, ignoring ttl/max-age and failure backoff"
    )
    _add_maintenance_commands(commands)
    add_repair_command(commands)
    add_stream_command(commands)
    _add_launch_command(commands)
    return parser


def _add_launch_command(commands: Any) -> None:
    launch = commands.add_parser(
        "launch",
        help="submit the batch job to Dataflow and return (see configs/dataflow.yaml)",
        description=launch_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    launch.add_argument(
        "--config", type=Path, default=DATAFLOW_CONFIG, help=f"YAML config (default {DATAFLOW_CONFIG})"
    )
    launch.add_argument("--runner", default="dataflow", help="dataflow (the only cloud runner launched)")
    launch.add_argument("--input", nargs="+", action="extend", default=None, metavar="URL")
    launch.add_argument("--output", default=None, help="gs:// URL of the output (default from config)")
    launch.add_argument("--run-id", default=None, help="id of this run (default: time and random suffix)")
    launch.add_argument(
        "--dry-run", action="store_true", help="build the Dataflow job offline, submit nothing"
    )


def _add_maintenance_commands(commands: Any) -> None:
    compact = commands.add_parser(
        "compact", help="merge the small files of each partition into fewer larger ones (rows unchanged)"
    )
    prune = commands.add_parser("prune", help="remove ingest_date partitions older than --older-than")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12w, 36h")
    for command in (compact, prune):
        command.add_argument(
            "--config", type=Path, default=None, help=f"YAML config (default {DEFAULT_CONFIG})"
        )
        command.add_argument("--output", default=None, help="output folder (default from config)")
        command.add_argument(
            "--grace",
            default="1h",
            metavar="AGE",
            help="keep replaced files this long for readers (default 1h)",
        )
        command.add_argument(
            "--lock-timeout",
            type=float,
            default=600.0,
            help="seconds to wait for another commit (default 600)",
        )


def run_maintenance(command: str, settings: Settings, args: argparse.Namespace) -> None:
    try:
        grace = parse_age(args.grace)
        older_than = parse_age(args.older_than) if command == "prune" else None
    except MaintenanceError as error:
        raise ConfigError(str(error)) from None
    parquet = settings.parquet.settings()
    if command == "compact":
        report = compact(settings.output, grace=grace, settings=parquet, lock_timeout=args.lock_timeout)
    else:
        report = prune(
            settings.output,
            older_than or parse_age(args.older_than),
            grace=grace,
            settings=parquet,
            lock_timeout=args.lock_timeout,
        )
    print(report.text(command))


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


def run_batch(settings: Settings, beam_args: list[str], run_id: str | None = None) -> dict[str, Any]:
    started_at = datetime.now(UTC).replace(microsecond=0)
    run = RunInfo(run_id or new_run_id(started_at), started_at, pipeline_version())
    # Roll forward commits a crash interrupted (so the seen-set is whole) and clear this run id's
    # partial staging; a run id already committed has nothing left to do.
    # s3:// and gs:// outputs need the run's options (endpoint, credentials) before the pipeline exists.
    FileSystems.set_options(make_pipeline_options(settings.runner, settings.beam_options, beam_args))
    done = prepare_run(settings.output, run.run_id)
    if done is not None:
        print(f"newsbeam run {run.run_id}: already committed at {done.get('ended_at')}; nothing to do")
        return done
    options = make_pipeline_options(settings.runner, settings.beam_options, beam_args)
    clock = time.monotonic()
    pipeline = Pipeline(runner=make_runner(settings.runner), options=options)
    build_batch(pipeline, settings, run)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:  # a failed run's staging is garbage for the next run once this lease is free
        release_staging_lease(settings.output, run.run_id)
    manifest = read_json(manifest_path(settings.output, run.run_id))
    print(render_report(manifest, settings.output, time.monotonic() - clock, _metrics(result)))
    return manifest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, beam_args = _parser().parse_known_args(argv)
    config = args.config
    if config is None and args.command == "stream" and STREAM_CONFIG.exists():
        config = STREAM_CONFIG
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    try:
        overrides = {"inputs": getattr(args, "input", None), "output": args.output}
        if getattr(args, "run_id", None) is not None:
            validate_run_id(args.run_id)
        settings = load_settings(config, overrides | {"runner": getattr(args, "runner", None)})
        if args.command in ("compact", "prune"):
            run_maintenance(args.command, settings, args)
            return 0
        if args.command == "repair":
            return run_repair(settings, args)
        if getattr(args, "opml", None):  # a missing or broken file fails in feed_list with its name
            settings = settings.model_copy(update={"opml": [str(path) for path in args.opml]})
        if getattr(args, "force", False):
            forced = settings.state.model_copy(update={"force": True})
            settings = settings.model_copy(update={"state": forced})
        feeds = feed_list(settings)
        for problem in feeds.problems:
            print(f"newsbeam: feed list: {problem} (skipped)", file=sys.stderr)
        if not settings.inputs and not feeds.feeds:
            raise ConfigError(
                f"{config or 'defaults'}: inputs: no inputs; give --input or list them in the config"
            )
        if args.command == "run":
            run_batch(settings, beam_args, args.run_id)
        if args.command == "stream":
            run_id = args.run_id or new_run_id(datetime.now(UTC).replace(microsecond=0))
            return run_stream(settings, args, beam_args, run_id)
        if args.command == "launch":
            run_id = args.run_id or new_run_id(datetime.now(UTC).replace(microsecond=0))
            launched = launch_dataflow(settings, beam_args, run_id, pipeline_version(), args.dry_run)
            print(describe(launched))
    except (ConfigError, RunnerError, FeedListError, RunIdError) as error:
        print(f"newsbeam: configuration error: {error}", file=sys.stderr)
        return 2
    except (CommitLockTimeout, CommitLockLost, MaintenanceError) as error:
        print(f"newsbeam: {error}", file=sys.stderr)
        return 3
    except Exception as error:
        # A commit step that waited too long for the lock, or lost it, fails in the runner, which wraps it.
        text = f"{type(error).__name__} {error}"
        if CommitLockTimeout.__name__ not in text and CommitLockLost.__name__ not in text:
            raise
        print(f"newsbeam: {str(error).splitlines()[0]}", file=sys.stderr)
        return 3
    return 0


def entry_point() -> None:
    """The `newsbeam` console script and `python -m pipeline`.

    After a batch command has finished (committed and reported), the process ends without the
    interpreter's teardown: with the gcp extra installed, Beam imports Google's gRPC clients, whose
    threads can abort the teardown ("terminate called without an active exception", exit code -6)
    after the work is done. `stream` keeps the normal exit, which stops its Prism subprocess.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] == ["stream"]:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
