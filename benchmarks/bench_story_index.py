"""The cost of stories in the pipeline: commit-time lookup against the durable index, bytes, CPU on vs off.

    python -m benchmarks.bench_story_index        # lookup at 10k, 100k, 1M; CPU on one corpus copy
    python -m benchmarks.bench_story_index --sizes 10000 100000 --no-cpu
    python -m benchmarks.bench_story_index --no-cpu --band-formats arrow   # today's format alone

**Lookup.** For each size N an index under `OUTPUT/_state/stories/` is generated synthetically (the
bulk: random band hashes and random fingerprint bytes of the real length, one compacted file per
bucket, as `newsbeam compact` leaves it), plus 1,000 real articles filed by a real commit
(`decide_stories`); then a commit of 1,000 articles (500 edited copies of those, 500 new) is
decided against it, timed (wall and CPU of this process). Reported: ms per commit and per article,
the copies found (they must all join), index bytes per article; for band deltas as Arrow IPC files
(memory-mapped, searched in place: what commits write now) and as Parquet (what they wrote before),
in the same run.

**CPU on vs off.** `run_batch` over one copy of the benchmark corpus (benchmarks/corpus.py) with
`stories.enabled` true and false, in-process on the direct runner, alternating, CPU time of the
process per article written.

Figures depend on the machine's load: `uptime` is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.io.parquet import write_arrow
from transforms.io.story_index import (
    BAND_SCHEMA,
    BANDS,
    BUCKETS,
    INDEXED_SCHEMA,
    PRINTS,
    StorySettings,
    bucket_partition,
    decide_stories,
    index_file_name,
    index_files,
)
from transforms.stories import BODY_BANDS, LEAD_BANDS, fingerprint

AT = datetime(2026, 12, 1, 12, tzinfo=UTC)
PRINT_BYTES = 8 + 4 * (126 + 32 + 16)
WORDS = [f"w{n}" for n in range(5000)]


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def text(rng: random.Random, paragraphs: int = 6) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(paragraphs)]


def print_rows(prefix: str, bodies: list[list[str]], hours: float) -> list[dict[str, Any]]:
    rows = []
    for n, paragraphs in enumerate(bodies):
        title = " ".join(paragraphs[0].split()[:6])
        rows.append(
            {
                "article_id": f"{prefix}-{n:06d}",
                "content_hash": f"h{prefix}{n}",
                "published_at": AT + timedelta(hours=hours, seconds=n),
                "source_domain": f"{prefix}.test",
                "ingest_date": "2026-12-01",
                "fingerprint": fingerprint(title, "\n\n".join(paragraphs), "en").to_bytes(),
            }
        )
    return rows


def synthetic_bulk(output: str, articles: int, band_format: str, chunk: int = 50_000, seed: int = 7) -> None:
    """`articles` random articles in one file per bucket, band files sorted by band (what
    `newsbeam compact` leaves), as Arrow IPC (today's format) or Parquet (the earlier one)."""
    rng = np.random.default_rng(seed)
    bands_per = BODY_BANDS + LEAD_BANDS
    writers: dict[tuple[str, int], pq.ParquetWriter] = {}

    def writer(dataset: str, bucket: int, schema: pa.Schema) -> pq.ParquetWriter:
        if (dataset, bucket) not in writers:
            folder = Path(output) / dataset / bucket_partition(bucket)
            folder.mkdir(parents=True, exist_ok=True)
            writers[(dataset, bucket)] = pq.ParquetWriter(
                folder / "part-bulk.parquet", schema, compression="zstd"
            )
        return writers[(dataset, bucket)]

    keys = rng.integers(-(2**63), 2**63 - 1, size=articles, dtype=np.int64)
    key_buckets = (keys.view(np.uint64) % BUCKETS).astype(np.int64)
    for start in range(0, articles, chunk):
        n = min(chunk, articles - start)
        part = keys[start : start + n]
        published = pa.array([AT - timedelta(hours=1)] * n, INDEXED_SCHEMA.field("published_at").type)
        prints = rng.integers(0, 256, size=(n, PRINT_BYTES), dtype=np.uint8)
        fingerprints = pa.array([row.tobytes() for row in prints], pa.binary())
        ids = pa.array([f"bulk-{start + i:08d}" for i in range(n)])
        for bucket in range(BUCKETS):
            chosen = np.flatnonzero(key_buckets[start : start + n] == bucket)
            table = pa.table(
                {
                    "article_key": part[chosen],
                    "article_id": ids.take(pa.array(chosen)),
                    "story_id": ids.take(pa.array(chosen)),
                    "published_at": published.take(pa.array(chosen)),
                    "indexed_at": published.take(pa.array(chosen)),
                    "run_id": pa.array(["bulk"] * len(chosen)),
                    "fingerprint": fingerprints.take(pa.array(chosen)),
                },
                schema=INDEXED_SCHEMA,
            )
            writer(PRINTS, bucket, INDEXED_SCHEMA).write_table(table, row_group_size=8_192)
    # Band rows bucket by bucket, each sorted: a band's bucket is its low 4 bits (`bucket_of`).
    rows = articles * bands_per
    for bucket in range(BUCKETS):
        count = rows // BUCKETS
        bands = (rng.integers(-(2**59), 2**59 - 1, size=count, dtype=np.int64) * BUCKETS) + bucket
        owners = keys[rng.integers(0, max(1, articles), size=count)] if articles else bands[:0]
        order = np.argsort(bands, kind="stable")
        table = pa.table({"band": bands[order], "article_key": owners[order]}, schema=BAND_SCHEMA)
        folder = Path(output) / BANDS / bucket_partition(bucket)
        folder.mkdir(parents=True, exist_ok=True)
        if band_format == "arrow":
            write_arrow(table, str(folder / "part-bulk.arrow"))
        else:
            pq.write_table(table, folder / "part-bulk.parquet", compression="zstd", row_group_size=64_000)
    for open_writer in writers.values():
        open_writer.close()


def publish(output: str, files: list[Any], name: str, band_format: str) -> None:
    for story_file in files:
        folder = Path(output) / story_file.dataset / story_file.partition
        folder.mkdir(parents=True, exist_ok=True)
        if story_file.dataset == BANDS and band_format == "arrow":
            write_arrow(story_file.table, str(folder / index_file_name(BANDS, name)))
        else:
            pq.write_table(story_file.table, folder / name, compression="zstd")


def lookup(size: int, band_format: str, commit: int = 1000) -> dict[str, float]:
    """A commit of `commit` articles (half edited copies of indexed ones) against an index of `size`."""
    rng = random.Random(size)
    settings = StorySettings()
    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-stories-") as output:
        started = time.monotonic()
        synthetic_bulk(output, max(0, size - commit), band_format)
        seeds = [text(rng) for _ in range(commit)]
        publish(
            output,
            decide_stories(output, print_rows("seed", seeds, 0), "seed", settings, AT),
            "part-seed.parquet",
            band_format,
        )
        built = time.monotonic() - started
        copies = [
            [f"By Reporter {n}", *body[:2], *body[3:], "All rights reserved."]
            for n, body in enumerate(seeds[: commit // 2])
        ]
        fresh = [text(rng) for _ in range(commit - len(copies))]
        rows = print_rows("copy", copies, 2) + print_rows("new", fresh, 2)
        wall, cpu = time.monotonic(), time.process_time()
        files = decide_stories(output, rows, "commit", settings, AT)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        stories = pa.concat_tables([f.table for f in files if f.dataset == "stories"])
        joined = sum(1 for s in stories["story_id"].to_pylist() if s.startswith("seed-"))
        size_bytes = sum(os.path.getsize(p) for p in index_files(output))
    return {
        "size": size,
        "built_s": built,
        "wall_ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "joined": joined,
        "copies": len(copies),
        "bytes_per_article": size_bytes / size,
    }


def cpu_on_off(rounds: int) -> list[tuple[bool, float, int]]:
    from benchmarks.corpus import build
    from pipeline import Settings, run_batch

    corpus = build(1)
    inputs = corpus.inputs()
    figures = []
    for _ in range(rounds):
        for enabled in (False, True):
            with tempfile.TemporaryDirectory(prefix="newsbeam-bench-cpu-") as output:
                settings = Settings.model_validate(
                    {
                        "inputs": inputs,
                        "output": output,
                        "state": {"enabled": False},
                        "stories": {"enabled": enabled},
                    }
                )
                cpu = time.process_time()
                result = run_batch(settings)
                figures.append((enabled, time.process_time() - cpu, result.counts.articles))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--band-formats",
        nargs="+",
        choices=["arrow", "parquet"],
        default=["arrow", "parquet"],
        help="band deltas as Arrow IPC (searched in place: today's format) and/or Parquet (the earlier one)",
    )
    args = parser.parse_args()
    print(f"load: {load()}")
    print("lookup: a commit of 1,000 articles (500 edited copies of indexed ones, 500 new) against the index")
    for band_format in args.band_formats:
        lookup_table(args.sizes, band_format)
    if not args.no_cpu:
        cpu_table(args.rounds)


def lookup_table(sizes: list[int], band_format: str) -> None:
    print(f"  band deltas as {band_format}:")
    base = None
    for size in sizes:
        figure = lookup(size, band_format)
        base = base or figure
        ratio = figure["cpu_ms"] / base["cpu_ms"]
        print(
            f"  {size:>9,} indexed: {figure['wall_ms']:8.0f} ms wall, {figure['cpu_ms']:8.0f} ms CPU per "
            f"commit ({figure['cpu_ms'] / 1000:.2f} ms CPU per article; x{ratio:.1f} of the smallest), "
            f"copies joined {figure['joined']}/{figure['copies']}, "
            f"{figure['bytes_per_article']:.0f} index bytes per article (built in {figure['built_s']:.0f} s)"
        )
        print(f"    load: {load()}")


def cpu_table(rounds: int) -> None:
    figures = cpu_on_off(rounds)
    print("CPU of `run_batch` over one corpus copy, stories off vs on (in-process direct runner):")
    for enabled, cpu, articles in figures:
        per_article = cpu * 1000 / max(1, articles)
        state = "on " if enabled else "off"
        print(f"  stories {state}: {per_article:.3f} ms CPU per article ({articles} articles)")
    off = min(c / max(1, a) for e, c, a in figures if not e)
    on = min(c / max(1, a) for e, c, a in figures if e)
    print(
        f"  best of each: off {off * 1000:.3f}, on {on * 1000:.3f} ms per article: "
        f"+{(on - off) * 1000:.3f} ms ({on / off - 1:+.0%})"
    )
    print(f"  load: {load()}")


if __name__ == "__main__":
    main()
