"""The commit's ranking of a run's prints (`run_stories.arrival_ranks`): 64-bit words against strings.

    python -m benchmarks.bench_story_ranks                     # 1,000,000 prints in 200 staged files
    python -m benchmarks.bench_story_ranks --prints 100000 --files 20

Before a batch commit decides its stories it ranks every published print in arrival order
(published_at, then article_id) and keeps one per id. newsbeam's ids (32 hex) and content hashes
(64 hex) are ranked as 64-bit words (`_WORDS`); any other ids take the string path (`_STRINGS`),
which is also the fair baseline: the same files, the same single join and sort, string keys. Each
path runs in a fresh process on the same staged files (random dates, 9% undated, 1% of the ids
staged twice, the index delta written in row groups of 2,000 as the writer writes it); reported:
wall and CPU seconds, the process's peak RSS over what it held before, and whether both paths give
the same ranks (a digest of the (file, row) order).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

AT = datetime(2026, 11, 1, tzinfo=UTC)


def write_prints(folder: Path, count: int, files: int) -> None:
    """`count` staged prints in `files` files (ids and hashes as newsbeam makes them) and the delta."""
    rng = np.random.default_rng(20261204)
    ids = [hashlib.sha256(b"id%d" % n).hexdigest()[:32] for n in range(count)]
    hashes = [hashlib.sha256(b"hash%d" % n).hexdigest() for n in range(count)]
    seconds = rng.integers(0, 30 * 86400, count)
    undated = rng.random(count) < 0.09
    dates = [None if undated[n] else AT + timedelta(seconds=int(seconds[n])) for n in range(count)]
    again = rng.choice(count, size=count // 100, replace=False)  # staged twice (two workers' copies)
    order = np.concatenate([np.arange(count), again])
    rng.shuffle(order)
    per = -(-len(order) // files)
    for number in range(files):
        rows = order[number * per : (number + 1) * per].tolist()
        table = pa.table(
            {
                "article_id": [ids[n] for n in rows],
                "content_hash": [hashes[n] for n in rows],
                "published_at": pa.array([dates[n] for n in rows], pa.timestamp("us", tz="UTC")),
                "fingerprint": pa.array([b"print%d" % n for n in rows], pa.binary()),
            }
        )
        pq.write_table(table, folder / f"prints-{number:04d}.parquet")
    delta = pa.table({"article_id": ids, "content_hash": hashes})
    pq.write_table(delta, folder / "delta.parquet", row_group_size=2_000)


def measure(folder: str, path: str) -> dict[str, object]:
    """One path's ranking of the staged prints in `folder`, in this process."""
    from transforms.io.paths import INDEX_DATASET
    from transforms.io.run_stories import _published, _published_strings, arrival_ranks
    from transforms.io.staging import StagedFile
    from transforms.io.story_index import STAGED_PRINTS

    prints = [
        StagedFile(STAGED_PRINTS, "", str(p), str(p), 0)
        for p in sorted(Path(folder).glob("prints-*.parquet"))
    ]
    delta = str(Path(folder) / "delta.parquet")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    published = (
        _published([StagedFile(INDEX_DATASET, "", delta, delta, 0)])
        if path == "words"
        else _published_strings([delta])
    )
    ranks = arrival_ranks(prints, published)
    order = np.stack([ranks["file"].to_numpy(), ranks["row"].to_numpy()]).tobytes()
    return {
        "path": path,
        "keyed_as": "words" if "i0" in published.schema.names else "strings",
        "ranks": ranks.num_rows,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_over_start_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
        "start_mb": before / 1024,
        "digest": hashlib.sha256(order).hexdigest()[:16],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prints", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-story-ranks-") as folder:
        started = time.perf_counter()
        write_prints(Path(folder), args.prints, args.files)
        print(
            f"{args.prints:,} prints (+1% staged twice) in {args.files} files: "
            f"{time.perf_counter() - started:.1f} s"
        )
        results = []
        for path in ("strings", "words"):
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_story_ranks", "--measure", folder, path],
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("path     keyed as  ranks       wall s  CPU s  peak RSS over start (start)  digest")
    for r in results:
        print(
            f"{r['path']:<8} {r['keyed_as']:<9} {r['ranks']:<11,} {r['wall_s']:6.1f} {r['cpu_s']:6.1f}  "
            f"{r['peak_over_start_mb']:8.0f} MB ({r['start_mb']:.0f} MB)          {r['digest']}"
        )
    strings, words = results
    same = "the same ranks" if strings["digest"] == words["digest"] else "DIFFERENT RANKS"
    print(
        f"words over strings: {strings['wall_s'] / words['wall_s']:.1f}x less wall time, "
        f"{strings['peak_over_start_mb'] / max(1.0, words['peak_over_start_mb']):.1f}x less added "
        f"memory; {same}"
    )


if __name__ == "__main__":
    main()
