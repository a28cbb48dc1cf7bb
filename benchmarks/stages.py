"""Stage costs: newsbeam's pure stage functions called in a plain loop, no Beam.

    python -m benchmarks.stages [--profile FILE.html] COPY_FOLDER...

Times read, parse, normalize, detect, enrich and write per article over the given inputs; the
difference to the pipeline's time on the same kind of inputs is Beam's overhead. Writing groups the
articles by partition (ingest date, language) as the pipeline's writer does, one file per partition.
De-duplication is left out: it only exists as a Beam transform.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from benchmarks.corpus import list_inputs
from benchmarks.measure import report
from transforms.enrich import enrich_article, identify_article
from transforms.io.parquet import ParquetSettings, records_to_table, write_parquet
from transforms.io.paths import partition_path
from transforms.language import LanguageDetector, LanguageSettings, apply_language
from transforms.normalize import normalize_entry
from transforms.parse import RawEntry, parse_input, parse_seed_file
from transforms.schema import ARTICLE_SCHEMA, CheckedArticle, RunInfo

STAGES = ("read", "parse", "normalize", "detect", "enrich", "write")
PARTITION_KEYS = ("ingest_date", "language")


def run_stages(folders: list[str]) -> dict[str, Any]:
    # CPU time of this process: on a shared machine it is steadier than wall time, and the loop is
    # single-threaded, so it is the stages' cost.
    clock = time.process_time
    wall = time.perf_counter()
    spent = dict.fromkeys(STAGES, 0.0)
    run = RunInfo("bench", datetime.now(UTC).replace(microsecond=0), "bench")
    detector = LanguageDetector(LanguageSettings())
    file_schema = pa.schema([f for f in ARTICLE_SCHEMA if f.name not in PARTITION_KEYS])
    articles: list[dict[str, Any]] = []
    failures = 0
    for path, is_seed in list_inputs(folders):
        start = clock()
        body = path.read_bytes()
        t1 = clock()
        parsed = parse_seed_file(body, str(path)) if is_seed else parse_input(body, str(path))
        t2 = clock()
        spent["read"] += t1 - start
        spent["parse"] += t2 - t1
        entries: list[RawEntry] = parsed.entries
        for entry in entries:
            t0 = clock()
            try:
                article = normalize_entry(entry, run.started_at)
            except ValueError:
                failures += 1
                spent["normalize"] += clock() - t0
                continue
            t1 = clock()
            # Identifying is the first part of enriching (its id and hash), done before detect.
            checked = cast(CheckedArticle, {**identify_article(article), "already_stored": False})
            t1b = clock()
            result = detector.detect(
                checked.get("title"), checked.get("text"), checked.get("language_declared_raw")
            )
            detected = apply_language(checked, result)
            t2 = clock()
            enriched = enrich_article(detected, run)
            t3 = clock()
            spent["normalize"] += t1 - t0
            spent["detect"] += t2 - t1b
            spent["enrich"] += t3 - t2 + t1b - t1
            articles.append(cast(dict[str, Any], enriched))  # the writers take plain records
    out = Path(tempfile.mkdtemp(prefix="newsbeam-stages-"))
    try:
        start = clock()
        partitions: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in articles:
            partitions[partition_path(record, PARTITION_KEYS)].append(record)
        for n, (_partition, records) in enumerate(partitions.items()):
            write_parquet(
                records_to_table(records, file_schema), str(out / f"{n}.parquet"), ParquetSettings()
            )
        spent["write"] = clock() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "articles": len(articles),
        "failures": failures,
        "seconds": sum(spent.values()),
        "wall_seconds_inside": time.perf_counter() - wall,
        "stages": spent,
    }


def main(argv: list[str]) -> None:
    profile_to = None
    if argv and argv[0] == "--profile":
        profile_to, argv = argv[1], argv[2:]
    if profile_to:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
        result = run_stages(argv)
        profiler.stop()
        Path(profile_to).write_text(profiler.output_text(unicode=True, show_all=False))
    else:
        result = run_stages(argv)
    report(result)


if __name__ == "__main__":
    main(sys.argv[1:])
