"""The known-revision check: what the store already holds, known before the costly stages run.

Part of `ProcessArticles`, right after each article's id and content hash are known (from the
feed's own fields) and before full text, detect and enrich:

- batch, `MarkStoredRevisions`: marks each article whose (article_id, content_hash) the committed
  version index holds (`already_stored`), so that a later stage never fetches a stored revision's
  page. A mark, not a drop: the sink (`DeduplicateArticles` and `CommitRun`) still decides, and the
  books balance as they did before.
- streaming, `DeduplicateStream`: drops what is committed (below).

Both read the worker's one cache of the committed index (transforms/io/committed.py); a batch worker
reads it once, when its DoFn is set up, and holds a few hundred bytes per stored article id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection

from transforms.io.committed import (
    REFRESH_SECONDS,
    decide_revisions,
    report_records_committed,
    shared_versions,
)
from transforms.schema import Record

DUPLICATES = "duplicates"


class KnownRevisions(NamedTuple):
    articles: PCollection[Any]  # every article (batch, marked) or those not committed yet (streaming)
    duplicates: PCollection[Any]  # {source, article_id} of each article dropped (streaming only)


class _MarkStoredFn(beam.DoFn):
    """Batch: marks `already_stored` from the worker's cache of the committed version index, read once."""

    def __init__(self, output: str | None) -> None:
        self._output = output
        self._marked = Metrics.counter("dedupe", "marked_already_stored")

    def setup(self) -> None:
        self._committed = shared_versions(self._output) if self._output else None
        if self._committed is not None:
            self._committed.refresh()

    def process(self, article: Record) -> Iterator[Record]:
        stored = False
        if self._committed is not None:
            known = self._committed.known(article["article_id"])
            stored = known is not None and article["content_hash"] in known.hashes
        if stored:
            self._marked.inc()
        yield {**article, "already_stored": stored}


class _CheckRevisions(beam.PTransform[Any, Any]):
    """Identified articles -> `KnownRevisions`, by one DoFn that reads `output`'s committed index."""

    label_of_check = ""

    def __init__(self, output: str | None) -> None:
        super().__init__()
        self._output = output

    def check(self) -> beam.DoFn:
        raise NotImplementedError

    def expand(self, articles: PCollection[Any]) -> KnownRevisions:
        results = articles | self.label_of_check >> beam.ParDo(self.check()).with_outputs(
            DUPLICATES, main="articles"
        )
        return KnownRevisions(results.articles, results[DUPLICATES])


class MarkStoredRevisions(_CheckRevisions):
    """Identified articles -> `KnownRevisions`: all of them, each marked `already_stored` or not.

    A mark, not a drop: the batch sink (`DeduplicateArticles`, `CommitRun`) still decides and counts
    what is stored. `output` is the dataset whose committed version index is read (None: nothing is).
    """

    label_of_check = "MarkStored"

    def check(self) -> beam.DoFn:
        return _MarkStoredFn(self._output)


# --- streaming: across polls and restarts ---------------------------------------------------------
#
# The streaming job sees the same entries on every poll of a feed. `DeduplicateStream` drops an
# entry only when its revision (article id and content hash) is committed: it asks the worker's
# cache of the committed version index, refreshed at most every `REFRESH_SECONDS`, and keeps no
# runner state of its own. So an entry that the runner lost on its way to the sink (a split
# bundle, a crash, a stop) is not marked seen: the next poll offers it again.
# Revisions not yet committed pass, also when seen before; the window writer's commit decides
# them under the commit lock (a revision in flight twice is stored once), and gives the versions.
# The cache starts from the store's index, so a restarted job drops at once what is stored.


class _KeepUncommittedFn(beam.DoFn):
    def __init__(self, output: str | None) -> None:
        self._output = output
        self._new = Metrics.counter("dedupe", "stream_new")
        self._versions = Metrics.counter("dedupe", "stream_new_versions")
        self._duplicates = Metrics.counter("dedupe", "stream_duplicates")

    def setup(self) -> None:
        self._committed = shared_versions(self._output) if self._output else None

    def process(self, article: Record, fetched_at: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
        if self._committed is None:
            self._new.inc()
            yield {**article, "already_stored": False, "version": 1}
            return
        self._committed.refresh(max_age=REFRESH_SECONDS)
        kept, _dropped = decide_revisions([article], self._committed)
        if not kept:
            # The next poll need not even normalize it. Its poll is named by the fetch time, which
            # is the element's timestamp (the record gets it as `ingested_at` only when written).
            fetched = datetime.fromtimestamp(float(fetched_at), UTC)
            report_records_committed([{**article, "ingested_at": fetched}])
            self._duplicates.inc()
            yield beam.pvalue.TaggedOutput(
                DUPLICATES, {"source": article["source"], "article_id": article["article_id"]}
            )
            return
        (self._versions if kept[0]["version"] > 1 else self._new).inc()
        yield {**kept[0], "already_stored": False}  # its version is provisional: its pane's commit decides


class DeduplicateStream(_CheckRevisions):
    """Identified articles, timestamped with their fetch -> `KnownRevisions`: those not committed yet
    (each with a provisional `version`) and the duplicates dropped, as {source, article_id}.

    `output` is the dataset whose committed version index decides (None: nothing is dropped).
    """

    label_of_check = "KeepUncommitted"

    def check(self) -> beam.DoFn:
        return _KeepUncommittedFn(self._output)
