"""`newsbeam report OUTPUT`: one self-contained HTML page about the datasets, built with DuckDB.

    newsbeam report output                      # writes output/report.html
    newsbeam report output --html /srv/www/news.html --alerts   # exit 6 when a feed needs attention

The page shows the articles per language and per day, the distribution of their text lengths,
the health of every feed over the runs (failing and stale feeds first, see pipeline/health.py),
the dead letters by reason and the latest runs with their outcome. Every number is a DuckDB query
over the committed files (pipeline/datasets.py); nothing comes from logs or Beam's counters.

The page needs no network to be viewed: the charts are Vega-Lite specifications (built with
altair) rendered to inline SVG by vl-convert, offline, and the styles are inline; no script, no
CDN, no remote font. Tables carry the numbers, the charts show their shape.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import altair as alt
import vl_convert

from pipeline.datasets import Store
from pipeline.health import ATTENTION, StaleRule, feed_health, latest_runs
from pipeline.story_figures import largest_stories, story_totals

CHART_WIDTH = 640
GRID_FEEDS = 40  # feeds in the outcome grid (the table lists them all)
STATUS_COLORS = {"failing": "#c0392b", "stale": "#d68910", "ok": "#1e8449"}
OUTCOME_COLORS = {
    "ok": "#1e8449",
    "ok_with_warnings": "#7dcea0",
    "not_modified": "#a9cce3",
    "empty": "#d5dbdb",
    "skipped": "#aeb6bf",
    "not_a_feed": "#e59866",
    "error": "#c0392b",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1c2833;
       padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
.meta { color: #566573; margin-top: 0; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #d5d8dc; border-radius: 6px; padding: .6rem 1rem; min-width: 8rem; }
.card b { display: block; font-size: 1.5rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid #e5e8e8; padding: .25rem .6rem; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.n, td.t { white-space: nowrap; }
.status { font-weight: 600; border-radius: 4px; padding: 0 .4rem; color: white; }
.failing { background: #c0392b; } .stale { background: #d68910; } .ok { background: #1e8449; }
.source { color: #566573; font-size: .8rem; word-break: break-all; }
figure { margin: .6rem 0; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _n(value: Any) -> str:
    return f"{int(value or 0):,}"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _days(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# vl-convert measures text with this font to lay the chart out; a browser that draws the labels in
# a wider one would cut them at the edges. Debian's Chromium has it; elsewhere the padding helps.
CHART_FONT = "DejaVu Sans"


def svg(chart: alt.TopLevelMixin) -> str:
    """The chart as inline SVG, rendered offline (vl-convert embeds the Vega runtime)."""
    spec = chart.to_dict()
    spec.setdefault("config", {})["font"] = CHART_FONT
    spec["padding"] = 12
    return str(vl_convert.vegalite_to_svg(spec))


def table(
    headers: list[str],
    rows: list[list[str]],
    table_id: str,
    numeric: set[int] | None = None,
    times: set[int] | None = None,
) -> str:
    """A table whose `numeric` columns align right and whose `times` columns never wrap."""
    numeric, times = numeric or set(), times or set()

    def cell(i: int, content: str) -> str:
        kind = "n" if i in numeric else "t" if i in times else ""
        return f'<td class="{kind}">{content}</td>' if kind else f"<td>{content}</td>"

    head = "".join(
        f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(headers)
    )
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- the sections ----------------------------------------------------------------------------------


def articles_section(store: Store) -> str:
    per_language = store.rows(
        "SELECT coalesce(language, 'und') AS language, count(*) AS articles FROM latest_articles "
        "GROUP BY 1 ORDER BY articles DESC, language"
    )
    per_day = store.rows(
        "SELECT strftime(coalesce(published_at, ingested_at), '%Y-%m-%d') AS day, "
        "coalesce(language, 'und') AS language, count(*) AS articles FROM latest_articles "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    totals: dict[str, int] = {}
    for row in per_day:
        totals[row["day"]] = totals.get(row["day"], 0) + row["articles"]
    parts = ["<h2>Articles</h2>"]
    if not per_language:
        return parts[0] + "<p>No articles committed yet.</p>"
    parts.append(
        table(
            ["language", "articles"],
            [[_e(r["language"]), _n(r["articles"])] for r in per_language],
            "articles-per-language",
            {1},
        )
    )
    chart = (
        alt.Chart(alt.Data(values=per_day), title="Articles per day of publication (UTC)")
        .mark_bar()
        .encode(
            x=alt.X("day:T", timeUnit="utcyearmonthdate", title="day"),
            y=alt.Y("articles:Q", title="articles"),
            color=alt.Color("language:N", title="language"),
            tooltip=["day:N", "language:N", "articles:Q"],
        )
        .properties(width=CHART_WIDTH, height=180)
    )
    parts.append(f"<figure>{svg(chart)}</figure>")
    parts.append(
        "<details><summary>Articles per day (table)</summary>"
        + table(
            ["day", "articles"],
            [[_e(day), _n(n)] for day, n in sorted(totals.items(), reverse=True)],
            "articles-per-day",
            {1},
        )
        + "</details>"
    )
    return "".join(parts)


def stories_section(store: Store) -> str:
    """Stories against articles, and the largest stories (first article's title, outlets, size)."""
    totals = story_totals(store)
    parts = ["<h2>Stories</h2>"]
    if not totals["articles"]:
        return parts[0] + "<p>No stories assigned yet (stories are assigned at each commit).</p>"
    parts.append(
        f'<p id="stories-summary">{_n(totals["articles"])} articles in {_n(totals["stories"])} stories: '
        f"{_n(totals['shared'])} stories told by two or more articles, which {_n(totals['joined'])} "
        "articles joined as near duplicates of an earlier one.</p>"
    )
    largest = largest_stories(store, 10)
    if largest:
        parts.append(
            table(
                ["story (first article)", "articles", "outlets", "domains", "first published"],
                [
                    [
                        _e(row["title"] or row["story_id"]),
                        _n(row["articles"]),
                        _n(row["outlets"]),
                        _e(row["domains"]),
                        _e(_when(row["first_published"])),
                    ]
                    for row in largest
                ],
                "largest-stories",
                {1, 2},
                {4},
            )
        )
    return "".join(parts)


def length_section(store: Store) -> str:
    (stats,) = store.rows(
        "SELECT count(word_count) AS n, median(word_count) AS median, quantile_cont(word_count, 0.9) AS p90, "
        "max(word_count) AS longest FROM latest_articles"
    )
    if not stats["n"]:
        return ""
    width = max(1, _nice_bin(int(stats["longest"] or 0)))
    bins = store.rows(
        "SELECT (word_count // $width) * $width AS words, count(*) AS articles FROM latest_articles "
        "WHERE word_count IS NOT NULL GROUP BY 1 ORDER BY 1",
        {"width": width},
    )
    chart = (
        alt.Chart(alt.Data(values=bins), title=f"Text length (words, bins of {width})")
        .mark_bar()
        .encode(
            x=alt.X("words:Q", bin=alt.Bin(binned=True, step=width), title="words in title and text"),
            x2=alt.X2("end:Q"),
            y=alt.Y("articles:Q", title="articles"),
        )
        .transform_calculate(end=f"datum.words + {width}")
        .properties(width=CHART_WIDTH, height=160)
    )
    summary = (
        f'<p id="text-length">Median <b>{stats["median"]:.0f}</b> words, 90th percentile '
        f"<b>{stats['p90']:.0f}</b>, longest <b>{_n(stats['longest'])}</b> ({_n(stats['n'])} articles).</p>"
    )
    return f"<h2>Text length</h2>{summary}<figure>{svg(chart)}</figure>"


def _nice_bin(longest: int, bins: int = 20) -> int:
    raw = max(1, longest // bins)
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if step >= raw:
            return step
    return raw


def health_section(store: Store, health: list[dict[str, Any]], rule: StaleRule, runs: int) -> str:
    parts = [
        "<h2>Feed health</h2>",
        f'<p class="meta">Failing: the latest fetch failed. Stale: no new entry for more than '
        f"{rule.factor:g} x the feed's median gap between entries over the last "
        f"{rule.window_seconds / 86400:g} days, as of its last successful read.</p>",
    ]
    if not health:
        return "".join(parts) + "<p>No feeds fetched yet.</p>"
    rows = []
    for row in health:
        name = _e(row["title"] or row["source"])
        rows.append(
            [
                f'<span class="status {row["status"]}">{row["status"]}</span>',
                f'{name}<div class="source">{_e(row["source"])}</div>' if row["title"] else name,
                _e(row["last_outcome"]),
                _n(row["failing_for"]),
                _e(_when(row["last_entry"])),
                _e(_days(row["silent_seconds"])),
                _e(_days(row["median_gap_seconds"])),
                _e(row["reason"]),
            ]
        )
    parts.append(
        table(
            [
                "status",
                "feed",
                "last outcome",
                "failing for",
                "last entry",
                "silent for",
                "median gap",
                "why",
            ],
            rows,
            "feed-health",
            {3},
            {4, 5, 6},
        )
    )
    shown = health[:GRID_FEEDS]  # the worst first: failing, then stale
    grid = store.rows(
        "WITH run_starts AS (SELECT run_id, min(started_at) AS run_start FROM feed_fetches GROUP BY run_id "
        "ORDER BY run_start DESC LIMIT $runs) "
        "SELECT f.source, f.run_id AS run, any_value(s.run_start) AS run_start, "
        "arg_max(f.outcome, f.started_at) AS outcome FROM feed_fetches f JOIN run_starts s USING (run_id) "
        "WHERE f.source_type = 'feed' AND list_contains($sources, f.source) GROUP BY 1, 2",
        {"runs": runs, "sources": [row["source"] for row in shown]},
    )
    if grid:
        outcomes = sorted({r["outcome"] for r in grid})
        run_order = [r for _, r in sorted({(g["run_start"], g["run"]) for g in grid})]
        titles = Counter(row["title"] for row in shown)
        # A feed's title names its row, unless two feeds share it (or it has none): then its URL.
        names = {
            r["source"]: r["title"] if r["title"] and titles[r["title"]] == 1 else r["source"] for r in shown
        }
        values = [
            {"feed": names.get(g["source"], g["source"]), "run": g["run"], "outcome": g["outcome"]}
            for g in grid
        ]
        order = [names[row["source"]] for row in shown]
        chart = (
            alt.Chart(
                alt.Data(values=values),
                title=alt.Title(
                    f"Outcome of each fetch, last {runs} runs (oldest left)"
                    + (f", the first {GRID_FEEDS} feeds above" if len(health) > GRID_FEEDS else ""),
                    anchor="start",
                ),
            )
            .mark_rect(stroke="white")
            .encode(
                x=alt.X("run:O", sort=run_order, title="run", axis=alt.Axis(labelAngle=-30, labelLimit=200)),
                y=alt.Y("feed:N", sort=order, title=None, axis=alt.Axis(labelLimit=280)),
                color=alt.Color(
                    "outcome:N",
                    scale=alt.Scale(
                        domain=outcomes, range=[OUTCOME_COLORS.get(o, "#7f8c8d") for o in outcomes]
                    ),
                ),
            )
            .properties(width=max(160, min(CHART_WIDTH, 48 * len(run_order))), height=22 * len(order))
        )
        parts.append(f"<figure>{svg(chart)}</figure>")
    return "".join(parts)


def dead_letter_section(store: Store) -> str:
    reasons = store.rows(
        "SELECT stage, error_type, count(*) AS dead_letters, count(DISTINCT source) AS sources, "
        "max(failed_at) AS latest FROM dead_letters GROUP BY 1, 2 "
        "ORDER BY dead_letters DESC, stage, error_type"
    )
    if not reasons:
        return "<h2>Dead letters</h2><p>No dead letters.</p>"
    rows = [
        [_e(r["stage"]), _e(r["error_type"]), _n(r["dead_letters"]), _n(r["sources"]), _e(_when(r["latest"]))]
        for r in reasons
    ]
    chart = (
        alt.Chart(alt.Data(values=[{**r, "reason": f"{r['stage']}/{r['error_type']}"} for r in reasons]))
        .mark_bar(color="#884ea0")
        .encode(x=alt.X("dead_letters:Q", title="dead letters"), y=alt.Y("reason:N", sort="-x", title=None))
        .properties(width=CHART_WIDTH // 2, height=22 * len(reasons))
    )
    return (
        "<h2>Dead letters by reason</h2>"
        + table(["stage", "reason", "dead letters", "sources", "latest"], rows, "dead-letters", {2, 3}, {4})
        + f"<figure>{svg(chart)}</figure>"
    )


def runs_section(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "<h2>Latest runs</h2><p>No runs committed yet.</p>"
    rows = []
    for run in runs:
        took = ""
        if run["ended_at"] and run["started_at"]:
            took = f"{(run['ended_at'] - run['started_at']).total_seconds():.0f} s"
        rows.append(
            [
                _e(run["run_id"]),
                _e(run["kind"]),
                _e(_when(run["started_at"])),
                _e(took),
                _n(run["inputs"]),
                _n(run["failed_inputs"]),
                "" if run["articles"] is None else _n(run["articles"]),
                "" if run["dead_letters"] is None else _n(run["dead_letters"]),
                _e(run["outcome"]),
            ]
        )
    headers = ["run", "kind", "started", "took", "inputs", "failed", "articles", "dead letters", "outcome"]
    return "<h2>Latest runs</h2>" + table(headers, rows, "latest-runs", {4, 5, 6, 7}, {2, 3})


def render(
    store: Store,
    rule: StaleRule,
    runs: int = 10,
    health: list[dict[str, Any]] | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The whole page, as one string of HTML (`health`: `feed_health(store, rule)`, when known)."""
    generated_at = generated_at or datetime.now(UTC)
    health = feed_health(store, rule) if health is None else health
    latest = latest_runs(store, runs)
    (totals,) = store.rows(
        "SELECT (SELECT count(*) FROM latest_articles) AS articles, "
        "(SELECT count(*) FROM dead_letters) AS dead_letters"
    )
    attention = {status: sum(row["status"] == status for row in health) for status in ATTENTION}
    cards = [
        ("articles", _n(totals["articles"])),
        ("feeds", _n(len(health))),
        ("failing feeds", _n(attention["failing"])),
        ("stale feeds", _n(attention["stale"])),
        ("dead letters", _n(totals["dead_letters"])),
        ("last run", _e(latest[0]["outcome"]) if latest else "none"),
    ]
    card_html = "".join(
        f'<div class="card" id="card-{label.replace(" ", "-")}"><b>{value}</b>{label}</div>'
        for label, value in cards
    )
    body = "".join(
        [
            "<h1>newsbeam report</h1>",
            f'<p class="meta">{_e(store.output)} · committed data as of {_e(_when(generated_at))}</p>',
            f'<div class="cards">{card_html}</div>',
            health_section(store, health, rule, runs),
            articles_section(store),
            stories_section(store),
            length_section(store),
            dead_letter_section(store),
            runs_section(latest),
        ]
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>newsbeam report: {_e(store.output)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
