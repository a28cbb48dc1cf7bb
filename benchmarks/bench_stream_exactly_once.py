"""Soak: the exactly-once scenario of tests/stream_scenario.py under more load, with its figures.

    python -m benchmarks.bench_stream_exactly_once                       # Prism, 3x the feeds, 10 entries
    python -m benchmarks.bench_stream_exactly_once --copies 5 --entries 20 --phases 12

Runs `newsbeam stream` on Prism (`make prism`; `NEWSBEAM_PRISM` picks another binary, such as a newer
Prism) four times against changing feeds (SIGTERM, Ctrl-C to the process group, kill -9, a final
Ctrl-C), while the commit lock is contended, and checks that every revision served was stored exactly
once, versions rising in serve order. Prints the revisions, the time taken and the latency from first
served (or from a restart's first poll) to visible. Exit 1 names the breach, a latency over
`--latency-bound` too (window + poll interval + the contended lock's hold).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.stream_scenario import LATENCY_BOUND, ScenarioFailure, run_exactly_once_scenario  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=3, help="copies of each edited and rotating feed")
    parser.add_argument("--entries", type=int, default=10, help="entries per edited and rotating feed")
    parser.add_argument("--phases", type=int, default=10, help="changes each feed goes through")
    parser.add_argument("--advances", type=int, default=40, help="feed changes each interrupted run sees")
    parser.add_argument(
        "--latency-bound",
        type=float,
        default=LATENCY_BOUND,
        help="seconds from served to visible that breach the promise (default: window + poll interval + "
        "the contended lock's hold, %(default)gs; 0: report only)",
    )
    args = parser.parse_args(argv)
    prism = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    if not prism.is_file():
        print(f"bench_stream_exactly_once: no Prism at {prism}: run `make prism`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="newsbeam-exactly-once-"))
    try:
        report = run_exactly_once_scenario(
            work,
            "prism",
            {"environment_type": "LOOPBACK"},
            env={"NEWSBEAM_PRISM": str(prism.resolve())},
            startup_timeout=120,
            stop_timeout=600,
            advances_per_run=args.advances,
            last_phase=args.phases,
            copies=args.copies,
            entries=args.entries,
            latency_bound=args.latency_bound or None,
        )
    except ScenarioFailure as failure:
        print(f"exactly-once breached (work folder {work}):\n{str(failure)[:6000]}", file=sys.stderr)
        return 1
    print(f"prism {prism}: {report.summary()}")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
