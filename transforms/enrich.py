"""IdentifyArticles and EnrichArticles: ids and content hashes, then counts and run metadata.

Two steps because the id and the hash are needed early: `ProcessArticles` identifies each article
right after normalizing it, so that the known-revision check and the full-text stage know which
revision it is before anything costly runs; the counts come last, from the text as it ends up.
The content hash is always of the feed's own fields (title and text as normalized), so a page
fetched later never changes a revision's identity.

`article_id` is stable across runs and machines: the hash of the canonical URL when the article
has an absolute http(s) link; else of the source and the entry's own id; else of the content.
A relative link never makes an id (it would collide across feeds). The source in an id is its
`source_key`: for a file the resolved path, so that a file typed as `feeds/a.xml`, `./feeds/a.xml`,
its absolute path or through a symlink gives the same ids (`source` keeps the path as typed).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.outputs import ArticleOutputs, apply_with_dead_letters
from transforms.schema import (
    DEAD_LETTERS,
    SCHEMA_VERSION,
    SOURCE_KEY,
    Article,
    DetectedArticle,
    IdentifiedArticle,
    NormalizedArticle,
    Record,
    RunInfo,
    Stage,
    failed_article,
)

WORDS_PER_MINUTE = 230

# Scripts written without spaces between words: each character counts as a word.
_UNSPACED = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"
)
_WORD = re.compile(rf"[{_UNSPACED}]|[^\W_{_UNSPACED}]+(?:['’-][^\W_{_UNSPACED}]+)*")


def sha256_hex(*parts: str | None) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update((part or "").encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def content_hash(title: str | None, text: str | None) -> str:
    return sha256_hex(title, text)


def make_article_id(
    canonical: str | None, source: str, entry_id: str | None, hashed_content: str
) -> tuple[str, str]:
    """(article_id, what it was made from). 32 hex characters (128 bits of sha256)."""
    if canonical:
        return sha256_hex("url", canonical)[:32], "url"
    if entry_id:
        return sha256_hex("entry", source, entry_id)[:32], "entry_id"
    return sha256_hex("content", hashed_content)[:32], "content"


def source_domain(url: str | None, source: str) -> str | None:
    """The host of the article (else of the source when it is a URL), lower-case, without `www.`."""
    for candidate in (url, source):
        if candidate and urlsplit(candidate).scheme in ("http", "https"):
            host = (urlsplit(candidate).hostname or "").lower().rstrip(".")
            if host:
                return host[4:] if host.startswith("www.") else host
    return None


def word_tokens(text: str) -> list[str]:
    """The words of a text as `count_words` counts them (one per character where scripts use no spaces)."""
    return _WORD.findall(text)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def identify_article(article: NormalizedArticle) -> IdentifiedArticle:
    """A new record: the article with its `article_id` (and what it was made from) and `content_hash`."""
    hashed = content_hash(article.get("title"), article.get("text"))
    article_id, id_source = make_article_id(
        article.get("canonical_url"),
        article.get(SOURCE_KEY) or article["source"],
        article.get("entry_id"),
        hashed,
    )
    return {**article, "article_id": article_id, "article_id_source": id_source, "content_hash": hashed}


def enrich_article(article: DetectedArticle, run: RunInfo) -> Article:
    """A new record: the article with its domain, counts and the run's columns."""
    title, text = article.get("title") or "", article.get("text") or ""
    words = count_words(title) + count_words(text)
    return {
        **article,
        "source_domain": source_domain(article.get("url"), article["source"]),
        "word_count": words,
        "char_count": len(title) + len(text),
        "reading_time_seconds": math.ceil(words * 60 / WORDS_PER_MINUTE),
        "ingested_at": run.started_at,
        "ingest_date": run.ingest_date,
        "run_id": run.run_id,
        "pipeline_version": run.pipeline_version,
        "schema_version": SCHEMA_VERSION,
    }


class _IdentifyFn(beam.DoFn):
    def __init__(self) -> None:
        self._failed = Metrics.counter("enrich", "dead_letters")

    def process(self, article: Record) -> Iterator[Any]:
        try:
            yield identify_article(cast(NormalizedArticle, article))
        except Exception as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, failed_article(Stage.ENRICH, error, article))


class _EnrichFn(beam.DoFn):
    def __init__(self, run: RunInfo) -> None:
        self._run = run
        self._failed = Metrics.counter("enrich", "dead_letters")

    def process(self, article: Record) -> Iterator[Any]:
        try:
            yield enrich_article(cast(DetectedArticle, article), self._run)
        except Exception as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, failed_article(Stage.ENRICH, error, article))


class IdentifyArticles(beam.PTransform[Any, Any]):
    """Normalized articles -> (articles with `article_id` and `content_hash`, dead letters)."""

    def expand(self, articles: PCollection[Any]) -> ArticleOutputs:
        return apply_with_dead_letters(articles, "Identify", _IdentifyFn())


class EnrichArticles(beam.PTransform[Any, Any]):
    """Articles -> (articles with domain, counts and run columns, dead letters)."""

    def __init__(self, run: RunInfo) -> None:
        super().__init__()
        self._run = run

    def expand(self, articles: PCollection[Any]) -> ArticleOutputs:
        return apply_with_dead_letters(articles, "Enrich", _EnrichFn(self._run))
