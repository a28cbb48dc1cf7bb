"""ExtractFullText: the article's own page for entries whose feed gives only a teaser.

Input: article records as `ProcessArticles` hands them on after the known-revision check (the
normalized fields, `article_id`, `content_hash` and the `already_stored` mark). Output:
`FullText(articles, page_fetches, dead_letters)`: every article, none lost, each with its text's
provenance, and one `page_fetches` row per page request (or per page refused by robots.txt). A page
that fails is an outcome, not a dead letter: `dead_letters` stays empty, for the slot's shape.

Which pages: only entries of feeds fetched over http(s) (a run over feed files makes no request),
never an article the store already has unchanged (`already_stored`), and as `fulltext.mode` says: `off`,
`auto` (the feed's text is short or looks truncated, `teasers.needs_full_text`) or `always`, with a
per-feed override. A page linked by several articles of one run is fetched once (`PageCache`).

Where: pages are fetched inside this fused stage, by a pool of threads per worker, under the
per-host limits that hold across worker processes (`host_limits.py`). No shuffle: grouping by host
(as feeds are) would send every record, page text included, through a GroupByKey, which the
in-process runners hold in memory; here a page's bytes live only while its article is extracted,
and the text joins the record it belongs to in the same stage.

What changes on a record: `text` becomes the page's text only when the extraction is an upgrade
(`extract.py` verifies it against the feed's title and summary); the feed's teaser is kept as the
summary. The page fills what the feed lacks (publication and update times, authors, declared
language), each with its source (`page:jsonld`, `page:meta`, ...); `page_canonical_url` is stored,
ids stay as they are. `content_hash` and versions are the feed's (computed before this stage), so a
page whose ads change never makes a new version. A failed or refused page keeps the feed's text and
`text_source` says which (`feed_content`, `feed_summary`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.utils.windowed_value import WindowedValue

from transforms.credentials import redact_url
from transforms.extract import (
    EXTRACTOR,
    EXTRACTOR_VERSION,
    RULES_VERSION,
    PageExtraction,
    TextSource,
    extract_page,
)
from transforms.pages import PageFetch, PageFetcher, PageOutcome, PageSettings
from transforms.raw_entry import is_http_url
from transforms.schema import Record, SourceType
from transforms.teasers import needs_full_text

PAGE_FETCHES = "page_fetches"
DEAD_LETTERS = "dead_letters"


class FullTextMode(enum.StrEnum):
    OFF = "off"
    AUTO = "auto"  # fetch when the feed's text is short or looks truncated
    ALWAYS = "always"


class ArticleTextSource(enum.StrEnum):
    """Where an article's `text` came from: the `text_source` column."""

    PAGE = "page"  # the article's page, extracted and verified
    FEED_CONTENT = "feed_content"  # the entry's content (`content:encoded`, Atom `content`, ...)
    FEED_SUMMARY = "feed_summary"  # the entry's summary or description, the only text it had
    SEED_FILE = "seed_file"  # the body of a seed file
    NONE = "none"  # the entry has a title only


@dataclass(frozen=True)
class FullTextSettings:
    pages: PageSettings = field(default_factory=PageSettings)
    mode: FullTextMode = FullTextMode.AUTO
    min_words: int = 150  # `auto`: a feed text shorter than this is a teaser
    feed_modes: Mapping[str, FullTextMode] = field(default_factory=dict)  # by feed URL, as listed

    def mode_for(self, source: str) -> FullTextMode:
        return self.feed_modes.get(source, self.mode)


# --- pure record logic ---------------------------------------------------------------------------


def feed_text_source(article: Mapping[str, Any]) -> ArticleTextSource:
    """Where the text the feed gave came from (normalization puts a lone summary in `text` too)."""
    if article.get("source_type") == SourceType.SEED_FILE:
        return ArticleTextSource.SEED_FILE
    text = article.get("text")
    if not text:
        return ArticleTextSource.NONE
    return (
        ArticleTextSource.FEED_SUMMARY if text == article.get("summary") else ArticleTextSource.FEED_CONTENT
    )


def page_wanted(article: Mapping[str, Any], settings: FullTextSettings) -> str | None:
    """Why the article's page is to be fetched (`always`, `short`, `truncated`), or None."""
    source = str(article.get("source") or "")
    if (
        article.get("already_stored")
        or article.get("source_type") != SourceType.FEED
        or not is_http_url(source)
    ):
        return None
    if not is_http_url(article.get("url") or ""):
        return None
    mode = settings.mode_for(source)
    if mode is FullTextMode.OFF:
        return None
    if mode is FullTextMode.ALWAYS:
        return "always"
    return needs_full_text(article.get("text"), settings.min_words)


