"""Feed health: which feeds fail, which went silent (stale), and the runs' outcomes, from committed data.

A feed is **failing** when its latest fetch row failed (`error`, `not_a_feed`, or skipped because it
kept failing: `backing_off`); `failing_for` counts its fetches since it was last read.

A feed is **stale** when, as of the last time it was read, it had had no new entry for more than
`factor` (3) times its median gap between entries over the last `window` (30 days): a feed that
still answers but stopped publishing, the silent failure feed readers are asked about most. An
entry's time is its publication time, else the ingestion of its first version; gaps are taken
between distinct times, so the many entries of one undated run are one time. A feed with no entry
at all in the window, but entries before it, is stale too. The reference time is the feed's last
successful read, not the clock: a pipeline that has not run for a week says nothing of its feeds.

`feed_health` is what `newsbeam report` shows (failing first, then stale) and what `--alerts`
prints for a scheduler (exit code 6 when any feed needs attention). Seed files are not feeds and
are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.datasets import Store
from pipeline.story_figures import STORY_COLUMNS

DEFAULT_STALE_FACTOR = 3.0
DEFAULT_STALE_WINDOW_SECONDS = 30 * 86400
READ_OUTCOMES = ("ok", "ok_with_warnings", "empty", "not_modified")
FAILED_OUTCOMES = ("error", "not_a_feed")
ATTENTION = ("failing", "stale")

ARTICLE_COLUMNS = [
    "article_id",
    "source",
    "source_type",
    "language",
    "published_at",
    "ingested_at",
    "word_count",
    "char_count",
    "version",
    "ingest_date",
    "run_id",
    "title",
    "url",
]
FETCH_COLUMNS = [
    "source",
    "source_type",
    "outcome",
    "error_type",
    "http_status",
    "feed_title",
    "entries",
    "articles_written",
    "started_at",
    "ingest_date",
    "run_id",
]
DEAD_LETTER_COLUMNS = ["stage", "error_type", "source", "failed_at", "ingest_date", "run_id"]


@dataclass(frozen=True)
class StaleRule:
    """Stale: no new entry for more than `factor` x the median gap over the last `window_seconds`."""

    factor: float = DEFAULT_STALE_FACTOR
    window_seconds: int = DEFAULT_STALE_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"--stale-factor {self.factor}: give a number above 0 (default 3)")
        if self.window_seconds <= 0:
            raise ValueError("--stale-window: give a duration above 0 (default 30d)")


def open_store(output: str) -> Store:
    """The store with its datasets (articles, fetches, dead letters, stories) and runs as DuckDB tables."""
    store = Store(output)
    store.load("articles", ARTICLE_COLUMNS)
    store.load("feed_fetches", FETCH_COLUMNS)
    store.load("dead_letters", DEAD_LETTER_COLUMNS)
    store.load("stories", STORY_COLUMNS)
    store.db.execute(
        # The latest stored version of each article: counts are of articles, not of revisions.
        "CREATE TEMP VIEW latest_articles AS SELECT * FROM articles "
        "QUALIFY row_number() OVER (PARTITION BY article_id ORDER BY coalesce(version, 1) DESC) = 1"
    )
    runs = [
        {
            "run_id": str(m.get("run_id")),
            "kind": str(m.get("kind") or "run"),
            "status": str(m.get("status")),
            "started_at": m.get("started_at"),
            "ended_at": m.get("ended_at"),
            "articles": int(m.get("counts", {}).get("articles", {}).get("rows", 0)),
            "dead_letters": int(m.get("counts", {}).get("dead_letters", {}).get("rows", 0)),
        }
        for m in store.manifests
    ]
    table = pa.Table.from_pylist(
        runs,
        pa.schema(
            [
                ("run_id", pa.string()),
                ("kind", pa.string()),
                ("status", pa.string()),
                ("started_at", pa.string()),
                ("ended_at", pa.string()),
                ("articles", pa.int64()),
                ("dead_letters", pa.int64()),
            ]
        ),
    )
    store.db.register("manifest_runs", table)
    return store


FEED_HEALTH_SQL = f"""
WITH fetches AS (
    SELECT *,
        outcome IN {READ_OUTCOMES} AS was_read,
        outcome IN {FAILED_OUTCOMES} OR (outcome = 'skipped' AND error_type = 'backing_off') AS failed
    FROM feed_fetches WHERE source_type = 'feed'
),
latest AS (
    SELECT source,
        arg_max(outcome, started_at) AS last_outcome,
        arg_max(error_type, started_at) AS last_error,
        arg_max(http_status, started_at) AS last_http_status,
        arg_max(failed, started_at) AS last_failed,
        arg_max(feed_title, started_at) FILTER (WHERE feed_title IS NOT NULL) AS title,
        max(started_at) AS last_fetch,
        max(started_at) FILTER (WHERE was_read) AS last_read,
        count(*) AS fetches,
        count(*) FILTER (WHERE failed) AS failures,
        coalesce(max(started_at) FILTER (WHERE was_read), max(started_at)) AS reference
    FROM fetches GROUP BY source
),
streaks AS (
    SELECT f.source, count(*) AS failing_for
    FROM fetches f JOIN latest l USING (source)
    WHERE f.failed AND (l.last_read IS NULL OR f.started_at > l.last_read)
    GROUP BY f.source
),
entry_times AS (
    SELECT DISTINCT source, coalesce(published_at, ingested_at) AS entry_at
    FROM articles WHERE source_type = 'feed' AND coalesce(version, 1) = 1
),
gaps AS (
    SELECT e.source, e.entry_at, l.reference,
        epoch(e.entry_at) - epoch(lag(e.entry_at) OVER (PARTITION BY e.source ORDER BY e.entry_at))
            AS gap_seconds
    FROM entry_times e JOIN latest l USING (source)
    WHERE e.entry_at <= l.reference
),
entry_stats AS (
    SELECT source,
        max(entry_at) AS last_entry,
        count(*) AS entries_seen,
        count(*) FILTER (WHERE epoch(reference) - epoch(entry_at) < $window) AS recent_entries,
        median(gap_seconds) FILTER (WHERE epoch(reference) - epoch(entry_at) < $window) AS median_gap_seconds,
        any_value(reference) AS reference
    FROM gaps GROUP BY source
),
judged AS (
    SELECT l.*, coalesce(s.failing_for, 0) AS failing_for,
        e.last_entry, coalesce(e.entries_seen, 0) AS entries_seen,
        coalesce(e.recent_entries, 0) AS recent_entries, e.median_gap_seconds,
        CASE WHEN e.last_entry IS NULL THEN NULL ELSE epoch(l.reference) - epoch(e.last_entry) END
            AS silent_seconds
    FROM latest l LEFT JOIN streaks s USING (source) LEFT JOIN entry_stats e USING (source)
)
SELECT *,
    CASE
        WHEN last_failed THEN 'failing'
        WHEN entries_seen > 0 AND recent_entries = 0 THEN 'stale'
        WHEN median_gap_seconds > 0 AND silent_seconds > $factor * median_gap_seconds THEN 'stale'
        ELSE 'ok'
    END AS status,
    CASE
        WHEN median_gap_seconds > 0 THEN silent_seconds / median_gap_seconds
    END AS silence_ratio
