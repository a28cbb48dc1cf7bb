"""newsbeam end to end: the real batch pipeline (`pipeline.run_batch`) on the replicated corpus.

    python -m benchmarks.e2e OUTPUT_FOLDER WORKERS COPY_FOLDER...

Runs with `--direct_num_workers=WORKERS --direct_running_mode=multi_processing` and the defaults of
`configs/local.yaml`; reports the time `run_batch` took (interpreter start and imports excluded; the
parent measures the wall time with them), the articles the run manifest counts, and how many entries
break the `feed_fetches` equation entries = articles_written + duplicates + dead_letters (lost silently).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from benchmarks.measure import measured_commit, report
from pipeline import run_batch
from pipeline.config import load_settings

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "local.yaml"


def main(argv: list[str]) -> None:
    output, workers, folders = argv[0], int(argv[1]), argv[2:]
    commit = measured_commit()
    shutil.rmtree(output, ignore_errors=True)
    settings = load_settings(CONFIG, {"inputs": folders, "output": output})
    beam_args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    started = time.perf_counter()
    result = run_batch(settings, beam_args=beam_args)
    seconds = time.perf_counter() - started
    print(result.report, file=sys.stderr)  # the run report, kept in the step's log
    report({**run_figures(result.manifest, output), "seconds": seconds, "workers": workers}, commit)


def run_figures(manifest: dict[str, Any], output: str) -> dict[str, Any]:
    """What a committed run wrote, from its manifest and `feed_fetches` rows (any runner)."""
    counts = manifest["counts"]
    # The README's promise for every input: entries = articles_written + duplicates + dead_letters.
    fetches = (
        ds.dataset(Path(output) / "feed_fetches", format="parquet", partitioning="hive")
        .to_table(columns=["entries", "articles_written", "duplicates", "dead_letters"])
        .to_pylist()
    )
    unaccounted = sum(
        (r["entries"] or 0) - (r["articles_written"] or 0) - (r["duplicates"] or 0) - (r["dead_letters"] or 0)
        for r in fetches
    )
    return {
        "articles": counts.get("articles", {}).get("rows", 0),
        "dead_letters": counts.get("dead_letters", {}).get("rows", 0),
        "entries": sum(r["entries"] or 0 for r in fetches),
        "unaccounted_entries": unaccounted,
        "status": manifest["status"],
    }


if __name__ == "__main__":
    main(sys.argv[1:])
