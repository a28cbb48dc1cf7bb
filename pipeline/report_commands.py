"""The `report` and `show` commands: their flags and their dispatch (argparse only, nothing heavy).

pipeline/commands.py adds them with `add_report_commands`; pipeline/cli.py hands them to `run_report_command`;
DuckDB, altair and Beam are imported only once one of them runs, so `newsbeam --help` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

EXIT_ATTENTION = 6  # `report --alerts`: at least one feed is failing or stale
REPORT_COMMANDS = ("report", "show")

REPORT_DOC = """Write one self-contained HTML page about OUTPUT's committed datasets.

    newsbeam report output                          # output/report.html
    newsbeam report output --html news.html --opml feeds.opml
    newsbeam report output --alerts                 # for cron: exit 6 when a feed is failing or stale

The page (no network needed to view it) shows the feeds' health over the runs, failing and stale
feeds first, the articles per language and per day, their text lengths, the dead letters by reason
and the latest runs. A feed is stale when it had no new entry for more than --stale-factor times
its median gap between entries over the last --stale-window, as of its last successful read.

--alerts prints one tab-separated line per failing or stale feed (status, feed, why) and exits 6
when there is one; --health-csv writes the whole feed-health table for other tools."""

SHOW_DOC = """Print what OUTPUT holds: rows per dataset and partition, the latest runs, a few articles.

    newsbeam show output
    newsbeam show output --json | jq '.datasets.articles.rows'"""


def add_report_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    report = commands.add_parser(
        "report",
        help="write an HTML report of the datasets (feed health, articles, dead letters, runs)",
        description=REPORT_DOC,
        epilog="exit codes: 0 written, 2 bad flags or no datasets, "
        f"{EXIT_ATTENTION} (--alerts) a feed is failing or stale",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    report.add_argument("output", metavar="OUTPUT", help="the output folder (or gs:// / s3:// URL)")
    report.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the page (default OUTPUT/report.html)",
    )
    report.add_argument(
        "--alerts", action="store_true", help=f"print failing and stale feeds; exit {EXIT_ATTENTION} if any"
    )
    report.add_argument("--health-csv", type=Path, default=None, metavar="FILE", help="feed health as CSV")
    report.add_argument(
        "--opml",
        type=Path,
        default=None,
        metavar="FILE",
        help="the feeds fetched, with their health, as OPML",
    )
    report.add_argument(
        "--stale-factor",
        type=float,
        default=3.0,
        metavar="F",
        help="stale after F x the median gap (default 3)",
    )
    report.add_argument(
        "--stale-window", default="30d", metavar="AGE", help="median gap over this long (default 30d)"
    )
    report.add_argument("--runs", type=int, default=10, metavar="N", help="latest runs shown (default 10)")
    show = commands.add_parser(
        "show",
        help="print row counts per dataset and partition, the latest runs and a sample of articles",
        description=SHOW_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    show.add_argument("output", metavar="OUTPUT", help="the output folder (or gs:// / s3:// URL)")
    show.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    show.add_argument("--runs", type=int, default=5, metavar="N", help="latest runs shown (default 5)")
    show.add_argument("--sample", type=int, default=5, metavar="N", help="articles shown (default 5)")


def _fail(command: str, message: str) -> int:
    print(f"newsbeam {command}: {message}", file=sys.stderr)
    return 2


def run_report_command(args: argparse.Namespace) -> int:
    """`newsbeam report` or `newsbeam show`; the exit code."""
    try:
        import altair  # noqa: F401
        import duckdb  # noqa: F401
        import vl_convert  # noqa: F401
    except ImportError as error:
        return _fail(
            args.command, f"{error.name} is missing: install the report extra, pip install 'newsbeam[report]'"
        )
    from pipeline.datasets import OutputError
    from pipeline.durations import parse_duration
    from pipeline.health import StaleRule, open_store

    output = args.output if "://" in args.output else os.path.abspath(args.output)
    if args.runs < 1:
        return _fail(args.command, f"--runs {args.runs}: give at least 1")
    try:
        store = open_store(output)
    except OutputError as error:
        return _fail(args.command, str(error))
    if args.command == "show":
        from pipeline.show import as_json, as_text, summary

        if args.sample < 0:
            return _fail("show", f"--sample {args.sample}: give 0 or more")
        document = summary(store, args.runs, args.sample)
        print(as_json(document) if args.json else as_text(document))
        return 0
    try:
        rule = StaleRule(args.stale_factor, parse_duration(args.stale_window))
    except ValueError as error:
        return _fail("report", f"--stale-window/--stale-factor: {error}")
    return _write_report(store, rule, args)


def _write_report(store: Any, rule: Any, args: argparse.Namespace) -> int:
    from pipeline.health import alert_lines, feed_health
    from pipeline.html_report import render
    from pipeline.opml_export import feeds_opml

    if args.html is None and "://" in store.output:
        return _fail("report", "give --html FILE for an output that is not a local folder")
    page = args.html or Path(store.output) / "report.html"
    health = feed_health(store, rule)
    page.write_text(render(store, rule, args.runs, health), encoding="utf-8")
    print(f"newsbeam report: {page} ({len(health)} feeds)", file=sys.stderr)
    if args.opml:
        args.opml.write_bytes(feeds_opml(health))
    if args.health_csv:
        columns = [
            "status", "source", "title", "reason", "last_outcome", "last_error", "failing_for", "last_fetch",
            "last_read", "last_entry", "silent_seconds", "median_gap_seconds", "recent_entries",
        ]  # fmt: skip
        with args.health_csv.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(health)
    if args.alerts:
        lines = alert_lines(health)
        for line in lines:
            print(line)
        return EXIT_ATTENTION if lines else 0
    return 0
