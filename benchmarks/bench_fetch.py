"""Fetch throughput: many feeds from local servers with a set latency, through `ReadSources` on Beam.

    python -m benchmarks.bench_fetch [--feeds 1000] [--latency 0.05] [--hosts 20] [--workers 1]

Serves `--feeds` RSS feeds (5 entries each) from `--hosts` real HTTP servers on 127.0.0.1,
127.0.0.2, ... (each a different host to the client), every answer delayed by `--latency`
seconds, and runs newsbeam's `ReadSources` (fetch, parse, per-feed state) on the in-process
FnApiRunner. Prints the wall time, feeds per second, the ratio to fetching one feed after another
(feeds x latency), and the most requests any one server saw at once, which `max_per_host` bounds.
A second round serves every feed from ONE host, where the per-host limit is what sets the pace.
A first tiny round (10 feeds, no latency) shows the fixed cost of starting a Beam pipeline.
"""

from __future__ import annotations

import argparse
import resource
import time
from contextlib import ExitStack

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from tests.feedserver import FeedServer, Reply
from transforms.fetch import FetchSettings
from transforms.read import ReadSettings, ReadSources


def feed(name: str, entries: int = 5) -> bytes:
    items = "".join(
        f"<item><title>{name} story {i}</title><link>http://bench.example/{name}/{i}</link>"
        f"<description>Story {i} of the feed {name}, a few words long.</description></item>"
        for i in range(entries)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://bench.example/{name}</link>{items}</channel></rss>"
    ).encode()


def run_round(
    feeds: int, hosts: int, latency: float, settings: FetchSettings, workers: int
) -> dict[str, float]:
    with ExitStack() as stack:
        servers = [stack.enter_context(FeedServer(f"127.0.0.{h + 1}", latency=latency)) for h in range(hosts)]
        urls = []
        for i in range(feeds):
            server = servers[i % hosts]
            urls.append(
                server.route(f"/feed{i}", Reply(200, feed(f"f{i}"), {"Content-Type": "application/rss+xml"}))
            )
        options = PipelineOptions(direct_num_workers=workers, direct_running_mode="multi_threading")
        clock = time.monotonic()
        with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
            read = p | beam.Create(urls) | ReadSources(ReadSettings(fetch=settings))
            entries, fetch_parts, dead = read.entries, read.fetches, read.dead_letters
            fetches = fetch_parts | "AllFetchRows" >> beam.Flatten()
            counts = (
                (
                    entries | "E" >> beam.Map(lambda _: ("entries", 1)),
                    fetches | "F" >> beam.Map(lambda r: (f"outcome_{r['outcome']}", 1)),
                    dead | "D" >> beam.Map(lambda _: ("dead_letters", 1)),
                )
                | beam.Flatten()
                | beam.CombinePerKey(sum)
                | beam.Map(lambda kv: print(f"    {kv[0]}: {kv[1]}"))
            )
            del counts
        elapsed = time.monotonic() - clock
        return {
            "elapsed": elapsed,
            "requests": sum(len(s.requests) for s in servers),
            "max_in_flight": max(s.max_in_flight for s in servers),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--max-concurrent", type=int, default=32)
    parser.add_argument("--max-per-host", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="FnApiRunner workers (multi_threading)")
    parser.add_argument(
        "--one-host-feeds", type=int, default=200, help="feeds in the one-host round (0: skip)"
    )
    args = parser.parse_args()
    settings = FetchSettings(
        allow_private_hosts=True, max_concurrent=args.max_concurrent, max_per_host=args.max_per_host
    )
    sequential = args.feeds * args.latency
    print(
        f"bench_fetch: {args.feeds} feeds on {args.hosts} hosts, {args.latency * 1000:.0f} ms latency, "
        f"max_concurrent={args.max_concurrent}, max_per_host={args.max_per_host}, workers={args.workers}"
    )
    overhead = run_round(10, 1, 0.0, settings, args.workers)["elapsed"]
    print(f"  pipeline overhead (10 feeds, no latency): {overhead:.1f} s, included in the times below")
    result = run_round(args.feeds, args.hosts, args.latency, settings, args.workers)
    print(
        f"  {args.feeds} feeds in {result['elapsed']:.1f} s = {args.feeds / result['elapsed']:.0f} feeds/s; "
        f"one after another would take >= {sequential:.0f} s (x{sequential / result['elapsed']:.1f} faster); "
        f"most requests at once on one host: {result['max_in_flight']:.0f} (limit {args.max_per_host})"
    )
    if args.one_host_feeds:
        one = run_round(args.one_host_feeds, 1, args.latency, settings, args.workers)
        floor = args.one_host_feeds * args.latency / args.max_per_host
        print(
            f"  one host, {args.one_host_feeds} feeds: {one['elapsed']:.1f} s "
            f"(the per-host limit allows no less than {floor:.1f} s); "
            f"most requests at once: {one['max_in_flight']:.0f} (limit {args.max_per_host})"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
