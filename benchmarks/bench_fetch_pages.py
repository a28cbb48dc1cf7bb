"""Page fetching at scale, politely: 1,000 article pages over 20 local hosts through ExtractFullText.

    python -m benchmarks.bench_fetch_pages [--pages 1000] [--hosts 20] [--latency 0.1] [--workers 1]
                                           [--no-write]

Serves `--pages` small article pages from `--hosts` real HTTP servers on 127.0.0.1, 127.0.0.2, ...
(each a different host to the client), every answer delayed by `--latency` seconds, each host with a
robots.txt, and runs newsbeam's `ExtractFullText` over one article record per page (a teaser feed
text, so `auto` fetches every page) on Beam's FnApiRunner (`--workers` > 1: that many worker
processes, which share the per-host limits through the run folder). Two rounds:

- `polite`: the defaults (2 requests at once per host, at most 2 request starts a second per host);
- `no spacing`: the same concurrency limit with no spacing, where the limit alone sets the pace.

For each: the wall time, pages per second, the bound the limits set (pages per host x spacing, or
pages per host / slots x latency), and the most requests any one server saw at once, which the
per-host limit bounds. Writes `benchmarks/FETCH_PAGES.md` (committed; do not edit by hand).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from tests.feedserver import FeedServer, Reply
from transforms.fetch import FetchSettings
from transforms.fulltext import ExtractFullText, FullTextSettings
from transforms.pages import PageSettings

REPORT = Path(__file__).resolve().parent / "FETCH_PAGES.md"
SUMMARY = "The council approved the new tram line through the old town on Monday after three years of debate."
PARAGRAPH = (
    "Construction is to start next spring at the northern depot, the transport department said, and the "
    "first trams should run along the river within four years if the budget holds. "
)


def page(index: int) -> bytes:
    body = "".join(f"<p>{PARAGRAPH}Paragraph {n} of article {index}.</p>" for n in range(6))
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Article {index}</title></head>"
        f"<body><nav><a href='/'>Home</a></nav><article><h1>Article {index}</h1><p>{SUMMARY}</p>{body}"
        "</article><footer>Newsletter</footer></body></html>"
    ).encode()


def article(url: str, index: int) -> dict[str, Any]:
    return {
        "source": "http://feeds.bench.example/feed.xml",
        "source_type": "feed",
        "url": url,
        "title": f"Article {index}",
        "summary": SUMMARY,
        "text": SUMMARY,
        "authors": [],
        "tags": [],
        "published_at": None,
        "updated_at": None,
        "language_declared_raw": None,
        "article_id": f"a{index}",
        "content_hash": f"h{index}",
        "already_stored": False,
    }


def run_round(pages: int, hosts: int, latency: float, settings: PageSettings, workers: int) -> dict[str, Any]:
    with ExitStack() as stack:
        servers = [stack.enter_context(FeedServer(f"127.0.0.{h + 1}", latency=latency)) for h in range(hosts)]
        for server in servers:
            server.route("/robots.txt", Reply(200, b"User-agent: *\nDisallow: /private/\n"))
        records = []
        for i in range(pages):
            url = servers[i % hosts].route(f"/news/{i}", Reply(200, page(i), {"Content-Type": "text/html"}))
            records.append(article(url, i))
        options = PipelineOptions(
            direct_num_workers=workers,
            direct_running_mode="multi_processing" if workers > 1 else "in_memory",
        )
        with tempfile.TemporaryDirectory(prefix="newsbeam-pages-") as work_dir:
            fulltext = FullTextSettings(pages=settings)
            clock, cpu = time.monotonic(), time.process_time()
            with Pipeline(runner=FnApiRunner(), options=options) as pipeline:
                result = (
                    pipeline
                    | beam.Create(records)
                    | beam.Reshuffle()
                    | ExtractFullText(fulltext, work_dir, datetime.now(UTC))
                )
                counted = (
                    result.articles
                    | beam.Map(lambda a: a["page_outcome"])
                    | beam.combiners.Count.PerElement()
                )
                counted | beam.Map(lambda kv: print(f"    {kv[0]}: {kv[1]}"))
            elapsed, cpu = time.monotonic() - clock, time.process_time() - cpu
        robots = sum(len(server.hits("/robots.txt")) for server in servers)
        pages_served = sum(len(server.requests) for server in servers) - robots
        per_host = collections.Counter(server.max_in_flight for server in servers)
        return {
            "elapsed": elapsed,
            "cpu": cpu,
            "pages_served": pages_served,
            "robots": robots,
            "max_in_flight": max(server.max_in_flight for server in servers),
            "per_host": dict(sorted(per_host.items())),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    # The servers are on 127.0.0.x; 64 threads a worker, so that every host has more pages waiting
    # than its 2 slots and the per-host limit is what holds them back.
    fetch = FetchSettings(allow_private_hosts=True, max_concurrent=64)
    polite = PageSettings(fetch=fetch)
    rounds = [("polite", polite), ("no spacing", dataclasses.replace(polite, min_interval_seconds=0.0))]
    per_host_pages = -(-args.pages // args.hosts)
    rows = []
    for name, settings in rounds:
        print(f"{name}: {args.pages} pages, {args.hosts} hosts, {args.latency * 1000:.0f} ms latency")
        measured = run_round(args.pages, args.hosts, args.latency, settings, args.workers)
        spacing_bound = (per_host_pages - 1) * settings.min_interval_seconds + args.latency
        slots_bound = -(-per_host_pages // settings.max_per_host) * args.latency
        bound = max(spacing_bound, slots_bound)
        rows.append((name, settings, measured, bound))
        print(f"  {measured['elapsed']:.1f} s, max in flight per host {measured['max_in_flight']}")
    lines = [
        f"# Fetching article pages: {args.hosts} hosts, the per-host limits held",
        "",
        "Written by `python -m benchmarks.bench_fetch_pages` (do not edit by hand) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {args.workers} worker process(es).",
        "",
        f"{args.pages} small article pages (about 5 KB) over {args.hosts} local HTTP servers (127.0.0.1 "
        f"to 127.0.0.{args.hosts}, each a host of its own), every answer delayed by "
        f"{args.latency * 1000:.0f} ms, "
        "through `ExtractFullText` (robots.txt, the per-host limits across processes, the shared fetcher, "
        "the extraction). `bound` is what the limits allow at best: per host, (pages - 1) x spacing + one "
        "latency, or pages / slots x latency. `max in flight` is the most requests one server saw at once. "
        "64 fetch threads per worker, so that every host has more pages waiting than its 2 slots. Where the "
        "wall time is over the bound, the CPU (extraction, Beam, the 20 servers in this same process, on a "
        "shared machine) is what sets it.",
        "",
        "| round | slots per host | spacing | wall time | pages/s | bound | max in flight (per host: count) "
        "| pages served | robots.txt requests | CPU s (this process) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, settings, measured, bound in rows:
        spread = ", ".join(f"{k}: {v}" for k, v in measured["per_host"].items())
        lines.append(
            f"| {name} | {settings.max_per_host} | {settings.min_interval_seconds:g} s | "
            f"{measured['elapsed']:.1f} s | {args.pages / measured['elapsed']:.0f} | {bound:.1f} s | "
            f"{measured['max_in_flight']} ({spread}) | {measured['pages_served']} | {measured['robots']} | "
            f"{measured['cpu']:.1f} |"
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        REPORT.write_text(text, encoding="utf-8")
        print(f"written: {REPORT}")


if __name__ == "__main__":
    main()