FROM judged
ORDER BY
    CASE status WHEN 'failing' THEN 0 WHEN 'stale' THEN 1 ELSE 2 END,
    failing_for DESC, silence_ratio DESC NULLS LAST, source
"""


def feed_health(store: Store, rule: StaleRule) -> list[dict[str, Any]]:
    """One row per feed, failing first, then stale, then the healthy ones (see the module docstring)."""
    rows = store.rows(FEED_HEALTH_SQL, {"window": rule.window_seconds, "factor": rule.factor})
    for row in rows:
        row["reason"] = reason(row, rule)
    return rows


def reason(row: dict[str, Any], rule: StaleRule) -> str:
    """Why a feed is failing or stale, in one line; empty for a healthy feed."""
    if row["status"] == "failing":
        status = f"HTTP {row['last_http_status']}, " if row.get("last_http_status") else ""
        return f"{row['last_outcome']}: {row['last_error'] or 'unknown'} ({status}{row['failing_for']} " + (
            "fetch failed)" if row["failing_for"] == 1 else "fetches failed)"
        )
    if row["status"] == "stale":
        days = (row["silent_seconds"] or 0) / 86400
        window_days = rule.window_seconds / 86400
        if not row["recent_entries"]:
            return f"no new entry for {days:.1f} days (none in the last {window_days:g} days)"
        gap = row["median_gap_seconds"] / 86400
        return (
            f"no new entry for {days:.1f} days, more than {rule.factor:g} x its median gap ({gap:.2f} days)"
        )
    return ""


RUNS_SQL = f"""
WITH fetch_runs AS (
    SELECT run_id, min(started_at) AS first_fetch, count(*) AS inputs,
        count(*) FILTER (WHERE outcome IN {FAILED_OUTCOMES}) AS failed_inputs
    FROM feed_fetches GROUP BY run_id
),
runs AS (
    SELECT coalesce(m.run_id, f.run_id) AS run_id,
        coalesce(m.kind, 'stream') AS kind,
        coalesce(m.status, 'committed') AS status,
        coalesce(TRY_CAST(m.started_at AS TIMESTAMPTZ), f.first_fetch) AS started_at,
        TRY_CAST(m.ended_at AS TIMESTAMPTZ) AS ended_at,
        coalesce(f.inputs, 0) AS inputs,
        coalesce(f.failed_inputs, 0) AS failed_inputs,
        m.articles, m.dead_letters
    FROM manifest_runs m FULL OUTER JOIN fetch_runs f ON m.run_id = f.run_id
)
SELECT *,
    CASE
        WHEN status <> 'committed' THEN status
        WHEN kind NOT IN ('run', 'stream') THEN kind
        WHEN inputs > 0 AND failed_inputs = inputs THEN 'nothing read'
        WHEN failed_inputs > 0 THEN failed_inputs || ' of ' || inputs || ' inputs failed'
        ELSE 'ok'
    END AS outcome
FROM runs
ORDER BY started_at DESC NULLS LAST, run_id DESC
LIMIT ?
"""


def latest_runs(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The latest runs (batch runs, stream runs, compactions and prunes) with their outcome."""
    return store.rows(RUNS_SQL, [limit])


def alert_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One tab-separated line per feed that needs attention: status, feed, reason."""
    return [
        f"{row['status']}\t{row['source']}\t{row['reason']}" for row in rows if row["status"] in ATTENTION
    ]
