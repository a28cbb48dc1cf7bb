"""One huge feed: where its time goes, and what the per-feed entry cap bounds it to.

    .venv/bin/python -m benchmarks.bench_big_feed                   # 200,000 entries (16 MB), capped
    .venv/bin/python -m benchmarks.bench_big_feed --uncapped        # also the whole run without the cap
    .venv/bin/python -m benchmarks.bench_big_feed --entries 50000 --sample 5000

A feed is read, and its entries normalized, detected, enriched and staged, by one worker inside one
fused stage: records are never reshuffled (tests/test_fusion.py), so nothing spreads one feed's
entries over several workers, and its cost grows with its entries. This script writes one RSS file of
`--entries` small items, then times (1) feedparser on the whole file and with the default cap,
(2) each per-entry stage in a plain loop over the first `--sample` entries (CPU time per entry),
and (3) `run_batch` on the file (the in-process runner: one worker, so CPU time is the feed's cost
on a shared machine, wall time what a user waits) with the default `fetch.max_entries_per_feed`
and, with `--uncapped`, with a cap above the feed. It prints the figures and each run's
`feed_fetches` row.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow.dataset as ds

from pipeline import run_batch
from pipeline.config import load_settings
from transforms.enrich import enrich_article, identify_article
from transforms.language import LanguageDetector, LanguageSettings, apply_language
from transforms.normalize import normalize_entry
from transforms.parse import parse_input
from transforms.read import MAX_ENTRIES_PER_FEED
from transforms.schema import CheckedArticle, RunInfo


def big_rss_feed(entries: int, host: str = "big.example") -> bytes:
    """An RSS 2.0 feed of `entries` items of about 80 bytes each (200,000 make 16 MB)."""
    items = "".join(
        f"<item><title>Entry number {i}</title><link>https://{host}/a/{i}</link></item>\n"
        for i in range(entries)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Big</title>'
        f"<link>https://{host}/</link>\n{items}</channel></rss>\n"
    ).encode()


def stage_costs(body: bytes, sample: int) -> dict[str, float]:
    """CPU milliseconds per entry of parse (whole feed), normalize, detect and enrich (first `sample`)."""
    clock = time.process_time
    run = RunInfo("bench", datetime.now(UTC).replace(microsecond=0), "bench")
    detector = LanguageDetector(LanguageSettings())
    start = clock()
    parse_input(body, "big.xml", max_entries=MAX_ENTRIES_PER_FEED)
    capped_seconds = clock() - start
    start = clock()
    parsed = parse_input(body, "big.xml", max_entries=None)
    parse_seconds = clock() - start
    found = len(parsed.entries)
    spent = dict.fromkeys(("normalize", "detect", "enrich"), 0.0)
    for entry in parsed.entries[:sample]:
        t0 = clock()
        article = normalize_entry(entry, run.started_at)
        t1 = clock()
        # Identifying is the first part of enriching (its id and hash), done before detect.
        checked = cast(CheckedArticle, {**identify_article(article), "already_stored": False})
        t1b = clock()
        result = detector.detect(
            checked.get("title"), checked.get("text"), checked.get("language_declared_raw")
        )
        detected = apply_language(checked, result)
        t2 = clock()
        enrich_article(detected, run)
        t3 = clock()
        spent["normalize"] += t1 - t0
        spent["detect"] += t2 - t1b
        spent["enrich"] += t3 - t2 + t1b - t1
    measured = min(sample, found)
    return {
        "entries": found,
        "parse_seconds": parse_seconds,
        "parse_capped_seconds": capped_seconds,
        "parse_ms_per_entry": 1000 * parse_seconds / found,
        **{f"{name}_ms_per_entry": 1000 * seconds / measured for name, seconds in spent.items()},
    }


def whole_run(feed: Path, output: Path, max_entries: int) -> dict[str, Any]:
    """`run_batch` on the one feed (in-process runner, one worker): wall seconds and its fetch row."""
    shutil.rmtree(output, ignore_errors=True)
    settings = load_settings(
        None,
        {"inputs": [str(feed)], "output": str(output), "fetch": {"max_entries_per_feed": max_entries}},
    )
    started, cpu = time.perf_counter(), time.process_time()
    manifest = run_batch(settings).manifest
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    (row,) = (
        ds.dataset(output / "feed_fetches", format="parquet", partitioning="hive")
        .to_table(columns=["outcome", "entries", "entries_cut", "articles_written", "dead_letters"])
        .to_pylist()
    )
    return {"cap": max_entries, "seconds": seconds, "cpu": cpu_seconds, "status": manifest["status"], **row}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--sample", type=int, default=2_000, help="entries timed through each stage")
    parser.add_argument("--uncapped", action="store_true", help="also run with a cap above the feed (slow)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="newsbeam-big-feed-"))
    try:
        feed = folder / "big.xml"
        feed.write_bytes(big_rss_feed(args.entries))
        print(f"feed:            {args.entries:,} entries, {feed.stat().st_size / 1e6:.1f} MB")
        costs = stage_costs(feed.read_bytes(), args.sample)
        seconds, per = costs["parse_seconds"], costs["parse_ms_per_entry"]
        print(f"parse (whole):   {seconds:.1f} s CPU ({per:.3f} ms/entry)")
        capped = costs["parse_capped_seconds"]
        print(
            f"parse (capped):  {capped:.1f} s CPU (the first {MAX_ENTRIES_PER_FEED:,} read, the rest counted)"
        )
        per_entry = 0.0
        for name in ("normalize", "detect", "enrich"):
            per_entry += costs[f"{name}_ms_per_entry"]
            print(
                f"{name + ':':<16} {costs[f'{name}_ms_per_entry']:.3f} ms/entry CPU (first {args.sample:,})"
            )
        print(f"per-entry total: {per_entry:.3f} ms -> {per_entry * args.entries / 1000:.0f} s for the feed")
        caps = [MAX_ENTRIES_PER_FEED] + ([args.entries + 1] if args.uncapped else [])
        for cap in caps:
            result = whole_run(feed, folder / f"out-{cap}", cap)
            print(
                f"run, cap {cap:,}:".ljust(17)
                + f"{result['seconds']:.0f} s wall, {result['cpu']:.0f} s CPU, {result['status']}; "
                f"feed_fetches: outcome {result['outcome']}, "
                f"entries {result['entries']:,}, entries_cut {result['entries_cut']:,}, "
                f"articles_written {result['articles_written']:,}, dead_letters {result['dead_letters']}"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
