"""Soak: memory of the streaming job stays bounded over a longer run with many feeds.

    python -m benchmarks.bench_stream_soak                       # 60 feeds, 180 s, 2 s polls
    python -m benchmarks.bench_stream_soak --feeds 200 --seconds 900

Runs `newsbeam stream` on Prism (`make prism`) against a local HTTP server whose feeds behave like
real ones: each poll of a feed shows its latest `--entries` items, one of them new, so most of
every poll is duplicates; a tenth of the feeds answer 304 to conditional GETs. The de-duplication
cache holds what the store's version index holds, so it grows with the articles stored, not with
the polls. Every second it samples the resident memory (VmRSS) of the
launcher process (which runs the Python stages, LOOPBACK) and of the Prism process, and prints the
samples per tenth of the run, the growth over the second half (the figure to watch: about 1.0x
when memory is bounded), and the articles, duplicates and files written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.feedserver import FeedServer, Reply, Request  # noqa: E402

MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def sliding_feed(name: str, entries: int, started: float, poll: float) -> object:
    """A feed whose newest item changes every poll interval: one new entry, the rest repeats."""

    def answer(request: Request) -> Reply:
        newest = int((time.time() - started) / poll)
        items = "".join(
            f"<item><guid>{name}-{n}</guid><link>http://soak.test/{name}/{n}</link>"
            f"<title>Story {n} from {name}</title><description>Report number {n} of the {name} desk, "
            "with a few sentences of ordinary English text about the day's events in town."
            "</description></item>"
            for n in range(max(0, newest - entries + 1), newest + 1)
        )
        body = (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>{items}</channel></rss>'
        )
        return Reply(200, body.encode(), {"Content-Type": "application/rss+xml"})

    return answer


def static_feed(name: str) -> object:
    etag = f'"{name}"'
    body = (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title><item><guid>{name}-0</guid>'
        f"<link>http://soak.test/{name}/0</link><title>The one story of {name}</title>"
        "<description>Nothing changes on this feed, which answers 304 when asked.</description></item>"
        "</channel></rss>"
    ).encode()

    def answer(request: Request) -> Reply:
        if request.headers.get("if-none-match") == etag:
            return Reply(304, headers={"ETag": etag})
        return Reply(200, body, {"Content-Type": "application/rss+xml", "ETag": etag})

    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=60)
    parser.add_argument("--entries", type=int, default=5, help="items per feed response")
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--poll", type=int, default=2)
    parser.add_argument("--window", type=int, default=10)
    args = parser.parse_args(argv)

    prism = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    if not prism.is_file():
        print(
            f"bench_stream_soak: the Prism runner is not built at {prism}: run `make prism`", file=sys.stderr
        )
        return 2

    work = Path(tempfile.mkdtemp(prefix="newsbeam-soak-"))
    output = work / "out"
    with FeedServer() as server:
        started = time.time()
        urls = []
        for index in range(args.feeds):
            name = f"feed{index:04d}"
            answer = (
                static_feed(name) if index % 10 == 0 else sliding_feed(name, args.entries, started, args.poll)
            )
            urls.append(server.route(f"/{name}.xml", answer))  # type: ignore[arg-type]
        config = {
            "runner": "prism",
            "output": str(output),
            "feeds": [{"url": url} for url in urls],
            "stream": {
                "poll_interval": args.poll,
                "window": args.window,
                "cleanup_after": args.window * 3,
            },
            "fetch": {"allow_private_hosts": True, "max_attempts": 1},
            "beam_options": {"environment_type": "LOOPBACK"},
        }
        config_path = work / "soak.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "stream",
                "--config",
                str(config_path),
                "--duration",
                str(args.seconds),
            ],
            cwd=PROJECT,
            env={**os.environ, "NEWSBEAM_PRISM": str(prism)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        samples: list[tuple[float, int, int]] = []
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(process.stderr or []), daemon=True)
        reader.start()
        while process.poll() is None:
            prism_pids = (
                [
                    c
                    for c in children(process.pid)
                    if "prism" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
                ]
                if Path(f"/proc/{process.pid}").exists()
                else []
            )
            samples.append(
                (time.time() - started, rss_bytes(process.pid), sum(rss_bytes(p) for p in prism_pids))
            )
            time.sleep(1)
        out = process.stdout.read() if process.stdout else ""
        reader.join(timeout=5)

    (work / "stream.err").write_text("".join(err_lines), encoding="utf-8")
    print(
        f"soak: {args.feeds} feeds ({args.feeds // 10} answering 304), {args.entries} items each, "
        f"{args.poll}s polls, {args.window}s windows, {args.seconds}s run"
    )
    print(out.strip())
    if process.returncode != 0:
        print(
            f"the stream failed (exit {process.returncode}); its log: {work / 'stream.err'}", file=sys.stderr
        )
        return 1
    cycles = [line for line in err_lines if "poll cycle" in line]
    print(f"poll cycles logged: {len(cycles)}; last: {cycles[-1].strip() if cycles else '-'}")
    with duckdb.connect() as connection:
        total, distinct = connection.execute(
            f"SELECT count(*), count(DISTINCT (article_id, content_hash)) "
            f"FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true)"
        ).fetchall()[0]
    print(f"articles written: {total} ({distinct} distinct versions; duplicates written: {total - distinct})")
    print("   t(s)  launcher RSS (MB)  prism RSS (MB)")
    step = max(1, len(samples) // 10)
    for at, launcher, prism_rss in samples[::step]:
        print(f"{at:7.0f}  {launcher / MB:17.1f}  {prism_rss / MB:14.1f}")
    # While the job runs (both processes alive): the start and the final flush are not steady state.
    half = [s for s in samples if s[0] >= args.seconds / 2 and s[2] > 0 and s[0] <= args.seconds]
    if len(half) >= 2:
        first, last = half[0], half[-1]
        print(
            f"second half growth: launcher {last[1] / max(first[1], 1):.2f}x "
            f"({(last[1] - first[1]) / MB:+.1f} MB), prism {last[2] / max(first[2], 1):.2f}x "
            f"({(last[2] - first[2]) / MB:+.1f} MB); peak launcher {max(s[1] for s in samples) / MB:.0f} MB, "
            f"peak prism {max(s[2] for s in samples) / MB:.0f} MB"
        )
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