def without_page(article: Record) -> Record:
    """The article as the feed gave it, with the provenance columns of a page not fetched."""
    return {
        **article,
        "text_source": feed_text_source(article).value,
        "authors_source": "feed" if article.get("authors") else "none",
        "language_declared_source": "feed" if article.get("language_declared_raw") else "none",
        "page_url": None,
        "page_status": None,
        "page_fetched_at": None,
        "page_outcome": None,
        "page_canonical_url": None,
        "extractor": None,
        "extractor_version": None,
    }


def with_page(article: Record, page: PageFetch, extraction: PageExtraction | None) -> Record:
    """The article after its page: the page's text if it is an upgrade, what the page fills in, provenance."""
    record = without_page(article)
    record.update(
        page_url=page.final_url or page.url,
        page_status=page.http_status,
        page_fetched_at=page.fetched_at,
        page_outcome=page_outcome(page, extraction).value,
    )
    if extraction is None:
        return record
    metadata = extraction.metadata
    record["page_canonical_url"] = metadata.canonical_url
    if extraction.text is not None:
        if not record.get("summary") and record.get("text"):
            record["summary"] = record["text"]  # the feed's teaser stays, as the summary
        record["text"] = extraction.text
        record["text_source"] = ArticleTextSource.PAGE.value
        record["extractor"] = (
            "schema.org:articleBody" if extraction.text_source is TextSource.PAGE_JSONLD else EXTRACTOR
        )
        record["extractor_version"] = f"{EXTRACTOR_VERSION}+rules.{RULES_VERSION}"
    for kind in ("published", "updated"):
        page_time = getattr(metadata, f"{kind}_at")
        if record.get(f"{kind}_at") is None and page_time is not None:
            record[f"{kind}_at"] = page_time
            record[f"{kind}_offset_minutes"] = getattr(metadata, f"{kind}_offset_minutes")
            record[f"{kind}_at_source"] = getattr(metadata, f"{kind}_at_source")
    if not record.get("authors") and metadata.authors:
        record["authors"] = list(metadata.authors)
        record["authors_source"] = metadata.authors_source
    if not record.get("language_declared_raw") and metadata.declared_language:
        record["language_declared_raw"] = metadata.declared_language
        record["language_declared_source"] = metadata.declared_language_source
    return record


def page_outcome(page: PageFetch, extraction: PageExtraction | None) -> PageOutcome:
    if page.outcome is PageOutcome.OK and extraction is not None and extraction.text is None:
        return PageOutcome.NOT_HTML if extraction.rejection == "not_html" else PageOutcome.EXTRACT_REJECTED
    return page.outcome


def page_fetch_row(
    article: Mapping[str, Any], page: PageFetch, extraction: PageExtraction | None, wanted: str
) -> Record:
    """The `page_fetches` row of one page request (or refusal)."""
    return {
        "url": page.url,
        "final_url": page.final_url,
        "source": article.get("source"),
        "article_id": article.get("article_id"),
        "reason": wanted,
        "outcome": page_outcome(page, extraction).value,
        "rejection": extraction.rejection.value if extraction and extraction.rejection else None,
        "robots": page.robots.value if page.robots else None,
        "crawl_delay_seconds": page.crawl_delay_seconds,
        "http_status": page.http_status,
        "content_type": page.content_type,
        "media_type": page.media_type,
        "charset": extraction.charset if extraction else None,
        "charset_source": extraction.charset_source if extraction else None,
        "bytes": page.bytes,
        "page_words": extraction.page_words if extraction else None,
        "attempts": page.attempts,
        "elapsed_ms": page.elapsed_ms,
        "waited_ms": page.waited_ms,
        "error_type": page.error_type,
        "message": (extraction.reason if extraction and extraction.rejection else page.message),
        "fetched_at": page.fetched_at,
        "extractor_version": f"{EXTRACTOR_VERSION}+rules.{RULES_VERSION}" if extraction else None,
    }


def crashed(article: Record, error: Exception) -> tuple[Record, Record]:
    """A bug here stays this article's problem: the feed's text, and a row saying what happened."""
    message = redact_url(f"{type(error).__name__}: {error}")[:500]
    page = PageFetch(
        redact_url(article.get("url") or ""),
        PageOutcome.CRASH,
        datetime.now(UTC),
        error_type="page_crash",
        message=message,
    )
    return with_page(article, page, None), page_fetch_row(article, page, None, "crash")


# --- the Beam shell -------------------------------------------------------------------------------


