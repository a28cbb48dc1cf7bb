"""CountPerSource: complete each input's `feed_fetches` row with what became of its entries.

For every input: entries found = articles written + duplicates dropped + dead letters + already
stored (entries an earlier run stored in the same version) + entries cut (beyond the per-feed cap,
counted by the reader itself). The counts come from the written files, the duplicates, the
record-level dead letters of every stage and the already stored entries, keyed by source and
joined with the fetch rows.

What waits in that join is compact: a local runner's launcher holds a grouping's values decoded
(Beam's `GroupingBuffer`), and a fetch row as a dict took 3.2 KB there (about 150 MB at the 46,000
inputs of the 1M benchmark run), as its pickled bytes 650; each input's counts wait as one tuple.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import PCollection

from transforms.io.staging import StagedFile
from transforms.schema import Record

COUNT_FIELDS = ("articles_written", "duplicates", "dead_letters", "already_stored")


def written_per_source(staged: StagedFile) -> Iterator[tuple[str, tuple[str, int]]]:
    for source, rows in staged.rows_per_source.items():
        yield source, ("articles_written", rows)


def packed_row(row: Record) -> tuple[str, bytes]:
    """(source, the fetch row pickled): how a fetch row waits for its counts (see the docstring)."""
    return row["source"], pickle.dumps(row, pickle.HIGHEST_PROTOCOL)


def complete_rows(source: str, grouped: dict[str, Iterable[Any]]) -> Iterator[Record]:
    """The fetch rows of `source` (`packed_row`s) with its counts (tuples in `COUNT_FIELDS` order)."""
    totals = dict.fromkeys(COUNT_FIELDS, 0)
    for counts in grouped["counts"]:
        for field, amount in zip(COUNT_FIELDS, counts, strict=True):
            totals[field] += amount
    rows = [pickle.loads(packed) for packed in grouped["fetches"]]
    for index, row in enumerate(rows):
        # The same input listed twice is read once; its counts belong to the first row.
        yield {**row, **(totals if index == 0 else dict.fromkeys(COUNT_FIELDS, 0))}


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
# The type of both inputs of the `JoinCounts` grouping, for the same reason: its Flatten's inputs
# (packed fetch rows, count tuples) must share one coder.
JoinInput = tuple[str, Any]


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
        counts = (
            (written, dropped, failed, *already)
            | "AllCounts" >> beam.Flatten()
            | "SumPerSourceAndField" >> beam.CombinePerKey(_SumFields()).with_output_types(JoinInput)
        )
        keyed_fetches = fetches | "KeyBySource" >> beam.Map(packed_row).with_output_types(JoinInput)
        result: PCollection[Any] = (
            {"fetches": keyed_fetches, "counts": counts}
            | "JoinCounts" >> beam.CoGroupByKey()
            | "CompleteRows" >> beam.FlatMapTuple(complete_rows)
        )
        return result


class _SumFields(beam.CombineFn):
    """(field, amount) -> the amounts summed per field, a list in `COUNT_FIELDS` order (compact while
    it waits in a grouping: see the module docstring)."""

    def __init__(self) -> None:
        beam.CombineFn.__init__(self)  # by name: see `poll_cycles.SumCounts`

    def create_accumulator(self) -> list[int]:
        return [0] * len(COUNT_FIELDS)

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


_FIELD_INDEX = {field: index for index, field in enumerate(COUNT_FIELDS)}
