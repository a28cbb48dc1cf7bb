"""How the version index (the seen-set of scheduled runs) grows and what reading it costs.

    .venv/bin/python -m benchmarks.bench_version_index               # 1M index rows, 2,000 run ids
    .venv/bin/python -m benchmarks.bench_version_index --rows 5000000

Writes an index of random article versions the way runs do (zstd Parquet), then does what a run
does at its start: reads the four lookup columns and keeps the rows of the run's ids (half of them
stored). Prints bytes per row on disk, seconds per million rows read, and the peak memory, which
must follow the matches, not the index.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import tempfile
import time
from datetime import UTC, datetime

import pyarrow as pa

from transforms.io.parquet import ParquetSettings, write_parquet
from transforms.io.versions import INDEX_SCHEMA, latest_versions, read_index


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--run-ids", type=int, default=2_000)
    args = parser.parse_args()

    ids = [secrets.token_hex(16) for _ in range(args.rows)]
    table = pa.table(
        {
            "article_id": ids,
            "content_hash": [secrets.token_hex(32) for _ in range(args.rows)],
            "updated_at": pa.array(
                [datetime(2026, 11, 1, tzinfo=UTC)] * args.rows, pa.timestamp("us", tz="UTC")
            ),
            "version": pa.array([1] * args.rows, pa.int32()),
            "run_id": ["20261129T210556Z-4249f1"] * args.rows,
            "ingest_date": ["2026-11-29"] * args.rows,
        },
        schema=INDEX_SCHEMA,
    )
    folder = tempfile.mkdtemp(prefix="newsbeam-index-")
    path = os.path.join(folder, "part-bench-0000.parquet")
    write_parquet(table, path, ParquetSettings())
    del table
    size = os.path.getsize(path)
    step = max(1, args.rows // (args.run_ids // 2))
    wanted = ids[::step][: args.run_ids // 2] + [secrets.token_hex(16) for _ in range(args.run_ids // 2)]
    del ids
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    matched = latest_versions(read_index([path], wanted))
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"index rows:            {args.rows:,}")
    print(f"bytes per row on disk: {size / args.rows:.1f}  ({size / 1e6:.1f} MB)")
    print(f"run ids looked up:     {len(wanted):,}, found {len(matched):,}")
    print(f"read and filter:       {elapsed:.2f} s  ({elapsed / (args.rows / 1e6):.2f} s per million rows)")
    print(f"peak memory (RSS):     {peak / 1024:.0f} MB (before reading {before / 1024:.0f} MB)")
    os.remove(path)
    os.rmdir(folder)


if __name__ == "__main__":
    main()
