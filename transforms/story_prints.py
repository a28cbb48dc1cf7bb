"""FingerprintStories: every article that may be stored gets its near-duplicate fingerprint (`story_print`).

One composite for batch and streaming, placed after ProcessArticles, where the language and the final
text (the page's when it was fetched) are known. It adds the key `story_print` (about 0.8 KB: the
MinHash signatures of transforms/stories.py as bytes) to each article the store does not already hold;
the article's columns are unchanged. The story itself is decided at the commit, under the commit lock,
against the committed index (transforms/io/story_index.py): the runner never decides stories.

Batch stages the prints like the other staged datasets (`StagePrints`: Parquet files in the run's
staging, one small `StagedFile` per file crosses to the commit, never the prints); the streaming
sink reads them from the pane's records, which it holds anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.io.parquet import ParquetSettings
from transforms.io.staging import WritePartitionedParquet
from transforms.io.story_index import PRINT_SCHEMA, STAGED_PRINTS, StorySettings, print_row, story_print
from transforms.schema import STORY_PRINT, Record


class _FingerprintFn(beam.DoFn):
    def __init__(self) -> None:
        self._printed = Metrics.counter("stories", "fingerprinted")
        self._skipped = Metrics.counter("stories", "already_stored_not_fingerprinted")

    def process(self, article: Record) -> Iterator[Record]:
        if article.get("already_stored"):  # its story is in the index: the commit will not store it
            self._skipped.inc()
            yield article
            return
        self._printed.inc()
        yield {**article, STORY_PRINT: story_print(article)}


class FingerprintStories(beam.PTransform[Any, Any]):
    """Articles -> the same articles, each not already stored with its `story_print`."""

    def __init__(self, settings: StorySettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, articles: PCollection[Any]) -> PCollection[Any]:
        result: PCollection[Any] = articles | "Fingerprint" >> beam.ParDo(_FingerprintFn())
        return result


class StagePrints(beam.PTransform[Any, Any]):
    """Fingerprinted articles -> their prints staged as Parquet in the run's staging (`StagedFile`s).

    Fused with the writer of the articles: the records never cross a shuffle here, only the names of
    the files. The commit reads them and removes them with the staging; they are never published.
    """

    def __init__(self, output: str, run_id: str, settings: ParquetSettings | None = None) -> None:
        super().__init__()
        self._write = WritePartitionedParquet(output, STAGED_PRINTS, PRINT_SCHEMA, (), run_id, settings)

    def expand(self, articles: PCollection[Any]) -> PCollection[Any]:
        rows = (
            articles
            | "WithPrint" >> beam.Filter(lambda article: STORY_PRINT in article)
            | "PrintRow" >> beam.Map(print_row)
        )
        result: PCollection[Any] = (rows | "StagePrintFiles" >> self._write).files
        return result
