"""EnrichArticles: ids, counts, hashes and run metadata for each article.

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
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.schema import SCHEMA_VERSION, SOURCE_KEY, Record, RunInfo, Stage, failed_article

DEAD_LETTERS = "dead_letters"
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


def enrich_article(article: Record, run: RunInfo) -> Record:
    title, text = article.get("title") or "", article.get("text") or ""
    hashed = content_hash(title, text)
    article_id, id_source = make_article_id(
        article.get("canonical_url"),
        article.get(SOURCE_KEY) or article["source"],
        article.get("entry_id"),
        hashed,
    )
    words = count_words(title) + count_words(text)
    article.update(
        article_id=article_id,
        article_id_source=id_source,
        source_domain=source_domain(article.get("url"), article["source"]),
        word_count=words,
        char_count=len(title) + len(text),
        reading_time_seconds=math.ceil(words * 60 / WORDS_PER_MINUTE),
        content_hash=hashed,
        ingested_at=run.started_at,
        ingest_date=run.ingest_date,
        run_id=run.run_id,
        pipeline_version=run.pipeline_version,
        schema_version=SCHEMA_VERSION,
    )
    return article


class _EnrichFn(beam.DoFn):
    def __init__(self, run: RunInfo) -> None:
        self._run = run
        self._failed = Metrics.counter("enrich", "dead_letters")

    def process(self, article: Record) -> Iterator[Any]:
        try:
            yield enrich_article(article, self._run)
        except Exception as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, failed_article(Stage.ENRICH, error, article))


class EnrichArticles(beam.PTransform):
    """Articles -> (articles with ids, counts and run columns, dead letters)."""

    def __init__(self, run: RunInfo) -> None:
        super().__init__()
        self._run = run

    def expand(self, articles: PCollection) -> tuple[PCollection, PCollection]:
        results = articles | "Enrich" >> beam.ParDo(_EnrichFn(self._run)).with_outputs(
            DEAD_LETTERS, main="articles"
        )
        return results.articles, results[DEAD_LETTERS]
