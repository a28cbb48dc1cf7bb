"""CountPerSource: complete each input's `feed_fetches` row with what became of its entries.

For every input: entries found = articles written + duplicates dropped + dead letters + already
stored (entries an earlier run stored in the same version) + entries cut (beyond the per-feed cap,
counted by the reader itself). The counts come from the written files, the duplicates, the
record-level dead letters of every stage and the already stored entries, summed per source.

The fetch rows are not grouped with their counts: a local runner's launcher holds a grouping's
values decoded (Beam's `GroupingBuffer`) and then encodes the whole grouped output at once, which
was the launcher's peak at the end of the read stage (about 3 KB an input, 46,000 inputs in the 1M
benchmark run). The counts, a few integers per source, reach the rows as a side input instead; only
the rows of a source that has several (one input listed twice, two inputs whose recorded URLs are
the same once redacted) are grouped, so that the counts go to exactly one of them.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsDict, PCollection, TaggedOutput

from transforms.io.staging import StagedFile
from transforms.schema import Record

COUNT_FIELDS = ("articles_written", "duplicates", "dead_letters", "already_stored")
# Summed with the counts: how many fetch rows a source has (not a column of the rows).
FETCH_ROWS = "fetch_rows"
_SUMMED_FIELDS = (*COUNT_FIELDS, FETCH_ROWS)
_FETCH_ROWS_AT = _SUMMED_FIELDS.index(FETCH_ROWS)
_SHARED = "shared_source"


def written_per_source(staged: StagedFile) -> Iterator[tuple[str, tuple[str, int]]]:
    for source, rows in staged.rows_per_source.items():
        yield source, ("articles_written", rows)


def with_counts(row: Record, counts: tuple[int, ...] | None) -> Record:
    """The fetch row with `counts` (`_SUMMED_FIELDS` order) in its count columns; zeros for None."""
    if counts is None:
        return {**row, **dict.fromkeys(COUNT_FIELDS, 0)}
    return {**row, **dict(zip(COUNT_FIELDS, counts[: len(COUNT_FIELDS)], strict=True))}


def complete_row(row: Record, counts: Mapping[str, tuple[int, ...]]) -> Iterator[Any]:
    """The fetch row with its source's counts, or, when its source has several rows, the row keyed
    by source and pickled (compact in a grouping) for `complete_shared_rows`."""
    source_counts = counts[row["source"]]
    if source_counts[_FETCH_ROWS_AT] == 1:
        yield with_counts(row, source_counts)
    else:
        yield TaggedOutput(_SHARED, (row["source"], pickle.dumps(row, pickle.HIGHEST_PROTOCOL)))


def complete_shared_rows(
    group: tuple[str, Iterable[bytes]], counts: Mapping[str, tuple[int, ...]]
) -> Iterator[Record]:
    """The fetch rows of one source that has several: its counts go to the first, zeros to the rest."""
    source, packed_rows = group
    for index, packed in enumerate(packed_rows):
        yield with_counts(pickle.loads(packed), counts[source] if index == 0 else None)


def unaccounted_entries(row: Record) -> int:
    """Entries of one input that are neither written, duplicates, dead letters, already stored nor cut."""
    explained = sum(int(row.get(field) or 0) for field in (*COUNT_FIELDS, "entries_cut"))
    return int(row.get("entries") or 0) - explained


class CountUnaccounted(beam.PTransform[Any, Any]):
    """Completed fetch rows -> one element: the entries of the run that the counts do not explain.

    `CommitRun` takes it as a side input and refuses to publish a run whose books do not balance, so
    that an entry lost anywhere (a stage, the runner) fails the run loudly instead of vanishing.
    """

    def expand(self, fetch_rows: PCollection[Any]) -> PCollection[Any]:
        result: PCollection[Any] = (
            fetch_rows
            | "UnaccountedPerInput" >> beam.Map(unaccounted_entries)
            | "UnaccountedInRun" >> beam.CombineGlobally(sum)
        )
        return result


# (source, (field, amount)): the type of every input of the `AllCounts` Flatten. Inputs of a Flatten
# must share its output's coder: Prism rewrites an input's coder to the output's by coder id, which
# corrupts every collection sharing the generic pickled coder (an untyped `FlatMap`'s) and fails the
# run. A text key is also the deterministic key coder the grouping needs, so nothing is rewritten.
SourceCount = tuple[str, tuple[str, int]]
# (source, the sums in `_SUMMED_FIELDS` order): the side input's key is the text it is looked up by.
CountsOfSource = tuple[str, tuple[int, ...]]


class CountPerSource(beam.PTransform[Any, Any]):
    """(fetch rows, staged article files, duplicates, dead letters[, already stored]) -> fetch rows."""

    def expand(self, inputs: tuple[PCollection[Any], ...]) -> PCollection[Any]:
        fetches, staged_articles, duplicates, dead_letters, *stored = inputs
        # One declared type for every input of the Flatten: see `SourceCount`.
        written = staged_articles | "WrittenPerSource" >> beam.FlatMap(written_per_source).with_output_types(
            SourceCount
        )
        dropped = duplicates | "DuplicatesPerSource" >> beam.Map(
            lambda d: (d["source"], ("duplicates", 1))
        ).with_output_types(SourceCount)
        failed = (
            dead_letters
            | "EntryDeadLetters" >> beam.Filter(lambda d: d.get("entry_ref") is not None)
            | "DeadLettersPerSource"
            >> beam.Map(lambda d: (d["source"], ("dead_letters", 1))).with_output_types(SourceCount)
        )
        already = (
            [
                stored[0]
                | "AlreadyStoredPerSource"
                >> beam.Map(lambda d: (d["source"], ("already_stored", 1))).with_output_types(SourceCount)
            ]
            if stored
            else []
        )
        counted = fetches | "FetchRowsPerSource" >> beam.Map(
            lambda r: (r["source"], (FETCH_ROWS, 1))
        ).with_output_types(SourceCount)
        counts = AsDict(
            (written, dropped, failed, *already, counted)
            | "AllCounts" >> beam.Flatten()
            | "SumPerSourceAndField" >> beam.CombinePerKey(_SumFields()).with_output_types(CountsOfSource)
        )
        completed = fetches | "CompleteRows" >> beam.FlatMap(complete_row, counts).with_outputs(
            _SHARED, main="rows"
        )
        shared = (
            completed[_SHARED]
            | "GroupSharedSources" >> beam.GroupByKey()
            | "CompleteSharedRows" >> beam.FlatMap(complete_shared_rows, counts)
        )
        result: PCollection[Any] = (completed.rows, shared) | "AllFetchRows" >> beam.Flatten()
        return result


class _SumFields(beam.CombineFn):
    """(field, amount) -> the amounts summed per field, a tuple in `_SUMMED_FIELDS` order (a few
    integers per source: what every worker holds of the side input)."""

    def __init__(self) -> None:
        beam.CombineFn.__init__(self)  # by name: see `poll_cycles.SumCounts`

    def create_accumulator(self) -> list[int]:
        return [0] * len(_SUMMED_FIELDS)

    def add_input(self, accumulator: list[int], element: tuple[str, int]) -> list[int]:
        field, amount = element
        accumulator[_FIELD_INDEX[field]] += amount
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[int]]) -> list[int]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for index, amount in enumerate(accumulator):
                merged[index] += amount
        return merged

    def extract_output(self, accumulator: list[int]) -> tuple[int, ...]:
        return tuple(accumulator)


_FIELD_INDEX = {field: index for index, field in enumerate(_SUMMED_FIELDS)}
