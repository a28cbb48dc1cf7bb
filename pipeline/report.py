"""The end-of-run report: what was read, written and dropped, from the run manifest and its files.

Every number comes from what the run committed (the manifest and the `feed_fetches` rows), never
from Beam's counters, which count rows as each step saw them (staged articles before
de-duplication, for one): those are shown only with `-v`, apart and labelled. The same summary
gives the CLI its exit status (inputs read, inputs failed).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from transforms.io.parquet import open_parquet


def _rows(manifest: dict[str, Any], dataset: str, columns: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in manifest.get("files", []):
        if entry["dataset"] == dataset:
            # Through Beam's FileSystems: s3:// and gs:// outputs use the run's endpoint and credentials.
            with open_parquet(entry["final_path"]) as source:
                rows += pq.ParquetFile(source).read(columns=columns).to_pylist()
    return rows


def _story_counts(manifest: dict[str, Any]) -> tuple[int, int]:
    """(new articles, of which joined an earlier story) in the run's `stories` rows: counted from the
    `near_duplicate_of` column, never held as a dict per article (a row per article of the run)."""
    new = joined = 0
    for entry in manifest.get("files", []):
        if entry["dataset"] == "stories":
            with open_parquet(entry["final_path"]) as source:
                column = pq.ParquetFile(source).read(columns=["near_duplicate_of"])["near_duplicate_of"]
            new += len(column)
            joined += len(column) - column.null_count
    return new, joined


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


FAILED_OUTCOMES = ("error", "not_a_feed")
METRICS_NOTE = (
    "Beam's per-step counters: rows as each step saw them, before de-duplication and commit "
    "(the lines above are what was committed)"
)


@dataclass(frozen=True)
class RunSummary:
    """What a committed run read and wrote: its manifest and its `feed_fetches` and `dead_letters` rows."""

    manifest: dict[str, Any]
    output: str
    fetches: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    pages: list[dict[str, Any]] = field(default_factory=list)  # `page_fetches` rows (full text)
    stories: tuple[int, int] = (0, 0)  # the run's new `stories` rows, and how many joined an earlier story

    @classmethod
    def of(cls, manifest: dict[str, Any], output: str) -> RunSummary:
        fetches = _rows(
            manifest,
            "feed_fetches",
            [*FETCH_COUNT_COLUMNS, "elapsed_ms", "error_type", "http_status", "attempts", "message"],
        )
        dead = _rows(manifest, "dead_letters", ["stage", "error_type"])
        pages = _rows(manifest, "page_fetches", ["outcome"])
        return cls(manifest, output, fetches, dead, pages, _story_counts(manifest))

    @property
    def inputs(self) -> int:
        return len(self.fetches)

    @property
    def failed_inputs(self) -> int:
        return sum(row["outcome"] in FAILED_OUTCOMES for row in self.fetches)

    def text(self, elapsed_seconds: float, metrics: dict[str, int] | None = None) -> str:
        """The report; `metrics` (Beam's counters, shown with -v) are listed apart, explained."""
        fetches, dead = self.fetches, self.dead
        counts = self.manifest.get("counts", {})
        articles = counts.get("articles", {})
        outcomes = Counter(row["outcome"] for row in fetches)
        by_outcome = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        cut = sum(r["entries_cut"] or 0 for r in fetches)
        where = self.output if "://" in self.output else os.path.abspath(self.output)
        lines = [
            f"newsbeam run {self.manifest['run_id']}: {self.manifest['status']} in {elapsed_seconds:.1f}s",
            f"  inputs read:       {len(fetches)} ({by_outcome})",
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
        lines += page_lines(self.pages, fetches)
        new_stories, joined = self.stories
        if new_stories:
            lines.append(
                f"  stories:           {new_stories} new articles: {joined} joined an earlier story, "
                f"{new_stories - joined} began one"
            )
        lines.append(f"  dead letters:      {len(dead)}")
        for (stage, error_type), n in Counter((d["stage"], d["error_type"]) for d in dead).most_common(10):
            lines.append(f"    {stage}/{error_type}: {n}")
        slowest = sorted(fetches, key=lambda r: -(r["elapsed_ms"] or 0))[:3]
        if slowest and len(fetches) > 1:
            lines.append(
                "  slowest inputs:    " + ", ".join(f"{r['source']} ({r['elapsed_ms']} ms)" for r in slowest)
            )
        lines += feed_health_lines(fetches)
        datasets = [f"{where}/{name}" for name in ("articles", "dead_letters", "feed_fetches")]
        # A dataset's folder appears with its first file (a clean run has no dead_letters/ yet).
        shown = [d if "://" in d or os.path.isdir(d) else f"{d} (none yet)" for d in datasets]
        lines.append(f"  output:            {', '.join(shown)}")
        lines.append(f"  manifest:          {where}/_runs/{self.manifest['run_id']}.json")
        if metrics:
            lines.append(f"  {METRICS_NOTE}:")
            lines += [f"    {name} = {value}" for name, value in sorted(metrics.items())]
        return "\n".join(lines)


PAGES_FETCHED = frozenset({"ok", "extract_rejected", "not_html"})
PAGES_REFUSED = frozenset({"robots_disallowed", "robots_unreachable", "crawl_delay_too_long"})


def page_lines(pages: list[dict[str, Any]], fetches: list[dict[str, Any]]) -> list[str]:
    """The full text's line: pages fetched, extracted, refused by robots.txt, failed, skipped as stored."""
    outcomes = Counter(row["outcome"] for row in pages)
    # Articles of http(s) feeds already stored unchanged: their pages are never fetched again.
    stored = sum(
        r["already_stored"] or 0 for r in fetches if str(r["source"]).startswith(("http://", "https://"))
    )
    if not pages and not stored:
        return []
    fetched = sum(n for outcome, n in outcomes.items() if outcome in PAGES_FETCHED)
    refused = sum(n for outcome, n in outcomes.items() if outcome in PAGES_REFUSED)
    failed = len(pages) - fetched - refused
    return [
        f"  article pages:     {fetched} fetched ({outcomes.get('ok', 0)} extracted), {refused} refused by "
        f"robots.txt, {failed} failed, {stored} skipped as already stored"
    ]


def render_report(
    manifest: dict[str, Any], output: str, elapsed_seconds: float, metrics: dict[str, int] | None = None
) -> str:
    return RunSummary.of(manifest, output).text(elapsed_seconds, metrics)


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
