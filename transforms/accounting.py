"""CountPerSource: complete each input's `feed_fetches` row with what became of its entries.

For every input: entries found = articles written + duplicates dropped + dead letters + already
stored (entries an earlier run stored in the same version) + entries cut (beyond the per-feed cap,
counted by the reader itself). The counts come from the written files, the duplicates, the
record-level dead letters of every stage and the already stored entries, summed per source.

The fetch rows are neither grouped with their counts nor flattened with other rows: on a local
runner, every grouping or Flatten of them is one more copy held in the launcher (about 600 bytes
an input, 46,000 inputs in the 1M benchmark run), and such copies made the launcher's peak. The
counts, a few integers per source, reach the rows as a side input. A source can have several rows
(one input listed twice, two inputs whose recorded URLs are the same once redacted): each row is
given a random key as it enters, the side input carries the smallest key of each source, and only
the row holding it gets the counts. So `CompleteRows` is one Map, fused with what writes the rows.
The rows come in parts (`ReadOutputs.fetches`), keyed in the stages that make them, so that no stage
between the read and `CompleteRows` handles them alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsDict, PCollection

from transforms.io.staging import StagedFile
from transforms.schema import Record

COUNT_FIELDS = ("articles_written", "duplicates", "dead_letters", "already_stored")
# Gathered with the counts (not columns of the rows): the smallest `ROW_KEY` of the source's fetch
# rows, which marks the one row that gets the counts.
FIRST_ROW_KEY = "first_row_key"
ROW_KEY = "_row_key"  # a random key each fetch row carries through CountPerSource, then dropped
_GATHERED_FIELDS = (*COUNT_FIELDS, FIRST_ROW_KEY)
_FIRST_ROW_KEY_AT = _GATHERED_FIELDS.index(FIRST_ROW_KEY)
_NO_ROW_KEY = (1 << 63) - 1  # above every key (62 bits); a 64-bit integer for every coder


def written_per_source(staged: StagedFile) -> Iterator[tuple[str, tuple[str, int]]]:
    for source, rows in staged.rows_per_source.items():
        yield source, ("articles_written", rows)


def with_counts(row: Record, counts: tuple[int, ...] | None) -> Record:
    """The fetch row, without its `ROW_KEY`, with `counts` (`_GATHERED_FIELDS` order) in its count
    columns; zeros for None."""
    completed = {field: value for field, value in row.items() if field != ROW_KEY}
    if counts is None:
        return completed | dict.fromkeys(COUNT_FIELDS, 0)
    return completed | dict(zip(COUNT_FIELDS, counts[: len(COUNT_FIELDS)], strict=True))


def with_row_key(row: Record) -> Record:
    """The fetch row with a random `ROW_KEY`: tells apart even two identical rows of one source."""
    return {**row, ROW_KEY: random.getrandbits(62)}


def row_key_of_source(row: Record) -> tuple[str, tuple[str, int]]:
    """(source, (FIRST_ROW_KEY, the row's key)): what the side input takes the smallest of."""
    return row["source"], (FIRST_ROW_KEY, row[ROW_KEY])


def complete_row(row: Record, counts: Mapping[str, tuple[int, ...]]) -> Record:
    """The fetch row with its source's counts if it holds the source's smallest key, else zeros
    (the counts of a source with several rows go to exactly one of them)."""
    source_counts = counts[row["source"]]
    return with_counts(row, source_counts if row[ROW_KEY] == source_counts[_FIRST_ROW_KEY_AT] else None)


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
# (source, the sums and the first row key in `_GATHERED_FIELDS` order): the side input's key is
# the text it is looked up by.
CountsOfSource = tuple[str, tuple[int, ...]]


class CountPerSource(beam.PTransform[Any, Any]):
    """(fetch rows, staged article files, duplicates, dead letters[, already stored]) -> fetch rows.

    The fetch rows are one collection or a tuple of parts (`ReadOutputs.fetches`); the result is one.
    """

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
        # Each part of the rows is keyed, and its keys counted, in the stage that makes it: a step on
        # a Flatten of the parts would be a stage of its own, and the local runner would send every
        # row to a worker and back for it (a transient at the end of the read).
        parts = tuple(fetches) if isinstance(fetches, (tuple, list)) else (fetches,)
        keyed_parts = [
            part | f"KeyFetchRows{index}" >> beam.Map(with_row_key) for index, part in enumerate(parts)
        ]
        first_rows = [
            keyed | f"RowKeysPerSource{index}" >> beam.Map(row_key_of_source).with_output_types(SourceCount)
            for index, keyed in enumerate(keyed_parts)
        ]
        counts = AsDict(
            (written, dropped, failed, *already, *first_rows)
            | "AllCounts" >> beam.Flatten()
            | "SumPerSourceAndField" >> beam.CombinePerKey(_SumFields()).with_output_types(CountsOfSource)
        )
        result: PCollection[Any] = (
            keyed_parts
            | "KeyedFetchRows" >> beam.Flatten()
            | "CompleteRows" >> beam.Map(complete_row, counts)
        )
        return result


class _SumFields(beam.CombineFn):
    """(field, amount) -> the amounts summed per field and the smallest `FIRST_ROW_KEY`, a tuple in
    `_GATHERED_FIELDS` order (a few integers per source: what every worker holds of the side input)."""

    def __init__(self) -> None:
        beam.CombineFn.__init__(self)  # by name: see `poll_cycles.SumCounts`

    def create_accumulator(self) -> list[int]:
        accumulator = [0] * len(_GATHERED_FIELDS)
        accumulator[_FIRST_ROW_KEY_AT] = _NO_ROW_KEY
        return accumulator

    def add_input(self, accumulator: list[int], element: tuple[str, int]) -> list[int]:
        field, amount = element
        if field == FIRST_ROW_KEY:
            accumulator[_FIRST_ROW_KEY_AT] = min(accumulator[_FIRST_ROW_KEY_AT], amount)
        else:
            accumulator[_FIELD_INDEX[field]] += amount
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[int]]) -> list[int]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for index, amount in enumerate(accumulator):
                if index == _FIRST_ROW_KEY_AT:
                    merged[index] = min(merged[index], amount)
                else:
                    merged[index] += amount
        return merged

    def extract_output(self, accumulator: list[int]) -> tuple[int, ...]:
        return tuple(accumulator)


_FIELD_INDEX = {field: index for index, field in enumerate(_GATHERED_FIELDS)}
