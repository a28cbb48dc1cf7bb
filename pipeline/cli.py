"""The `newsbeam` command (also `python -m pipeline`).

Run the batch job locally on the shipped seeds, from any directory:

    newsbeam run                                  # the shipped configs/local.yaml: seeds/ -> ./output
    newsbeam run --input 'feeds/*.xml' https://example.com/feed.xml --output /tmp/out
    newsbeam run --direct_num_workers=2 --direct_running_mode=multi_processing

Flags newsbeam does not know must be Beam pipeline options (any registered `PipelineOptions`);
anything else is refused with a "did you mean".

This module is argparse and dispatch only, and imports Beam only once a command runs, so that
`newsbeam --help` and `--version` answer at once.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import logging
import os
import secrets
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.report_commands import REPORT_COMMANDS, add_report_commands, run_report_command
from pipeline.resources import DATAFLOW_CONFIG, DEFAULT_CONFIG, STREAM_CONFIG

if TYPE_CHECKING:
    from pipeline.config import Settings

EXIT_OK = 0  # the run committed (or had nothing left to do)
EXIT_FAILED = 1  # the run failed: nothing of it was committed
EXIT_USAGE = 2  # bad flags or configuration: nothing was started
EXIT_LOCKED = 3  # another run held the commit lock too long, or compact/prune could not finish
EXIT_NOTHING_READ = 4  # committed, but every input failed: nothing at all could be read
EXIT_TOO_MANY_FAILED = 5  # committed, but more inputs failed than --max-failed-inputs allows

EXIT_CODES = """exit codes:
  0  committed (or already committed: nothing to do)
  1  the run failed; nothing of it was committed (retry with the same --run-id)
  2  bad flags or configuration; nothing was started
  3  the commit lock was held too long by another run, or compact/prune failed
  4  committed, but every input failed: nothing at all could be read
  5  committed, but more inputs failed than --max-failed-inputs allows"""

RUN_DOC = """Run the batch job once: read the inputs, write the articles, dead letters and fetch rows, commit.

    newsbeam run                                  # the shipped config: its seeds -> ./output
    newsbeam run --input 'feeds/*.xml' https://example.com/feed.xml --output /tmp/out
    newsbeam run --opml subscriptions.opml        # only the list's feeds, no demo seeds
    newsbeam run --direct_num_workers=2 --direct_running_mode=multi_processing

Without --config the shipped configs/local.yaml is used; with --input or --opml and no --config,
only what is given is read. Flags newsbeam does not know must be Beam pipeline options (any
registered PipelineOptions, spelled exactly); anything else is refused with a "did you mean"."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
log = logging.getLogger("newsbeam")


class UsageError(ValueError):
    """A flag neither newsbeam nor Beam knows, or a bad value for one of newsbeam's flags."""


def pipeline_version() -> str:
    try:
        return metadata.version("newsbeam")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _version_text() -> str:
    try:
        beam = metadata.version("apache-beam")
    except metadata.PackageNotFoundError:
        beam = "not installed"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"newsbeam {pipeline_version()} (Apache Beam {beam}, Python {python})"


