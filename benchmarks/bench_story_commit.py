"""The commit-time cost of stories: `decide_stories` over the prints of one corpus copy's articles.

    python -m benchmarks.bench_story_commit            # one copy (6,552 articles), 3 rounds
    python -m benchmarks.bench_story_commit --rounds 5

A batch run decides the stories of everything it stores at its commit, under the commit lock and in
one process, after the workers are done: this cost is serial, so it adds to a run's wall time as a
whole. The articles of `newsbeam run` over one copy of the benchmark corpus (benchmarks/corpus.py,
stories off, made once per call) are fingerprinted as the stage does (`story_print`), then decided in
one commit against an empty index, each round in a fresh folder; reported: CPU ms per article (this
process), and a digest of the files the decision writes (the same digest before and after a change
that must not change them, for the same corpus folder: the ids of its link-less seed entries hold
their file's path).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
import time
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as ds

from benchmarks.corpus import build
from pipeline import Settings, run_batch
from transforms.io.story_index import StoryFile, StorySettings, decide_stories, print_row, story_print
from transforms.schema import STORY_PRINT, Record

AT = datetime(2026, 12, 3, tzinfo=UTC)
COLUMNS = ["article_id", "content_hash", "title", "text", "summary", "published_at", "source_domain"]


def corpus_prints(output: str) -> list[Record]:
    """The print rows of the articles one corpus copy stores (as the stage stages them)."""
    run_batch(
        Settings.model_validate(
            {
                "inputs": build(1).inputs(),
                "output": output,
                "state": {"enabled": False},
                "stories": {"enabled": False},
            }
        )
    )
    articles = ds.dataset(f"{output}/articles", format="parquet", partitioning="hive")
    table: pa.Table = articles.to_table(columns=[*COLUMNS, "language", "ingest_date"])
    return [print_row({**row, STORY_PRINT: story_print(row)}) for row in table.to_pylist()]


def digest(files: list[StoryFile]) -> str:
    hashed = hashlib.sha256()
    for story_file in sorted(files, key=lambda f: (f.dataset, f.partition)):
        hashed.update(f"{story_file.dataset}/{story_file.partition}".encode())
        hashed.update(repr(story_file.table.to_pylist()).encode())
    return hashed.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-story-commit-") as output:
        prints = corpus_prints(output)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    for round_number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="newsbeam-bench-story-commit-") as output:
            cpu = time.process_time()
            files = decide_stories(output, prints, "bench", StorySettings(), AT)
            per_article = (time.process_time() - cpu) * 1000 / len(prints)
        print(
            f"  round {round_number}: decide_stories over {len(prints):,} prints: "
            f"{per_article:.3f} ms CPU per article; files {len(files)}, digest {digest(files)}"
        )


if __name__ == "__main__":
    main()
