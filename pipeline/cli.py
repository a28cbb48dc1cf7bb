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
import difflib
import importlib
import logging
import os
import re
import sys
import traceback
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.resources import DATAFLOW_CONFIG, DEFAULT_CONFIG, STREAM_CONFIG
from pipeline.run import new_run_id, pipeline_version

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.run import RunCounts

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


def _version_text() -> str:
    try:
        beam = metadata.version("apache-beam")
    except metadata.PackageNotFoundError:
        beam = "not installed"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"newsbeam {pipeline_version()} (Apache Beam {beam}, Python {python})"


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


REPAIR_DOC = """Rebuild a missing or broken version index from the article files.

Every run checks the index deltas against the committed manifests and refuses to start when one is
missing or unreadable (it would store every article again as a duplicate). `repair` rebuilds the
index from the article files under the commit lock; the old deltas move to OUTPUT/_trash/."""


# Every flag of newsbeam's commands, defined once; COMMANDS_FLAGS picks them per command, with the
# help (and default) that differ. `--input`, `--opml` and `--duration` are keys of the config
# (`inputs`, `opml`, `stream.duration`): their values are validated with it (pipeline/config.py).
FLAGS: dict[str, dict[str, Any]] = {
    "--config": {"type": Path, "default": None, "metavar": "FILE"},
    "--input": {"nargs": "+", "action": "extend", "default": None, "metavar": "PATH|GLOB|URL"},
    "--output": {"default": None},
    "--runner": {"default": None},
    "--run-id": {"default": None, "help": "id of this run (default: time and random suffix)"},
    "--opml": {"nargs": "+", "action": "extend", "default": None, "metavar": "FILE"},
    "--force": {"action": "store_true"},
    "--max-failed-inputs": {
        "type": _failed_inputs_limit,
        "default": None,
        "metavar": "N|P%",
        "help": "exit 5 when more inputs failed than this: a count, or a share like 10%% (the run commits)",
    },
    "--progress-interval": {
        "default": None,
        "metavar": "AGE",
        "help": "when not on a terminal, log progress this often (default from config: 15s, at least 1s)",
    },
    "--duration": {
        "default": None,
        "metavar": "AGE",
        "help": "stop after this long, e.g. 90s, 10m, 2h (default from config `stream.duration`: "
        "until Ctrl-C)",
    },
    "--dry-run": {"action": "store_true", "help": "build the Dataflow job offline, submit nothing"},
    "--older-than": {"required": True, "metavar": "AGE", "help": "e.g. 90d, 12w, 36h"},
    "--grace": {
        "default": "1h",
        "metavar": "AGE",
        "help": "keep replaced files this long for readers (default 1h)",
    },
    "--lock-timeout": {
        "type": float,
        "default": 600.0,
        "help": "seconds to wait for another commit (default 600)",
    },
}


def _config_help(path: Path) -> dict[str, Any]:
    return {"help": f"YAML config (default: the shipped {path.name})"}


_MAINTENANCE_FLAGS: dict[str, dict[str, Any]] = {
    "--config": _config_help(DEFAULT_CONFIG),
    "--output": {"help": "output folder (default from config)"},
    "--grace": {},
    "--lock-timeout": {},
}


class Command(NamedTuple):
    help: str
    description: str
    flags: dict[str, dict[str, Any]]  # flag -> what differs from FLAGS for this command


