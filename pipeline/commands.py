"""The commands of `newsbeam` and their flags: one table, and the argparse parser built from it.

Every flag is defined once in `FLAGS`; each command lists the flags it takes, with the help text
(and default) that differ for it. Flags whose values are config keys (`--input`, `--output`,
`--opml`, `--duration`, ...) are validated with the config (pipeline/config.py), not here. This
module imports nothing heavy: `newsbeam --help` answers without importing Beam.
"""

from __future__ import annotations

import argparse
import ast
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.report_commands import REPORT_COMMANDS, add_report_commands
from pipeline.resources import DATAFLOW_CONFIG, DEFAULT_CONFIG, STREAM_CONFIG
from pipeline.run import pipeline_version

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
    "--fulltext": {
        "default": None,
        "choices": ("off", "auto", "always"),
        "metavar": "MODE",
        "help": "fetch article pages: off, auto (feed text short or truncated), always "
        "(default from config `fulltext.mode`: auto)",
    },
    "--stories": {
        "action": argparse.BooleanOptionalAction,
        "default": None,
        "help": "assign near-duplicate stories at the commit, or not (default from config "
        "`stories.enabled`: on)",
    },
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
                "--fulltext": {},
                "--stories": {},
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
                "--fulltext": {},
                "--stories": {},
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


def build_parser() -> argparse.ArgumentParser:
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
    add_report_commands(commands, common)
    return parser


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The command's arguments and the flags left for Beam; logging flags count before or after it."""
    args, extra = build_parser().parse_known_args(argv)
    leading = {name: vars(args).pop(f"{_LEADING}{name}") for name in ("verbose", "quiet", "log_level")}
    args.verbose += leading["verbose"]
    args.quiet = args.quiet or leading["quiet"]
    args.log_level = args.log_level or leading["log_level"]
    return args, extra


COMMANDS = (*_commands(), *REPORT_COMMANDS)


def command_of(argv: list[str]) -> str | None:
    """The command in `argv`, also after leading logging flags (whose values are never command names)."""
    return next((word for word in argv if word in COMMANDS), None)
