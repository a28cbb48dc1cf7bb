"""The `newsbeam` command (also `python -m pipeline`).

Run the batch job locally on the shipped seeds, from any directory:

    newsbeam run                                  # the shipped configs/local.yaml: seeds/ -> ./output
    newsbeam run --input 'feeds/*.xml' https://example.com/feed.xml --output /tmp/out
    newsbeam run --direct_num_workers=2 --direct_running_mode=multi_processing

Flags newsbeam does not know must be Beam pipeline options (any registered `PipelineOptions`);
anything else is refused with a "did you mean".

This module is dispatch only: the commands and their flags are pipeline/commands.py (argparse),
the settings pipeline/config.py, a batch run pipeline/run.py. It imports Beam only once a command
runs, so that `newsbeam --help` and `--version` answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pipeline.commands import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_NOTHING_READ,
    EXIT_OK,
    EXIT_TOO_MANY_FAILED,
    EXIT_USAGE,
    FailedInputsLimit,
    build_parser,
    command_of,
    parse_arguments,
    subcommand,
)
from pipeline.report_commands import REPORT_COMMANDS, run_report_command
from pipeline.resources import DEFAULT_CONFIG, STREAM_CONFIG
from pipeline.run import new_run_id, pipeline_version

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_NOTHING_READ",
    "EXIT_OK",
    "EXIT_TOO_MANY_FAILED",
    "EXIT_USAGE",
    "FailedInputsLimit",
    "command_of",
    "configure_logging",
    "entry_point",
    "exit_status",
    "main",
    "parse_arguments",
    "raised_in_job",
]

if TYPE_CHECKING:
    from pipeline.config import Mode, Settings
    from pipeline.run import RunCounts


log = logging.getLogger("newsbeam")


class UsageError(ValueError):
    """A flag neither newsbeam nor Beam knows, or a bad value for one of newsbeam's flags."""


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
        stories = settings.stages.stories
        report = prune(
            settings.output,
            older_than,
            grace=grace,
            settings=parquet,
            lock_timeout=args.lock_timeout,
            story_window=stories.window if stories.enabled else None,
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
    "fulltext": "fulltext.mode",
    "stories": "stories.enabled",
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
    modes: dict[str, Mode] = {"run": "batch", "stream": "stream", "launch": "launch"}
    return load_settings(config, overrides, mode=modes.get(args.command), absolute_output=True)


def _dispatch(args: argparse.Namespace, beam_args: list[str]) -> int:
    if args.command in REPORT_COMMANDS:  # read an output: no config, no run
        return run_report_command(args)
    from transforms.io.paths import validate_run_id

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parse_arguments(argv)
    configure_logging(args)
    command = subcommand(parser, args.command)
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
    from transforms.io.lock import CommitLockLost, CommitLockTimeout
    from transforms.io.paths import RunIdError
    from transforms.io.versions import IndexDamagedError

    try:
        return _dispatch(args, beam_args)
    except (ConfigError, RunnerError, FeedListError, RunIdError) as error:
        print(f"newsbeam: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (CommitLockTimeout, CommitLockLost, MaintenanceError, IndexDamagedError) as error:
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
