"""`newsbeam show OUTPUT`: what an output holds, at a glance or as JSON for scripts.

    newsbeam show output            # rows per dataset and partition, the latest runs, a few articles
    newsbeam show output --json     # the same as one JSON document

Only committed files count (pipeline/datasets.py). Row counts come from each file's Parquet footer
(no data is read for them); the runs and the sample are DuckDB queries over the committed rows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pipeline.datasets import SCHEMAS, Store
from pipeline.health import latest_runs
from pipeline.story_figures import largest_stories, story_totals
from transforms.io.parquet import read_parquet_metadata


def _rows_in(path: str) -> int:
    return int(read_parquet_metadata(path).num_rows)


def dataset_counts(store: Store) -> dict[str, dict[str, Any]]:
    """Per dataset: its rows and files, and the rows of each leaf partition (`ingest_date=…/language=en`)."""
    counts: dict[str, dict[str, Any]] = {}
    for dataset in SCHEMAS:
        partitions: dict[str, int] = {}
        files = store.files[dataset]
        for committed in files:
            name = "/".join(f"{k}={v}" for k, v in committed.partition.items())
            partitions[name] = partitions.get(name, 0) + _rows_in(committed.path)
        counts[dataset] = {
            "rows": sum(partitions.values()),
            "files": len(files),
            "partitions": dict(sorted(partitions.items())),
        }
    return counts


def article_sample(store: Store, limit: int) -> list[dict[str, Any]]:
    """The `limit` most recently published articles (latest versions), newest first."""
    return store.rows(
        "SELECT title, language, source, coalesce(published_at, ingested_at) AS published_at, url, "
        "word_count FROM latest_articles ORDER BY published_at DESC NULLS LAST, article_id LIMIT ?",
        [limit],
    )


def summary(store: Store, runs: int = 5, sample: int = 5) -> dict[str, Any]:
    return {
        "output": store.output,
        "datasets": dataset_counts(store),
        "runs": latest_runs(store, runs),
        "sample": article_sample(store, sample),
        "stories": {**story_totals(store), "largest": largest_stories(store, sample)},
    }


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def as_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=_json_value, ensure_ascii=False)


def as_text(document: dict[str, Any]) -> str:
    lines = [f"newsbeam output {document['output']}"]
    for dataset, counts in document["datasets"].items():
        lines.append(f"  {dataset}: {counts['rows']:,} rows in {counts['files']} files")
        for partition, rows in counts["partitions"].items():
            lines.append(f"    {partition or '(no partition)'}: {rows:,}")
    lines.append("  latest runs:")
    for run in document["runs"]:
        started = run["started_at"].strftime("%Y-%m-%d %H:%M") if run["started_at"] else "?"
        articles = "" if run["articles"] is None else f", {run['articles']:,} articles"
        lines.append(f"    {run['run_id']} ({run['kind']}, {started} UTC): {run['outcome']}{articles}")
    if not document["runs"]:
        lines.append("    (none)")
    stories = document["stories"]
    lines.append(
        f"  stories: {stories['stories']:,} for {stories['articles']:,} articles; "
        f"{stories['shared']:,} told by 2 or more ({stories['joined']:,} articles joined an earlier one)"
    )
    for story in stories["largest"]:
        lines.append(f"    {story['articles']} articles, {story['outlets']} outlets: {story['title']}")
        lines.append(f"        {story['domains']}")
    lines.append("  sample of articles:")
    for article in document["sample"]:
        when = article["published_at"].strftime("%Y-%m-%d") if article["published_at"] else "undated"
        lines.append(f"    [{article['language']}] {when} {article['title']}")
        lines.append(f"        {article['url'] or article['source']}")
    if not document["sample"]:
        lines.append("    (none)")
    return "\n".join(lines)