class _ExtractFullTextFn(beam.DoFn):
    """Articles whose page is wanted go to a pool of threads; every article comes out, in its window.

    At most `2 x max_concurrent` articles wait in a worker at a time (process() blocks on the rest),
    so memory stays bounded whatever the bundle size.
    """

    def __init__(self, settings: FullTextSettings, work_dir: str, now: datetime | None) -> None:
        self._settings = settings
        self._work_dir = work_dir
        self._now = now
        self._counters = {
            name: Metrics.counter("fulltext", name)
            for name in (
                "pages_fetched",
                "pages_extracted",
                "pages_rejected",
                "robots_refused",
                "pages_failed",
                "pages_shared",
                "skipped_stored",
            )
        }

    def setup(self) -> None:
        self._fetcher = PageFetcher(self._settings.pages, self._work_dir)
        self._threads = max(self._settings.pages.fetch.max_concurrent, 1)
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="newsbeam-page")

    def teardown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._fetcher.close()

    def start_bundle(self) -> None:
        self._pending: list[tuple[Future[tuple[Record, Record | None]], WindowedValue]] = []

    _WINDOWED_VALUE = beam.DoFn.WindowedValueParam

    def process(self, article: Record, windowed: Any = _WINDOWED_VALUE) -> Iterator[Any]:
        wanted = page_wanted(article, self._settings)
        if wanted is None:
            if article.get("already_stored"):
                self._counters["skipped_stored"].inc()
            yield without_page(article)
            return
        self._pending.append((self._pool.submit(self._fetch_and_extract, article, wanted), windowed))
        yield from self._finished(block=len(self._pending) >= 2 * self._threads)

    def finish_bundle(self) -> Iterator[Any]:
        while self._pending:
            yield from self._finished(block=True)

    def _finished(self, *, block: bool) -> Iterator[Any]:
        if block:
            wait([future for future, _ in self._pending], return_when=FIRST_COMPLETED)
        still: list[tuple[Future[tuple[Record, Record | None]], WindowedValue]] = []
        for future, element in self._pending:
            if not future.done():
                still.append((future, element))
                continue
            record, row = future.result()  # _fetch_and_extract never raises
            self._count(record, row)  # here: Beam's metrics belong to the bundle's thread
            yield element.with_value(record)
            if row is not None:
                yield beam.pvalue.TaggedOutput(PAGE_FETCHES, element.with_value(row))
        self._pending = still

    def _fetch_and_extract(self, article: Record, wanted: str) -> tuple[Record, Record | None]:
        try:
            page = self._fetcher.fetch(article["url"])
            extraction = None
            if page.body is not None:
                extraction = extract_page(
                    page.body,
                    content_type=page.content_type,
                    page_url=page.final_url,
                    feed_title=article.get("title"),
                    feed_summary=article.get("summary"),
                    feed_text=article.get("text"),
                    now=self._now or datetime.now(UTC),
                )
            record = with_page(article, page, extraction)
            return record, None if page.shared else page_fetch_row(article, page, extraction, wanted)
        except Exception as error:  # a bug: the article is kept with the feed's text
            return crashed(article, error)

    def _count(self, record: Record, row: Record | None) -> None:
        if row is None:
            self._counters["pages_shared"].inc()
            return
        outcome = row["outcome"]
        if outcome in (PageOutcome.ROBOTS_DISALLOWED, PageOutcome.ROBOTS_UNREACHABLE):
            self._counters["robots_refused"].inc()
        elif outcome in _FETCHED:
            self._counters["pages_fetched"].inc()
            self._counters["pages_extracted" if outcome == PageOutcome.OK else "pages_rejected"].inc()
        else:
            self._counters["pages_failed"].inc()


_FETCHED = frozenset({PageOutcome.OK, PageOutcome.EXTRACT_REJECTED, PageOutcome.NOT_HTML})


class FullText(NamedTuple):
    articles: PCollection[Any]
    page_fetches: PCollection[Any]
    dead_letters: PCollection[Any]  # none: a page that fails keeps its article with the feed's text


class ExtractFullText(beam.PTransform[Any, Any]):
    """Articles -> FullText(articles, page_fetches, dead_letters).

    `work_dir` is the run's folder on this machine (host limits, robots.txt, fetched pages: see
    `pages.py`); `now` bounds plausible page dates (None: clock time).
    """

    def __init__(self, settings: FullTextSettings, work_dir: str, now: datetime | None = None) -> None:
        super().__init__()
        self._settings = settings
        self._work_dir = work_dir
        self._now = now

    def expand(self, articles: PCollection[Any]) -> FullText:
        results = articles | "FetchAndExtractPages" >> beam.ParDo(
            _ExtractFullTextFn(self._settings, self._work_dir, self._now)
        ).with_outputs(PAGE_FETCHES, DEAD_LETTERS, main="articles")
        return FullText(results.articles, results[PAGE_FETCHES], results[DEAD_LETTERS])
