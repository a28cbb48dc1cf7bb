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
import secrets
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from apache_beam.pipeline import Pipeline

from pipeline.build import build_batch
from pipeline.config import ConfigError, Settings, load_settings
from pipeline.options import make_pipeline_options
from pipeline.report import render_report
from pipeline.runners import RunnerError, make_runner
from transforms.schema import RunInfo
from transforms.write import manifest_path, read_json

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
    return parser


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
    options = make_pipeline_options(settings.runner, settings.beam_options, beam_args)
    clock = time.monotonic()
    pipeline = Pipeline(runner=make_runner(settings.runner), options=options)
    build_batch(pipeline, settings, run)
    result = pipeline.run()
    result.wait_until_finish()
    manifest = read_json(manifest_path(settings.output, run.run_id))
    print(render_report(manifest, settings.output, time.monotonic() - clock, _metrics(result)))
    return manifest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, beam_args = _parser().parse_known_args(argv)
    config = args.config
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    try:
        settings = load_settings(config, {"inputs": args.input, "output": args.output, "runner": args.runner})
        if not settings.inputs:
            raise ConfigError(
                f"{config or 'defaults'}: inputs: no inputs; give --input or list them in the config"
            )
        if args.command == "run":
            run_batch(settings, beam_args, args.run_id)
    except (ConfigError, RunnerError) as error:
        print(f"newsbeam: configuration error: {error}", file=sys.stderr)
        return 2
    return 0
