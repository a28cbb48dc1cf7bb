"""The end-of-run report: what was read, written and dropped, from the run manifest and its files."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def _rows(manifest: dict[str, Any], dataset: str, columns: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in manifest.get("files", []):
        if entry["dataset"] == dataset:
            # Through Beam's FileSystems: s3:// and gs:// outputs use the run's endpoint and credentials.
            with FileSystems.open(entry["final_path"], compression_type=CompressionTypes.UNCOMPRESSED) as f:
                rows += pq.ParquetFile(f).read(columns=columns).to_pylist()
    return rows


FETCH_COUNT_COLUMNS = (
    "source",
    "outcome",
    "entries",
    "entries_cut",
    "articles_written",
    "duplicates",
    "dead_letters",
    "already_stored",
)


def render_report(
    manifest: dict[str, Any], output: str, elapsed_seconds: float, metrics: dict[str, int]
) -> str:
    fetches = _rows(
        manifest,
        "feed_fetches",
        [*FETCH_COUNT_COLUMNS, "elapsed_ms", "error_type", "http_status", "attempts", "message"],
    )
    dead = _rows(manifest, "dead_letters", ["stage", "error_type"])
    counts = manifest.get("counts", {})
    articles = counts.get("articles", {})
    outcomes = Counter(row["outcome"] for row in fetches)
    cut = sum(r["entries_cut"] or 0 for r in fetches)
    lines = [
        f"newsbeam run {manifest['run_id']}: {manifest['status']} in {elapsed_seconds:.1f}s",
        f"  inputs read:       {len(fetches)} ({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))})",
        f"  entries found:     {sum(r['entries'] or 0 for r in fetches)}"
        + (f" ({cut} not read: over fetch.max_entries_per_feed)" if cut else ""),
        f"  articles written:  {articles.get('rows', 0)}",
    ]
    per_language = sorted(
        ((k.split("=", 1)[1], v) for k, v in articles.items() if k.startswith("language=")),
        key=lambda kv: -kv[1],
    )
    if per_language:
        lines.append("    by language:     " + ", ".join(f"{lang} {n}" for lang, n in per_language))
    lines.append(f"  duplicates:        {sum(r['duplicates'] or 0 for r in fetches)}")
    stored = sum(r["already_stored"] or 0 for r in fetches)
    lines.append(f"  already stored:    {stored} (unchanged since earlier runs)")
    lines.append(f"  dead letters:      {len(dead)}")
    for (stage, error_type), n in Counter((d["stage"], d["error_type"]) for d in dead).most_common(10):
        lines.append(f"    {stage}/{error_type}: {n}")
    slowest = sorted(fetches, key=lambda r: -(r["elapsed_ms"] or 0))[:3]
    if slowest and len(fetches) > 1:
        lines.append(
            "  slowest inputs:    " + ", ".join(f"{r['source']} ({r['elapsed_ms']} ms)" for r in slowest)
        )
    lines += feed_health_lines(fetches)
    if metrics:
        lines.append("  beam metrics:      " + ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
    lines.append(f"  output:            {output}/articles, {output}/dead_letters, {output}/feed_fetches")
    lines.append(f"  manifest:          {output}/_runs/{manifest['run_id']}.json")
    return "\n".join(lines)


def feed_health_lines(fetches: list[dict[str, Any]], limit: int = 10) -> list[str]:
    """The feeds that failed this run, and those skipped because they kept failing."""
    lines: list[str] = []
    failing = [r for r in fetches if r["outcome"] in ("error", "not_a_feed")]
    if failing:
        lines.append(f"  failing inputs:    {len(failing)}")
        for row in sorted(failing, key=lambda r: r["source"])[:limit]:
            status = f"HTTP {row['http_status']}, " if row.get("http_status") else ""
            attempts = f"{row['attempts']} attempts" if row.get("attempts") else "read once"
            lines.append(f"    {row['source']}: {row['error_type']} ({status}{attempts})")
        if len(failing) > limit:
            lines.append(f"    ... and {len(failing) - limit} more (see feed_fetches)")
    backing_off = [r for r in fetches if r["outcome"] == "skipped" and r.get("error_type") == "backing_off"]
    if backing_off:
        lines.append(f"  backing off:       {len(backing_off)} failing feeds not polled this run")
        for row in sorted(backing_off, key=lambda r: r["source"])[:limit]:
            lines.append(f"    {row['source']}: {row['message']}")
    return lines
