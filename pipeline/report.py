"""The end-of-run report: what was read, written and dropped, from the run manifest and its files."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow.parquet as pq


def _rows(manifest: dict[str, Any], dataset: str, columns: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in manifest.get("files", []):
        if entry["dataset"] == dataset:
            rows += pq.ParquetFile(entry["final_path"]).read(columns=columns).to_pylist()
    return rows


def render_report(
    manifest: dict[str, Any], output: str, elapsed_seconds: float, metrics: dict[str, int]
) -> str:
    fetches = _rows(
        manifest,
        "feed_fetches",
        ["source", "outcome", "entries", "articles_written", "duplicates", "dead_letters", "elapsed_ms"],
    )
    dead = _rows(manifest, "dead_letters", ["stage", "error_type"])
    counts = manifest.get("counts", {})
    articles = counts.get("articles", {})
    outcomes = Counter(row["outcome"] for row in fetches)
    lines = [
        f"newsbeam run {manifest['run_id']}: {manifest['status']} in {elapsed_seconds:.1f}s",
        f"  inputs read:       {len(fetches)} ({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))})",
        f"  entries found:     {sum(r['entries'] or 0 for r in fetches)}",
        f"  articles written:  {articles.get('rows', 0)}",
    ]
    per_language = sorted(
        ((k.split("=", 1)[1], v) for k, v in articles.items() if k.startswith("language=")),
        key=lambda kv: -kv[1],
    )
    if per_language:
        lines.append("    by language:     " + ", ".join(f"{lang} {n}" for lang, n in per_language))
    lines.append(f"  duplicates:        {sum(r['duplicates'] or 0 for r in fetches)}")
    lines.append(f"  dead letters:      {len(dead)}")
    for (stage, error_type), n in Counter((d["stage"], d["error_type"]) for d in dead).most_common(10):
        lines.append(f"    {stage}/{error_type}: {n}")
    slowest = sorted(fetches, key=lambda r: -(r["elapsed_ms"] or 0))[:3]
    if slowest and len(fetches) > 1:
        lines.append(
            "  slowest inputs:    " + ", ".join(f"{r['source']} ({r['elapsed_ms']} ms)" for r in slowest)
        )
    if metrics:
        lines.append("  beam metrics:      " + ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
    lines.append(f"  output:            {output}/articles, {output}/dead_letters, {output}/feed_fetches")
    lines.append(f"  manifest:          {output}/_runs/{manifest['run_id']}.json")
    return "\n".join(lines)