def new_run_id(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _module_doc(name: str) -> str:
    """A sibling module's docstring, read from its source: importing it would import Beam."""
    source = Path(__file__).with_name(f"{name}.py").read_text(encoding="utf-8")
    return ast.get_docstring(ast.parse(source)) or ""


class FailedInputsLimit(NamedTuple):
    """`--max-failed-inputs`: at most `most` failed inputs, or at most `share` of them."""

    most: int | None = None
    share: float | None = None

    def allows(self, failed: int, inputs: int) -> bool:
        if self.most is not None:
            return failed <= self.most
        return failed <= (self.share or 0.0) * inputs


def _failed_inputs_limit(text: str) -> FailedInputsLimit:
    """A count (`3`) or a percentage of the inputs (`10%`)."""
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100
            if 0 <= share <= 1:
                return FailedInputsLimit(share=share)
        elif int(text) >= 0:
            return FailedInputsLimit(most=int(text))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: give a number of inputs (3) or a percentage of them (10%)")


_LEADING = "leading_"  # dest prefix of the logging flags given before the command


def _add_logging_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    noise = parser.add_argument_group("output and logging")
    noise.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest=f"{prefix}verbose",
        help="more detail (-vv: Beam's logs too)",
    )
    noise.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        dest=f"{prefix}quiet",
        help="no progress; only errors and one summary line",
    )
    noise.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=None,
        dest=f"{prefix}log_level",
        help="set it exactly",
    )


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_logging_options(common)
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="newsbeam",
        description="News ingestion on Apache Beam: feeds and seed files to Hive-partitioned Parquet.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version_text())
    # Also before the command (`newsbeam -v run`); under their own names, because argparse lets a
    # subcommand's defaults overwrite the values the main parser has set.
    _add_logging_options(parser, _LEADING)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    run = commands.add_parser(
        "run",
        help="run the batch pipeline once",
        description=RUN_DOC,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    run.add_argument(
        "--config", type=Path, default=None, help=f"YAML config (default: the shipped {DEFAULT_CONFIG.name})"
    )
    run.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATH|GLOB|URL",
        help="inputs instead of the config's: files, folders, globs, http(s) URLs",
    )
    run.add_argument(
        "--output", default=None, help="output folder or gs:// / s3:// URL (default from config: ./output)"
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
    run.add_argument(
        "--max-failed-inputs",
        type=_failed_inputs_limit,
        default=None,
        metavar="N|P%",
        help="exit 5 when more inputs failed than this: a count, or a share like 10%% (the run commits)",
    )
    run.add_argument(
        "--progress-interval",
        default="15s",
        metavar="AGE",
        help="when not on a terminal, log progress this often (default 15s, at least 1s)",
    )
    _add_maintenance_commands(commands, common)
    _add_repair_command(commands, common)
    _add_stream_command(commands, common)
    _add_launch_command(commands, common)
    add_report_commands(commands, common)
    return parser


def _add_stream_command(commands: Any, common: argparse.ArgumentParser) -> None:
    stream = commands.add_parser(
        "stream",
        help="poll feeds continuously and write windowed Parquet until stopped",
        description=_module_doc("streaming"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    stream.add_argument(
        "--config", type=Path, default=None, help=f"YAML config (default: the shipped {STREAM_CONFIG.name})"
    )
    stream.add_argument(
        "--output", default=None, help="output folder or gs:// / s3:// URL (default from config)"
    )
    stream.add_argument("--runner", default=None, help="prism (local), or a Beam runner name")
    stream.add_argument("--run-id", default=None, help="id of this run (default: time and random suffix)")
    stream.add_argument(
        "--duration",
        default=None,
        metavar="AGE",
        help="stop after this long, e.g. 90s, 10m, 2h (default from config `stream.duration`: until Ctrl-C)",
    )


def _add_launch_command(commands: Any, common: argparse.ArgumentParser) -> None:
    launch = commands.add_parser(
        "launch",
        help="submit the batch job to Dataflow and return (see configs/dataflow.yaml)",
        description=_module_doc("launch"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    launch.add_argument(
        "--config",
        type=Path,
        default=DATAFLOW_CONFIG,
        help=f"YAML config (default: the shipped {DATAFLOW_CONFIG.name})",
    )
    launch.add_argument("--runner", default="dataflow", help="dataflow (the only cloud runner launched)")
    launch.add_argument("--input", nargs="+", action="extend", default=None, metavar="URL")
    launch.add_argument("--output", default=None, help="gs:// URL of the output (default from config)")
    launch.add_argument("--run-id", default=None, help="id of this run (default: time and random suffix)")
    launch.add_argument(
        "--dry-run", action="store_true", help="build the Dataflow job offline, submit nothing"
    )


COMPACT_DOC = """Merge the small files of each partition into fewer, larger ones.

Every run adds files to each partition it writes; after many runs a reader opens thousands of small
files. `compact` rewrites each partition's files (articles, dead_letters, feed_fetches) into few
files of `parquet.row_group_size` rows, under the commit lock: the rows are unchanged, readers
never see a partition half done, and the replaced files move to OUTPUT/_trash/ for --grace, so
that a query already reading them can finish."""

PRUNE_DOC = """Remove the `ingest_date` partitions older than --older-than (e.g. 90d, 12w).

Retention: the articles, dead letters and fetch rows of those days are removed under the commit
lock, with their rows of the version index, so an article seen again later is stored again as
new. Removed files move to OUTPUT/_trash/ for --grace first."""


def _add_maintenance_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    compact = commands.add_parser(
        "compact",
        help="merge the small files of each partition into fewer larger ones (rows unchanged)",
        description=COMPACT_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    prune = commands.add_parser(
        "prune",
        help="remove ingest_date partitions older than --older-than",
        description=PRUNE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12w, 36h")
    for command in (compact, prune):
        command.add_argument(
            "--config",
            type=Path,
            default=None,
            help=f"YAML config (default: the shipped {DEFAULT_CONFIG.name})",
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


REPAIR_DOC = """Rebuild a missing or broken version index from the article files.

Every run checks the index deltas against the committed manifests and refuses to start when one is
missing or unreadable (it would store every article again as a duplicate). `repair` rebuilds the
index from the article files under the commit lock; the old deltas move to OUTPUT/_trash/."""


def _add_repair_command(commands: Any, common: argparse.ArgumentParser) -> None:
    repair = commands.add_parser(
        "repair",
        help="rebuild a missing or broken version index from the article files (under the commit lock)",
        description=REPAIR_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    repair.add_argument("--output", default=None, help="output folder or URL (or give it as OUTPUT)")
    # SUPPRESS: without OUTPUT the positional leaves `output` alone, so `--output` and the config still count.
    repair.add_argument(
        "output", nargs="?", default=argparse.SUPPRESS, metavar="OUTPUT", help="output folder"
    )
    repair.add_argument("--config", type=Path, default=None, help="YAML config (for its output and options)")
    repair.add_argument("--force", action="store_true", help="rebuild even when the index looks whole")
    repair.add_argument(
        "--lock-timeout", type=float, default=600.0, help="seconds to wait for another commit (default 600)"
    )


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


# --- flags newsbeam does not know: Beam's, or refused ----------------------------------------


def beam_flags(extra: list[str], ours: list[str]) -> list[str]:
    """`extra` when every flag in it is a registered Beam pipeline option; else UsageError naming it.

    Beam would silently ignore an unknown flag (`--ouput` writes into the default output), so each
    is checked against the flags of every registered `PipelineOptions` class, exactly (no
    abbreviations), and a typo gets the nearest of newsbeam's and Beam's flags.
    """
    if not extra:
        return []
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class _Checker(_BeamArgumentParser):
        def error(self, message: str) -> Any:
            raise UsageError(message)

    checker = _Checker(allow_abbrev=False, add_help=False)
    for options in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        options._add_argparse_args(checker)
    _, unknown = checker.parse_known_args(extra)
    if not unknown:
        return extra
    known = sorted({*ours, *(flag for flag in checker._option_string_actions if flag.startswith("--"))})
    problems = []
    for flag in unknown:
        name = flag.split("=", 1)[0]
        if not name.startswith("-"):
            problems.append(f"unexpected argument {flag!r}")
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(f"unknown flag {name}{hint}")
    raise UsageError("; ".join(problems) + " (flags are newsbeam's, see --help, or Beam pipeline options)")


# --- logging -----------------------------------------------------------------------------------


def configure_logging(args: argparse.Namespace) -> None:
    """newsbeam's own lines at INFO (progress, stream cycles), Beam's at WARNING; -v, -q, --log-level."""
    verbose, quiet = getattr(args, "verbose", 0), getattr(args, "quiet", False)
    ours = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    others = logging.ERROR if quiet else (logging.INFO if verbose >= 2 else logging.WARNING)
    if getattr(args, "log_level", None):
        ours = others = getattr(logging, args.log_level)
    on_terminal = sys.stderr.isatty()
    logging.basicConfig(
        format="%(levelname)s %(name)s: %(message)s"
        if on_terminal
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(others)
    log.setLevel(ours)


# --- commands ----------------------------------------------------------------------------------


def run_maintenance(command: str, settings: Settings, args: argparse.Namespace) -> None:
    from pipeline.config import ConfigError
    from pipeline.maintenance import MaintenanceError, compact, parse_age, prune

    def age(flag: str, text: str) -> timedelta:
        try:
            return parse_age(text)
        except MaintenanceError as error:
            raise ConfigError(f"{flag}: {error}") from None

    grace = age("--grace", args.grace)
    older_than = age("--older-than", args.older_than) if command == "prune" else None
    parquet = settings.parquet.settings()
    if command == "compact":
        report = compact(settings.output, grace=grace, settings=parquet, lock_timeout=args.lock_timeout)
    else:
        assert older_than is not None
        report = prune(
            settings.output, older_than, grace=grace, settings=parquet, lock_timeout=args.lock_timeout
        )
    print(f"{report.text(command)}; in {settings.output}")


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


def _listed_input_count(settings: Settings) -> int | None:
    """How many inputs the run will read, when every one is a URL or a file; None for folders and globs."""
    from pipeline.feeds import feed_list

    count = len(feed_list(settings).feeds)
    for item in settings.inputs:
        if "://" in item:
            if not item.startswith(("http://", "https://")):
                return None
        elif any(ch in item for ch in "*?[") or not os.path.isfile(item):
            return None
        count += 1
    return count


def _shows_progress(settings: Settings) -> bool:
    """Progress datagrams reach the CLI only from workers on this machine (see pipeline/progress.py)."""
    from pipeline.runners import LOCAL_ALIASES, PRISM_ALIASES

    return settings.runner.strip().lower() in LOCAL_ALIASES | PRISM_ALIASES


def run_batch(
    settings: Settings,
    beam_args: list[str],
    run_id: str | None = None,
    *,
    progress_interval: float | None = None,
    verbose: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the batch job once, print its report, and return the committed manifest.

    With `progress_interval` (seconds), progress is shown while it runs: a bar on a terminal,
    else a log line that often.
    """
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.pipeline import Pipeline

    from pipeline.build import build_batch
    from pipeline.maintenance import prepare_run
    from pipeline.options import make_pipeline_options
    from pipeline.progress import showing_progress
    from pipeline.report import RunSummary
    from pipeline.runners import make_runner
    from transforms.schema import RunInfo
    from transforms.write import manifest_path, read_json, release_staging_lease

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
    total = _listed_input_count(settings)
    reading = f"reading {total} inputs" if total is not None else "reading its inputs"
    log.info(
        "newsbeam run %s on the %s runner: %s, writing into %s",
        run.run_id,
        settings.runner,
        reading,
        settings.output,
    )
    options = make_pipeline_options(settings.runner, settings.beam_options, beam_args)
    clock = time.monotonic()
    pipeline = Pipeline(runner=make_runner(settings.runner), options=options)
    with contextlib.ExitStack() as stack:
        address = None
        if progress_interval is not None and _shows_progress(settings):
            address = stack.enter_context(showing_progress(run.run_id, total, progress_interval))
        build_batch(pipeline, settings, run, progress=address)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        finally:  # a failed run's staging is garbage for the next run once this lease is free
            release_staging_lease(settings.output, run.run_id)
    manifest: dict[str, Any] = read_json(manifest_path(settings.output, run.run_id))
    summary = RunSummary.of(manifest, settings.output)
    text = summary.text(time.monotonic() - clock, _metrics(result) if verbose else None)
    print(text.splitlines()[0] if quiet else text)
    return manifest


def exit_status(
    manifest: dict[str, Any], output: str, limit: FailedInputsLimit | None
) -> tuple[int, str | None]:
    """The exit code of a committed run, and why it is not 0."""
    from pipeline.report import RunSummary

    summary = RunSummary.of(manifest, output)
    inputs, failed = summary.inputs, summary.failed_inputs
    if inputs and failed == inputs:
        return EXIT_NOTHING_READ, f"every input failed ({failed} of {inputs}): nothing at all could be read"
    if limit is not None and not limit.allows(failed, inputs):
        return (
            EXIT_TOO_MANY_FAILED,
            f"{failed} of {inputs} inputs failed, more than --max-failed-inputs allows",
        )
    return EXIT_OK, None


def _load(args: argparse.Namespace) -> tuple[Settings, Path | None]:
    from pipeline.config import load_settings

    config = args.config
    shipped = config is None
    if config is None:
        config = STREAM_CONFIG if args.command == "stream" else DEFAULT_CONFIG
    overrides: dict[str, Any] = {
        "inputs": getattr(args, "input", None),
        "output": args.output,
        "runner": getattr(args, "runner", None),
    }
    given_inputs = getattr(args, "input", None) or getattr(args, "opml", None)
    if shipped and given_inputs:
        # The shipped config's demo inputs are never mixed into the user's own.
        overrides |= {"inputs": getattr(args, "input", None) or [], "opml": getattr(args, "opml", None) or []}
    settings = load_settings(config, overrides)
    if getattr(args, "opml", None):  # a missing or broken file fails in feed_list with its name
        settings = settings.model_copy(update={"opml": [str(path) for path in args.opml]})
    if getattr(args, "force", False):
        forced = settings.state.model_copy(update={"force": True})
        settings = settings.model_copy(update={"state": forced})
    if "://" not in settings.output:  # every message then says exactly where the datasets are
        settings = settings.model_copy(update={"output": os.path.abspath(settings.output)})
    return settings, config


def _dispatch(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.config import ConfigError
    from pipeline.durations import parse_duration
    from pipeline.feeds import feed_list
    from transforms.paths import validate_run_id

    if args.command in REPORT_COMMANDS:  # read an output: no config, no run
        return run_report_command(args)
    if getattr(args, "run_id", None) is not None:
        validate_run_id(args.run_id)
    if args.command == "run":
        try:
            progress_interval = parse_duration(args.progress_interval)
        except ValueError as error:
            raise ConfigError(f"--progress-interval: {error}") from None
        if progress_interval < 1:  # 0 would log a line on every turn of the display's loop
            raise ConfigError(f"--progress-interval: {args.progress_interval!r}: give at least 1s")
    settings, config = _load(args)
    if args.command in ("compact", "prune"):
        run_maintenance(args.command, settings, args)
        return EXIT_OK
    if args.command == "repair":
        from pipeline.maintenance import run_repair

        return run_repair(settings, args)
    feeds = feed_list(settings)
    for problem in feeds.problems:
        print(f"newsbeam: feed list: {problem} (skipped)", file=sys.stderr)
    if not settings.inputs and not feeds.feeds:
        raise ConfigError(
            f"{config or 'defaults'}: inputs: no inputs; give --input or list them in the config"
        )
    if args.command == "run":
        manifest = run_batch(
            settings,
            beam_args,
            args.run_id,
            progress_interval=None if args.quiet else float(progress_interval),
            verbose=bool(args.verbose),
            quiet=args.quiet,
        )
        code, why = exit_status(manifest, settings.output, args.max_failed_inputs)
        if why:
            print(f"newsbeam run {manifest['run_id']}: {why} (exit code {code})", file=sys.stderr)
        return code
    if args.command == "stream":
        from pipeline.streaming import run_stream

        run_id = args.run_id or new_run_id(datetime.now(UTC).replace(microsecond=0))
        return run_stream(settings, args, beam_args, run_id)
    from pipeline.launch import describe, launch_dataflow

    run_id = args.run_id or new_run_id(datetime.now(UTC).replace(microsecond=0))
    launched = launch_dataflow(settings, beam_args, run_id, pipeline_version(), args.dry_run)
    print(describe(launched))
    return EXIT_OK


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The command's arguments and the flags left for Beam; logging flags count before or after it."""
    args, extra = _parser().parse_known_args(argv)
    leading = {name: vars(args).pop(f"{_LEADING}{name}") for name in ("verbose", "quiet", "log_level")}
    args.verbose += leading["verbose"]
    args.quiet = args.quiet or leading["quiet"]
    args.log_level = args.log_level or leading["log_level"]
    return args, extra


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parse_arguments(argv)
    configure_logging(args)
    command = _subcommand(parser, args.command)
    try:
        ours = [flag for flag in command._option_string_actions if flag.startswith("--")]
        beam_args = beam_flags(extra, ours) if args.command in ("run", "stream", "launch") else []
        if extra and args.command not in ("run", "stream", "launch"):
            raise UsageError(f"unknown arguments {' '.join(extra)} (see newsbeam {args.command} --help)")
    except UsageError as error:
        command.print_usage(sys.stderr)
        print(f"newsbeam {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    from pipeline.config import ConfigError
    from pipeline.feeds import FeedListError
    from pipeline.maintenance import MaintenanceError
    from pipeline.runners import RunnerError
    from transforms.paths import RunIdError
    from transforms.store import CommitLockLost, CommitLockTimeout

    try:
        return _dispatch(args, beam_args)
    except (ConfigError, RunnerError, FeedListError, RunIdError) as error:
        print(f"newsbeam: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (CommitLockTimeout, CommitLockLost, MaintenanceError) as error:
        print(f"newsbeam: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except KeyboardInterrupt:
        print("newsbeam: interrupted; nothing of this run was committed", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        # A commit step that waited too long for the lock, or lost it, fails in the runner, which wraps it.
        text = f"{type(error).__name__} {error}"
        if CommitLockTimeout.__name__ in text or CommitLockLost.__name__ in text:
            print(f"newsbeam: {first_line}", file=sys.stderr)
            return EXIT_LOCKED
        if args.verbose:
            traceback.print_exc()
        outcome = "failed, nothing committed" if args.command == "run" else "failed"
        print(
            f"newsbeam {args.command}: {outcome}: {type(error).__name__}: {first_line[:500]}"
            + ("" if args.verbose else " (-v shows the traceback)"),
            file=sys.stderr,
        )
        return EXIT_FAILED


COMMANDS = ("run", "compact", "prune", "repair", "stream", "launch", *REPORT_COMMANDS)


def command_of(argv: list[str]) -> str | None:
    """The command in `argv`, also after leading logging flags (whose values are never command names)."""
    return next((word for word in argv if word in COMMANDS), None)


def entry_point() -> None:
    """The `newsbeam` console script and `python -m pipeline`.

    After a batch command has finished (committed and reported), the process ends without the
    interpreter's teardown: with the gcp extra installed, Beam imports Google's gRPC clients, whose
    threads can abort the teardown ("terminate called without an active exception", exit code -6)
    after the work is done. `stream` keeps the normal exit, which stops its Prism subprocess.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if command_of(argv) == "stream":
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
