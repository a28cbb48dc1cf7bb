"""DeduplicateArticles: one article per `article_id` within a run.

When several entries share an id (the same link in two feeds, or twice in one feed), the most
recently updated one wins, then the most complete; the order is total, so exactly one wins.

Only compact keys go through the shuffle: (article_id, rank) pairs are combined to find the ids
that occur more than once and their winning rank; that small map is a side input to a filter over
the articles. Whole records never pass through a GroupByKey, which the in-process runner would
hold in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.schema import Record

DUPLICATES = "duplicates"

Rank = tuple[float, int, str, str, int]


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("-inf")


def rank(article: Record) -> Rank:
    """Higher is better: newest update, then most complete, then a stable tie-break."""
    freshest = max(_epoch(article.get("updated_at")), _epoch(article.get("published_at")))
    completeness = (
        len(article.get("text") or "")
        + len(article.get("summary") or "")
        + 20 * len(article.get("authors") or [])
        + 5 * len(article.get("tags") or [])
        + (50 if article.get("published_at") else 0)
    )
    return (
        freshest,
        completeness,
        article.get("content_hash") or "",
        article["source"],
        article.get("ordinal", 0),
    )


class BestRankAndCount(beam.CombineFn):
    """(best rank, occurrences) of one article id."""

    def create_accumulator(self) -> tuple[Rank | None, int]:
        return None, 0

    def add_input(self, accumulator: tuple[Rank | None, int], element: Rank) -> tuple[Rank | None, int]:
        best, count = accumulator
        return (element if best is None or element > best else best), count + 1

    def merge_accumulators(self, accumulators: Iterable[tuple[Rank | None, int]]) -> tuple[Rank | None, int]:
        best: Rank | None = None
        total = 0
        for candidate, count in accumulators:
            total += count
            if candidate is not None and (best is None or candidate > best):
                best = candidate
        return best, total

    def extract_output(self, accumulator: tuple[Rank | None, int]) -> tuple[Rank | None, int]:
        return accumulator


class _KeepWinnerFn(beam.DoFn):
    def __init__(self) -> None:
        self._duplicates = Metrics.counter("dedupe", "duplicates")

    def process(self, article: Record, contested: dict[str, Rank]) -> Iterator[Any]:
        winner = contested.get(article["article_id"])
        if winner is None or tuple(winner) == rank(article):
            yield article
            return
        self._duplicates.inc()
        yield beam.pvalue.TaggedOutput(
            DUPLICATES, {"source": article["source"], "article_id": article["article_id"]}
        )


class DeduplicateArticles(beam.PTransform):
    """Articles -> (one article per id, duplicates dropped as {source, article_id})."""

    def expand(self, articles: PCollection) -> tuple[PCollection, PCollection]:
        contested = (
            articles
            | "RankById" >> beam.Map(lambda a: (a["article_id"], rank(a)))
            | "BestRankPerId" >> beam.CombinePerKey(BestRankAndCount())
            | "OnlyRepeatedIds" >> beam.Filter(lambda kv: kv[1][1] > 1)
            | "WinningRank" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
        )
        results = articles | "KeepWinners" >> beam.ParDo(
            _KeepWinnerFn(), contested=beam.pvalue.AsDict(contested)
        ).with_outputs(DUPLICATES, main="articles")
        return results.articles, results[DUPLICATES]
