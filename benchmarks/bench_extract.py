"""Full-text extraction, quality and speed: trafilatura alone against newsbeam's `extract_page`.

    python -m benchmarks.bench_extract [--corpus ../shared/corpus] [--repeat 3] [--no-write]

Reads the 89 real article pages of `trafilatura-eval` in the corpus (12 languages; each with
snippets its main text must contain and boilerplate it must not: `evaldata_subset.json`) in place,
never copied. For each page the feed's title and summary are what a feed would carry: the page's
own `<title>` and `og:description` (never anything from the eval file). Side by side:

- trafilatura 2.3.1 with its defaults, and with `include_comments=False`;
- newsbeam: `transforms.extract.extract_page` with the feed's title and summary; when it judges the
  page no upgrade, the article keeps the feed's summary, and that is the text scored;
- newsbeam with the 3-gram rule alone (`trust_page_description=False`), to show what it costs.

Every text is scored the same way: NFC, no-break spaces as spaces, runs of white space as one, then
a substring test per snippet. Speed is CPU time (process time) per page after a warm-up pass, for
newsbeam's whole `extract_page` against trafilatura alone (`include_comments=False`, the setting
newsbeam uses) on the same bytes: rounds over all pages, alternating which runs first.

Prints a per-page table and the summary, writes `benchmarks/EXTRACT.md` (committed) and
`benchmarks/results/extract.json` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trafilatura

from transforms.extract import EXTRACTOR_VERSION, PageExtraction, extract_page
from transforms.normalize import html_to_text, one_line
from transforms.page_html import decode_html, parse_html
from transforms.page_metadata import meta_tags
from transforms.page_text import DEFAULT_SETTINGS, ExtractSettings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = Path(os.environ.get("NEWSBEAM_CORPUS", REPO.parent / "shared" / "corpus"))
REPORT = REPO / "benchmarks" / "EXTRACT.md"
RESULTS = REPO / "benchmarks" / "results" / "extract.json"
STRICT = ExtractSettings(trust_page_description=False)
FAST = ExtractSettings(trafilatura_fast=True)
SETTINGS = (
    "trafilatura defaults",
    "trafilatura include_comments=False",
    "newsbeam",
    "newsbeam strict",
    "trafilatura include_comments=False fast=True",
    "newsbeam fast",
)


@dataclass(frozen=True)
class EvalPage:
    file: str
    url: str | None  # None for the eval's "hard::" entries, which have no URL
    language: str
    body: bytes
    must: tuple[str, ...]
    must_not: tuple[str, ...]


@dataclass
class Score:
    found: int = 0
    must: int = 0
    avoided: int = 0
    must_not: int = 0

    def add(self, other: Score) -> None:
        self.found += other.found
        self.must += other.must
        self.avoided += other.avoided
        self.must_not += other.must_not

    @property
    def found_share(self) -> float:
        return self.found / self.must if self.must else 1.0

    @property
    def avoided_share(self) -> float:
        return self.avoided / self.must_not if self.must_not else 1.0


@dataclass
class PageRow:
    page: EvalPage
    scores: dict[str, Score] = field(default_factory=dict)
    outcome: str = ""


def load_pages(corpus: Path) -> list[EvalPage]:
    folder = corpus / "trafilatura-eval"
    expected = json.loads((folder / "evaldata_subset.json").read_text(encoding="utf-8"))
    languages = {
        page["file"]: page["language"]
        for page in json.loads((folder / "pages_index.json").read_text(encoding="utf-8"))
    }
    return [
        EvalPage(
            file=item["file"],
            url=url if url.startswith(("http://", "https://")) else None,
            language=languages.get(item["file"], "?"),
            body=(folder / "html" / item["file"]).read_bytes(),
            must=tuple(item.get("with") or ()),
            must_not=tuple(item.get("without") or ()),
        )
        for url, item in expected.items()
    ]


def feed_fields(body: bytes) -> tuple[str, str]:
    """(title, summary) a feed would give for the page: its `<title>` and `og:description`, as plain text."""
    tree = parse_html(decode_html(body, "text/html").html)
    if tree is None:
        return "", ""
    title = one_line(" ".join(tree.xpath("//title//text()")))
    return title, html_to_text(meta_tags(tree).get("og:description") or "")


def comparable(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text.replace("\u00a0", " "))).strip()


def score(text: str, page: EvalPage) -> Score:
    seen = comparable(text)
    return Score(
        found=sum(comparable(s) in seen for s in page.must),
        must=len(page.must),
        avoided=sum(comparable(s) not in seen for s in page.must_not),
        must_not=len(page.must_not),
    )


def newsbeam(
    page: EvalPage,
    now: datetime,
    settings: ExtractSettings = DEFAULT_SETTINGS,
    fields: tuple[str, str] | None = None,
) -> PageExtraction:
    """newsbeam's extraction of `page`, the feed's title and summary taken from the page (or `fields`)."""
    title, summary = fields or feed_fields(page.body)
    return extract_page(
        page.body,
        content_type="text/html",
        page_url=page.url,
        feed_title=title,
        feed_summary=summary,
        now=now,
        settings=settings,
    )


def stored_text(result: PageExtraction, summary: str) -> str:
    """What newsbeam would store: the page's text, or the feed's summary when the page is no upgrade."""
    return result.text if result.text is not None else summary


def outcome(result: PageExtraction) -> str:
    if result.rejection:
        return f"feed ({result.rejection.value})"
    lead = "+lead" if result.lead_added else ""
    return f"{result.text_source.value}{lead}"


def measure_quality(pages: Sequence[EvalPage], now: datetime) -> list[PageRow]:
    rows = []
    for page in pages:
        row = PageRow(page)
        summary = feed_fields(page.body)[1]
        texts = {
            SETTINGS[0]: trafilatura.extract(page.body, url=page.url) or "",
            SETTINGS[1]: trafilatura.extract(page.body, url=page.url, include_comments=False) or "",
        }
        result = newsbeam(page, now)
        texts[SETTINGS[2]] = stored_text(result, summary)
        texts[SETTINGS[3]] = stored_text(newsbeam(page, now, STRICT), summary)
        texts[SETTINGS[4]] = (
            trafilatura.extract(page.body, url=page.url, include_comments=False, fast=True) or ""
        )
        texts[SETTINGS[5]] = stored_text(newsbeam(page, now, FAST), summary)
        row.scores = {name: score(text, page) for name, text in texts.items()}
        row.outcome = outcome(result)
        rows.append(row)
    return rows


def measure_speed(pages: Sequence[EvalPage], now: datetime, repeat: int) -> dict[str, float]:
    """CPU ms per page, trafilatura alone and newsbeam's whole extraction on the same bytes.

    Each takes its turn over all the pages, `repeat` rounds, alternating which goes first; the figure
    is the median round (other jobs on a shared machine only ever add time), with the fastest and
    slowest rounds beside it. A round over all the pages includes what a worker pays in steady state,
    freeing the trees too.
    """
    inputs = [(page, *feed_fields(page.body)) for page in pages]

    def alone() -> None:
        for page, _title, _summary in inputs:
            trafilatura.extract(page.body, url=page.url, include_comments=False)

    def alone_fast() -> None:
        for page, _title, _summary in inputs:
            trafilatura.extract(page.body, url=page.url, include_comments=False, fast=True)

    def ours(settings: ExtractSettings = DEFAULT_SETTINGS) -> None:
        for page, title, summary in inputs:  # the feed's fields are read outside the timed loop
            newsbeam(page, now, settings, (title, summary))

    runs: dict[str, Callable[[], None]] = {
        "trafilatura": alone,
        "newsbeam": ours,
        "trafilatura fast": alone_fast,
        "newsbeam fast": lambda: ours(FAST),
    }
    for run in runs.values():  # warm-up: lazy tables (justext's stop lists), caches
        run()
    rounds: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(repeat):
        for name in list(runs) if round_number % 2 == 0 else list(reversed(runs)):
            started = time.process_time()
            runs[name]()
            rounds[name].append((time.process_time() - started) / len(inputs) * 1000)
    result = {name: statistics.median(values) for name, values in rounds.items()}
    result |= {f"{name} fastest": min(values) for name, values in rounds.items()}
    result |= {f"{name} slowest": max(values) for name, values in rounds.items()}
    return result


def totals(rows: Sequence[PageRow]) -> dict[str, Score]:
    summed = {name: Score() for name in SETTINGS}
    for row in rows:
        for name in SETTINGS:
            summed[name].add(row.scores[name])
    return summed


def _cell(value: Score) -> str:
    return f"{value.found}/{value.must} {value.avoided}/{value.must_not}"


def page_table(rows: Sequence[PageRow]) -> list[str]:
    lines = [
        "| page | lang | newsbeam's text | trafilatura defaults | include_comments=False | newsbeam |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = " | ".join(_cell(row.scores[name]) for name in SETTINGS[:3])
        lines.append(f"| {row.page.file} | {row.page.language} | {row.outcome} | {cells} |")
    return lines


def summary_lines(rows: Sequence[PageRow], speed: dict[str, float]) -> list[str]:
    summed = totals(rows)
    best_trafilatura = max(SETTINGS[:2], key=lambda name: summed[name].found_share)
    lines = [
        "| setting | must-contain found | must-not-contain avoided |",
        "|---|---|---|",
    ]
    for name in SETTINGS:
        value = summed[name]
        lines.append(
            f"| {name} | {value.found_share:.2%} ({value.found}/{value.must}) "
            f"| {value.avoided_share:.2%} ({value.avoided}/{value.must_not}) |"
        )
    ahead = (summed["newsbeam"].found_share - summed[best_trafilatura].found_share) * 100
    not_worse = (summed["newsbeam"].avoided_share - summed[SETTINGS[1]].avoided_share) * 100
    overhead = speed["newsbeam"] / speed["trafilatura"] - 1
    lines += [
        "",
        f"- must-contain: newsbeam {ahead:+.2f} points against the better trafilatura setting "
        f"({best_trafilatura}); goal at least +2",
        f"- must-not-contain: newsbeam {not_worse:+.2f} points against trafilatura with "
        "include_comments=False; goal no worse",
        f"- CPU per page: trafilatura alone {speed['trafilatura']:.1f} ms, newsbeam's whole extraction "
        f"{speed['newsbeam']:.1f} ms: overhead {overhead:+.1%} (goal under 15%); median of the rounds "
        f"(rounds ranged {speed['trafilatura fastest']:.1f}-{speed['trafilatura slowest']:.1f} ms and "
        f"{speed['newsbeam fastest']:.1f}-{speed['newsbeam slowest']:.1f} ms)",
        f"- with trafilatura's fast mode (`trafilatura_fast=True`): trafilatura alone "
        f"{speed['trafilatura fast']:.1f} ms, newsbeam {speed['newsbeam fast']:.1f} ms "
        f"({speed['newsbeam fast'] / speed['trafilatura fast'] - 1:+.1%}; "
        f"{speed['newsbeam fast'] / speed['trafilatura'] - 1:+.1%} against trafilatura alone, default mode)",
    ]
    sources: dict[str, int] = {}
    for row in rows:
        sources[row.outcome] = sources.get(row.outcome, 0) + 1
    lines.append("- newsbeam's texts: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())))
    return lines


def language_lines(rows: Sequence[PageRow]) -> list[str]:
    lines = ["| lang | pages | include_comments=False | newsbeam |", "|---|---|---|---|"]
    for language in sorted({row.page.language for row in rows}):
        of_language = [row for row in rows if row.page.language == language]
        summed = totals(of_language)
        cells = f"{_cell(summed[SETTINGS[1]])} | {_cell(summed['newsbeam'])}"
        lines.append(f"| {language} | {len(of_language)} | {cells} |")
    return lines


def report(rows: Sequence[PageRow], speed: dict[str, float], repeat: int) -> str:
    load = os.getloadavg()
    return "\n".join(
        [
            "# Full-text extraction: trafilatura alone and newsbeam",
            "",
            "Written by `python -m benchmarks.bench_extract` (do not edit by hand) on "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: trafilatura {EXTRACTOR_VERSION}, Python "
            f"{platform.python_version()}, {os.cpu_count()} cores, load average {load[0]:.1f}. "
            f"CPU times: {repeat} rounds over all pages each, alternating, after a warm-up round.",
            "",
            "The 89 pages of `../shared/corpus/trafilatura-eval` (read in place); each page's feed title "
            "and summary are its own `<title>` and `og:description`. Cells are must-contain snippets found "
            "and must-not-contain snippets avoided. newsbeam's text is the page's when it is an upgrade, "
            "else the feed's summary (`feed (reason)`); `+lead` marks a lead paragraph put back in front of "
            "the text. `newsbeam strict` keeps the 3-gram rule alone (no `page_description` verification).",
            "",
            "## Summary",
            "",
            *summary_lines(rows, speed),
            "",
            "## Per language",
            "",
            *language_lines(rows),
            "",
            "## Per page",
            "",
            *page_table(rows),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds over all pages")
    parser.add_argument("--no-write", action="store_true", help="print only; leave EXTRACT.md as it is")
    args = parser.parse_args(argv)
    pages = load_pages(args.corpus)
    now = datetime.now(UTC)
    rows = measure_quality(pages, now)
    speed = measure_speed(pages, now, args.repeat)
    text = report(rows, speed, args.repeat)
    print(text)
    if not args.no_write:
        REPORT.write_text(text, encoding="utf-8")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {
            "speed_ms_per_page": speed,
            "totals": {name: vars(value) for name, value in totals(rows).items()},
            "pages": [
                {"file": row.page.file, "outcome": row.outcome}
                | {name: vars(value) for name, value in row.scores.items()}
                for row in rows
            ],
        }
        RESULTS.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"\nwritten: {REPORT.relative_to(REPO)}, {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
