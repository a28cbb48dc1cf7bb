"""ProcessArticles: the one composite the batch and the streaming pipeline share, raw entries to articles.

    entries ─► NormalizeArticles     html→text, NFC, canonical URL, UTC times with provenance
            ─► IdentifyArticles      article_id and content_hash, from the feed's own fields
            ─► known-revision check  batch: mark `already_stored`; streaming: drop what is committed
            ─► full text (a slot)    a PTransform given by the caller; nothing when absent
            ─► DetectLanguage        seeded langdetect, the declared language as a prior
            ─► EnrichArticles        source_domain, counts, run columns

The pipelines differ only in what they ask of it: batch passes its run's start as `now` (which
bounds plausible dates) and has the store marked, streaming normalizes against the clock and has
what is committed dropped (transforms/known_revisions.py). Every step is a DoFn of its own stage
module; here they are only wired, and the dead letters of all of them come out as one collection.

The full-text slot takes the checked articles (`CheckedArticle`: ids, hash, link, feed, title,
summary, text and the `already_stored` mark) and returns `ArticleOutputs` (articles, dead letters).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import PCollection

from transforms.enrich import EnrichArticles, IdentifyArticles
from transforms.known_revisions import DeduplicateStream, KnownRevisions, MarkStoredRevisions
from transforms.language import DetectLanguage, LanguageSettings
from transforms.normalize import NormalizeArticles
from transforms.schema import RunInfo


class ProcessedArticles(NamedTuple):
    articles: PCollection[Any]  # whole `Article` records, ready to write
    dead_letters: PCollection[Any]  # of every step of ProcessArticles
    duplicates: PCollection[Any]  # {source, article_id} dropped as committed (streaming; empty in batch)
    page_fetches: PCollection[Any] | None  # one row per article page requested (None without full text)


class ProcessArticles(beam.PTransform[Any, Any]):
    """Raw entries -> `ProcessedArticles`.

    `output` is the dataset whose committed version index the known-revision check reads (None:
    nothing is known); `streaming` drops known revisions instead of marking them; `full_text` is the
    full-text stage (None: none).
    """

    def __init__(
        self,
        run: RunInfo,
        language: LanguageSettings,
        *,
        output: str | None,
        streaming: bool = False,
        full_text: beam.PTransform[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        self._run = run
        self._language = language
        self._output = output
        self._streaming = streaming
        self._full_text = full_text

    def expand(self, entries: PCollection[Any]) -> ProcessedArticles:
        # A streaming job runs for days: "now" is the clock at each entry, not the job's start.
        now: datetime | None = None if self._streaming else self._run.started_at
        normalized = entries | "NormalizeArticles" >> NormalizeArticles(now)
        identified = normalized.articles | "IdentifyArticles" >> IdentifyArticles()
        checked: KnownRevisions = (
            identified.articles | "DeduplicateStream" >> DeduplicateStream(self._output)
            if self._streaming
            else identified.articles | "MarkStoredRevisions" >> MarkStoredRevisions(self._output)
        )
        failures = [normalized.dead_letters, identified.dead_letters]
        articles = checked.articles
        page_fetches = None
        if self._full_text is not None:
            extracted = articles | "ExtractFullText" >> self._full_text
            articles = extracted.articles
            # ExtractFullText's `FullText` has them; a slot giving (articles, dead_letters) has none.
            page_fetches = getattr(extracted, "page_fetches", None)
            failures.append(extracted.dead_letters)
        detected = articles | "DetectLanguage" >> DetectLanguage(self._language)
        enriched = detected.articles | "EnrichArticles" >> EnrichArticles(self._run)
        failures += [detected.dead_letters, enriched.dead_letters]
        return ProcessedArticles(
            articles=enriched.articles,
            dead_letters=tuple(failures) | "AllDeadLetters" >> beam.Flatten(),
            duplicates=checked.duplicates,
            page_fetches=page_fetches,
        )
