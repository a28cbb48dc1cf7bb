"""A commit's stories decided a chunk at a time (`run_stories.decide_run_stories`): time and memory
of dated and of undated chunks, with undated chunks as large as dated ones and smaller, in one run.

    python -m benchmarks.bench_story_chunks                 # 48 copies of one corpus copy (314k prints)
    python -m benchmarks.bench_story_chunks --copies 160    # about a million, as the 1M scaling run

An undated article is in the window of every other, so it has many more candidates than a dated one:
in the 1M scaling run the last chunks, its undated articles (9.2%), took the committing worker to the
run's peak. The prints of one corpus copy (`bench_story_commit.corpus_prints`) are staged `--copies`
times under new ids and hashes (as the scaling corpus copies feeds: the same texts and dates, other
URLs), in files of 5,000 rows with their index delta. Each undated chunk size then decides them in a
fresh process that samples its RSS every 10 ms. Reported per size: wall seconds, the ranking's peak,
the median seconds and the peak RSS of dated and of undated chunks, the peak RSS over the process's
start, and a digest of every file the commit would publish, equal for all sizes (chunks never change
the stories). Chunks are timed by wrapping `run_stories.decide_stories` in the measuring process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FILE_ROWS = 5_000  # rows of a staged print file, as a worker's bundle stages them
AT = datetime(2026, 12, 4, tzinfo=UTC)


def stage_copies(folder: Path, copies: int) -> dict[str, int]:
    """One corpus copy's prints staged `copies` times under new ids and hashes, and their delta."""
    from benchmarks.bench_story_commit import corpus_prints
    from transforms.io.story_index import PRINT_SCHEMA

    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-story-chunks-") as output:
        rows = corpus_prints(output)
    base = pa.Table.from_pylist(rows, schema=PRINT_SCHEMA)
    (folder / "prints").mkdir(parents=True)
    ids = base["article_id"].to_pylist()
    number = 0
    delta: pq.ParquetWriter | None = None
    for copy in range(copies):
        new_ids = [hashlib.sha256(f"{copy}:{i}".encode()).hexdigest()[:32] for i in ids]
        hashes = [hashlib.sha256(f"hash {copy}:{i}".encode()).hexdigest() for i in ids]
        table = base.set_column(0, "article_id", pa.array(new_ids)).set_column(
            1, "content_hash", pa.array(hashes)
        )
        for start in range(0, table.num_rows, FILE_ROWS):
            pq.write_table(table.slice(start, FILE_ROWS), folder / "prints" / f"p{number:05d}.parquet")
            number += 1
        published = pa.table({"article_id": new_ids, "content_hash": hashes})
        if delta is None:
            delta = pq.ParquetWriter(folder / "delta.parquet", published.schema)
        delta.write_table(published, row_group_size=2_000)
    if delta is not None:
        delta.close()
    return {"prints": base.num_rows * copies, "undated": base["published_at"].null_count * copies}


def _rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def measure(folder: Path, undated_chunk: int) -> dict[str, Any]:
    """`decide_run_stories` over the staged prints in `folder`, in this process."""
    import transforms.io.run_stories as run_stories
    import transforms.io.story_index as story_index
    from transforms.io.paths import INDEX_DATASET
    from transforms.io.staging import StagedFile
    from transforms.io.story_index import STAGED_PRINTS, StorySettings

    peak = [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    time.sleep(0.05)
    start_mb = _rss_mb()
    chunks: list[dict[str, Any]] = []
    deciding = story_index.decide_stories  # what run_stories calls, wrapped there to time each chunk

    def timed(output: str, rows: list[Any], *args: Any, **kwargs: Any) -> Any:
        if not chunks:
            chunks.append({"ranking_peak_mb": peak[0]})
        peak[0], clock = _rss_mb(), time.perf_counter()
        files = deciding(output, rows, *args, **kwargs)
        undated = sum(row["published_at"] is None for row in rows)
        chunks.append({"s": time.perf_counter() - clock, "peak_mb": peak[0], "undated": undated > 0})
        return files

    setattr(run_stories, "decide_stories", timed)  # noqa: B010 - the name run_stories looks up
    prints = [
        StagedFile(STAGED_PRINTS, "", str(p), str(p), 0)
        for p in sorted((folder / "prints").glob("*.parquet"))
    ]
    delta = str(folder / "delta.parquet")
    wall = time.perf_counter()
    hashed = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-story-chunks-") as output:
        published = run_stories._published([StagedFile(INDEX_DATASET, "", delta, delta, 0)])
        for story_file in run_stories.decide_run_stories(
            output, prints, published, "bench", StorySettings(), AT, undated_chunk=undated_chunk
        ):
            hashed.update(f"{story_file.dataset}/{story_file.partition}".encode())
            for batch in story_file.table.to_batches(max_chunksize=10_000):
                for row in batch.to_pylist():  # rows, not batches: a table's chunks differ with its chunks
                    hashed.update(repr(row).encode())
            del story_file
        del published
    seconds = time.perf_counter() - wall
    ranking, decided = chunks[0], chunks[1:]
    dated = [c for c in decided if not c["undated"]]
    undated = [c for c in decided if c["undated"]]
    return {
        "undated_chunk": undated_chunk,
        "seconds": seconds,
        "start_mb": start_mb,
        "ranking_peak_mb": ranking["ranking_peak_mb"],
        "dated_chunks": len(dated),
        "dated_median_s": statistics.median(c["s"] for c in dated) if dated else 0.0,
        "dated_peak_mb": max((c["peak_mb"] for c in dated), default=0),
        "undated_chunks": len(undated),
        "undated_median_s": statistics.median(c["s"] for c in undated) if undated else 0.0,
        "undated_peak_mb": max((c["peak_mb"] for c in undated), default=0),
        "digest": hashed.hexdigest()[:16],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=48)
    parser.add_argument("--sizes", default="5000,1000", help="undated chunk sizes (dated chunks: 5,000)")
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "UNDATED_CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), int(args.measure[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-story-chunks-") as work:
        folder = Path(work)
        counts = stage_copies(folder, args.copies)
        print(f"{counts['prints']:,} prints ({counts['undated']:,} undated) in files of {FILE_ROWS:,}")
        print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        print(
            "undated chunk  wall s  ranking peak  dated: chunks median s peak  "
            "undated: chunks median s peak  start   digest"
        )
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_story_chunks", "--measure", str(folder), str(size)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"{r['undated_chunk']:>13,}  {r['seconds']:6.0f}  {r['ranking_peak_mb']:9d} MB  "
                f"{r['dated_chunks']:12d} {r['dated_median_s']:8.2f} {r['dated_peak_mb']:4d} MB  "
                f"{r['undated_chunks']:14d} {r['undated_median_s']:8.2f} {r['undated_peak_mb']:4d} MB  "
                f"{r['start_mb']:4d} MB  {r['digest']}"
            )
        same = len({r["digest"] for r in results}) == 1
        print(f"the same files for every size: {same}")


if __name__ == "__main__":
    main()