def _commands() -> dict[str, Command]:
    return {
        "run": Command(
            "run the batch pipeline once",
            RUN_DOC,
            {
                "--config": _config_help(DEFAULT_CONFIG),
                "--input": {"help": "inputs instead of the config's: files, folders, globs, http(s) URLs"},
                "--output": {"help": "output folder or gs:// / s3:// URL (default from config: ./output)"},
                "--runner": {"help": "direct (in-process), prism, or a Beam runner name"},
                "--run-id": {},
                "--opml": {
                    "help": "OPML subscription lists to fetch (instead of the config's `opml:`), "
                    "besides `feeds:`"
                },
                "--force": {"help": "poll every feed now, ignoring ttl/max-age and failure backoff"},
                "--max-failed-inputs": {},
                "--progress-interval": {},
            },
        ),
        "compact": Command(
            "merge the small files of each partition into fewer larger ones (rows unchanged)",
            COMPACT_DOC,
            _MAINTENANCE_FLAGS,
        ),
        "prune": Command(
            "remove ingest_date partitions older than --older-than",
            PRUNE_DOC,
            {"--older-than": {}, **_MAINTENANCE_FLAGS},
        ),
        "repair": Command(
            "rebuild a missing or broken version index from the article files (under the commit lock)",
            REPAIR_DOC,
            {
                "--output": {"help": "output folder or URL (or give it as OUTPUT)"},
                "--config": {"help": "YAML config (for its output and options)"},
                "--force": {"help": "rebuild even when the index looks whole"},
                "--lock-timeout": {},
            },
        ),
        "stream": Command(
            "poll feeds continuously and write windowed Parquet until stopped",
            _module_doc("streaming"),
            {
                "--config": _config_help(STREAM_CONFIG),
                "--output": {"help": "output folder or gs:// / s3:// URL (default from config)"},
                "--runner": {"help": "prism (local), or a Beam runner name"},
                "--run-id": {},
                "--duration": {},
            },
        ),
        "launch": Command(
            "submit the batch job to Dataflow and return (see configs/dataflow.yaml)",
            _module_doc("launch"),
            {
                "--config": {"default": DATAFLOW_CONFIG, **_config_help(DATAFLOW_CONFIG)},
                "--runner": {"default": "dataflow", "help": "dataflow (the only cloud runner launched)"},
                "--input": {"metavar": "URL"},
                "--output": {"help": "gs:// URL of the output (default from config)"},
                "--run-id": {},
                "--dry-run": {},
            },
        ),
    }


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
    for name, command in _commands().items():
        sub = commands.add_parser(
            name,
            help=command.help,
            description=command.description,
            epilog=EXIT_CODES if name == "run" else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        for flag, differs in command.flags.items():
            sub.add_argument(flag, **(FLAGS[flag] | differs))
        if name == "repair":
            # SUPPRESS: without OUTPUT the positional leaves `output` alone (`--output`, the config count).
            sub.add_argument(
                "output", nargs="?", default=argparse.SUPPRESS, metavar="OUTPUT", help="output folder"
            )
    return parser


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


# --- errors of the job -----------------------------------------------------------------------

# The last line of a Python traceback: `package.module.ClassName: message`.
_RAISED = re.compile(r"^(?P<name>(?:pipeline|transforms)(?:\.\w+)+): ", re.MULTILINE)


def raised_in_job(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether `error` is, wraps, or reports one of `kinds` raised inside the job.

    The in-process runner re-raises a step's exception (or chains it); a portable runner (Prism,
    Flink) sends only the worker's traceback as text, whose exception names are resolved back to
    newsbeam's classes here, so that a subclass counts too.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    for found in _RAISED.finditer(str(error)):
        module, _, name = found.group("name").rpartition(".")
        try:
            raised = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(raised, type) and issubclass(raised, kinds):
            return True
    return False


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
    parquet = settings.stages.parquet
    if command == "compact":
        report = compact(settings.output, grace=grace, settings=parquet, lock_timeout=args.lock_timeout)
    else:
        assert older_than is not None
        report = prune(
            settings.output, older_than, grace=grace, settings=parquet, lock_timeout=args.lock_timeout
        )
    print(f"{report.text(command)}; in {settings.output}")


def exit_status(counts: RunCounts, limit: FailedInputsLimit | None) -> tuple[int, str | None]:
    """The exit code of a committed run, and why it is not 0."""
    inputs, failed = counts.inputs, counts.failed_inputs
    if inputs and failed == inputs:
        return EXIT_NOTHING_READ, f"every input failed ({failed} of {inputs}): nothing at all could be read"
    if limit is not None and not limit.allows(failed, inputs):
        return (
            EXIT_TOO_MANY_FAILED,
            f"{failed} of {inputs} inputs failed, more than --max-failed-inputs allows",
        )
    return EXIT_OK, None


# The flags whose values are config keys: validated with the config, named by their flag if bad.
OVERRIDE_OF_FLAG = {
    "input": "inputs",
    "output": "output",
    "runner": "runner",
    "opml": "opml",
    "duration": "stream.duration",
    "progress_interval": "progress_interval",
}


def _load(args: argparse.Namespace) -> Settings:
    """The command's settings, validated once for what the command needs."""
    from pipeline.config import load_settings

    config = args.config
    shipped = config is None
    if config is None:
        config = STREAM_CONFIG if args.command == "stream" else DEFAULT_CONFIG
    overrides: dict[str, Any] = {
        key: getattr(args, flag) for flag, key in OVERRIDE_OF_FLAG.items() if hasattr(args, flag)
    }
    if args.command == "run" and args.force:
        overrides["state.force"] = True
    if shipped and (overrides.get("inputs") or overrides.get("opml")):
        # The shipped config's demo inputs are never mixed into the user's own.
        overrides["inputs"] = overrides.get("inputs") or []
        overrides["opml"] = overrides.get("opml") or []
    modes: dict[str, Any] = {"run": "batch", "stream": "stream", "launch": "launch"}
    return load_settings(config, overrides, mode=modes.get(args.command), absolute_output=True)


def _dispatch(args: argparse.Namespace, beam_args: list[str]) -> int:
    from transforms.paths import validate_run_id

    if getattr(args, "run_id", None) is not None:
        validate_run_id(args.run_id)
    settings = _load(args)
    if args.command in ("compact", "prune"):
        run_maintenance(args.command, settings, args)
        return EXIT_OK
    if args.command == "repair":
        from pipeline.maintenance import run_repair

        return run_repair(settings, args)
    for problem in settings.feed_list.problems:
        print(f"newsbeam: feed list: {problem} (skipped)", file=sys.stderr)
    if args.command == "run":
        from pipeline.run import run_batch

        result = run_batch(
            settings,
            beam_args=beam_args,
            run_id=args.run_id,
            progress=not args.quiet,
            verbose=bool(args.verbose),
        )
        print(result.report.splitlines()[0] if args.quiet else result.report)
        code, why = exit_status(result.counts, args.max_failed_inputs)
        if why:
            print(f"newsbeam run {result.run_id}: {why} (exit code {code})", file=sys.stderr)
        return code
    if args.command == "stream":
        from pipeline.streaming import run_stream

        return run_stream(settings, beam_args, args.run_id or new_run_id())
    from pipeline.launch import describe, launch_dataflow

    run_id = args.run_id or new_run_id()
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
        if raised_in_job(error, (CommitLockTimeout, CommitLockLost)):
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


COMMANDS = tuple(_commands())


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
