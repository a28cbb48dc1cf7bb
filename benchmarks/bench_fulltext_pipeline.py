"""Full-text quality through the real pipeline: `newsbeam run` over a feed per trafilatura-eval page.

    python -m benchmarks.bench_fulltext_pipeline [--corpus ../shared/corpus] [--hosts 10] [--no-write]

Serves the 89 real article pages of `trafilatura-eval` (read in place, never copied) from local HTTP
servers on 127.0.0.1 ... 127.0.0.N, and beside them one RSS feed per page whose item's title and
description are the page's own `<title>` and `og:description` (never anything from the eval file).
Then runs the CLI, `python -m pipeline run` with the default `fulltext.mode`, over the 89 feed URLs,
reads the written articles back with DuckDB and scores each article's `text` against the page's
must-contain and must-not-contain snippets, side by side with trafilatura alone on the same bytes
(with its defaults, and with `include_comments=False`). Writes `benchmarks/FULLTEXT_PIPELINE.md`
(committed; do not edit by hand) with the summary and a per-page table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import duckdb
import trafilatura

from benchmarks.bench_extract import DEFAULT_CORPUS, EvalPage, Score, feed_fields, load_pages, score
from tests.feedserver import FeedServer, Reply

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "benchmarks" / "FULLTEXT_PIPELINE.md"
SETTINGS = ("trafilatura defaults", "include_comments=False", "newsbeam run")


def rss(title: str, summary: str, link: str, index: int) -> bytes:
    item = (
        f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<guid>eval-{index}</guid><description>{escape(summary)}</description></item>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>eval feed {index}</title><link>{escape(link)}</link>{item}</channel></rss>"
    ).encode()


def run_pipeline(feed_urls: list[str], work: Path) -> tuple[dict[str, dict[str, Any]], float, str]:
    """The CLI over the feeds: (articles by url, wall seconds, the run's report)."""
    config = work / "newsbeam.yaml"
    config.write_text("fetch:\n  allow_private_hosts: true\n", encoding="utf-8")  # the pages are on 127.0.0.x
    output = work / "out"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--config",
            str(config),
            "--output",
            str(output),
            "--input",
            *feed_urls,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"newsbeam run failed:\n{completed.stderr[-4000:]}")
    pattern = (output / "articles" / "**" / "*.parquet").as_posix()
    columns = ("url", "text", "text_source", "page_outcome")
    found = duckdb.execute(
        f"SELECT {', '.join(columns)} FROM read_parquet(?, union_by_name = true)", [pattern]
    ).fetchall()
    articles = {row[0]: dict(zip(columns, row, strict=True)) for row in found}
    return articles, elapsed, completed.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    pages = load_pages(args.corpus)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="newsbeam-eval-") as work:
        servers = [stack.enter_context(FeedServer(f"127.0.0.{h + 1}")) for h in range(args.hosts)]
        feeds = stack.enter_context(FeedServer(f"127.0.0.{args.hosts + 1}"))
        page_urls: dict[str, EvalPage] = {}
        feed_urls = []
        for index, page in enumerate(pages):
            url = servers[index % args.hosts].route(
                f"/article/{index}", Reply(200, page.body, {"Content-Type": "text/html"})
            )
            page_urls[url] = page
            title, summary = feed_fields(page.body)
            feed_urls.append(
                feeds.route(
                    f"/feed/{index}.xml",
                    Reply(200, rss(title, summary, url, index), {"Content-Type": "application/rss+xml"}),
                )
            )
        articles, elapsed, run_report = run_pipeline(feed_urls, Path(work))
        requests = sum(len(server.requests) for server in servers)
    rows = []
    totals = {name: Score() for name in SETTINGS}
    for url, page in page_urls.items():
        article = articles.get(url) or {"text": "", "text_source": "missing", "page_outcome": "missing"}
        texts = {
            SETTINGS[0]: trafilatura.extract(page.body, url=page.url) or "",
            SETTINGS[1]: trafilatura.extract(page.body, url=page.url, include_comments=False) or "",
            SETTINGS[2]: article["text"] or "",
        }
        scores = {name: score(text, page) for name, text in texts.items()}
        for name in SETTINGS:
            totals[name].add(scores[name])
        rows.append((page, article, scores))
    best = max(SETTINGS[:2], key=lambda name: totals[name].found_share)
    ahead = (totals[SETTINGS[2]].found_share - totals[best].found_share) * 100
    not_worse = (totals[SETTINGS[2]].avoided_share - totals[SETTINGS[1]].avoided_share) * 100
    sources: dict[str, int] = {}
    for _page, article, _scores in rows:
        key = f"{article['text_source']} ({article['page_outcome']})"
        sources[key] = sources.get(key, 0) + 1
    lines = [
        "# Full text through the pipeline: `newsbeam run` over a feed per trafilatura-eval page",
        "",
        "Written by `python -m benchmarks.bench_fulltext_pipeline` (do not edit by hand) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: trafilatura {trafilatura.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}.",
        "",
        f"The {len(pages)} pages of `../shared/corpus/trafilatura-eval`, served from {args.hosts} local "
        "hosts, "
        "each with an RSS feed of one item whose title and description are the page's own `<title>` and "
        "`og:description`; `newsbeam run` with the default `fulltext` settings over the feeds, its articles "
        "read back from Parquet with DuckDB. trafilatura alone runs on the same bytes. Cells: must-contain "
        "snippets found, must-not-contain snippets avoided.",
        "",
        "| setting | must-contain found | must-not-contain avoided |",
        "|---|---|---|",
        *(
            f"| {name} | {totals[name].found_share:.2%} ({totals[name].found}/{totals[name].must}) | "
            f"{totals[name].avoided_share:.2%} ({totals[name].avoided}/{totals[name].must_not}) |"
            for name in SETTINGS
        ),
        "",
        f"- must-contain: newsbeam {ahead:+.2f} points against the better trafilatura setting ({best}); "
        "goal at least +2",
        f"- must-not-contain: newsbeam {not_worse:+.2f} points against include_comments=False; goal no worse",
        f"- the run: {elapsed:.1f} s wall time for {len(feed_urls)} feeds and their pages, {requests} "
        "requests "
        "to the page hosts (robots.txt included)",
        "- articles' text sources: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())),
        f"- the run's report: `{run_report.splitlines()[0] if run_report else ''}`",
        "",
        "## Per page",
        "",
        "| page | lang | text_source (page outcome) | trafilatura defaults | include_comments=False "
        "| newsbeam run |",
        "|---|---|---|---|---|---|",
    ]
    for page, article, scores in rows:
        cells = " | ".join(
            f"{scores[name].found}/{scores[name].must} {scores[name].avoided}/{scores[name].must_not}"
            for name in SETTINGS
        )
        source = f"{article['text_source']} ({article['page_outcome']})"
        lines.append(f"| {page.file} | {page.language} | {source} | {cells} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        REPORT.write_text(text, encoding="utf-8")
        print(f"written: {REPORT}")


if __name__ == "__main__":
    main()
