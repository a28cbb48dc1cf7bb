"""A run's books must balance before anything is published: entries lost in the pipeline fail the run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from transforms.accounting import CountUnaccounted, unaccounted_entries
from transforms.io.commit import CommitRun
from transforms.io.staging import WritePartitionedParquet
from transforms.schema import FEED_FETCH_SCHEMA


def test_unaccounted_entries_is_what_the_counts_do_not_explain() -> None:
    row = {"entries": 10, "articles_written": 6, "duplicates": 2, "dead_letters": 1, "already_stored": 0}
    assert unaccounted_entries(row) == 1
    assert unaccounted_entries({**row, "already_stored": 1}) == 0
    assert unaccounted_entries({"entries": None, "articles_written": None}) == 0


def _commit(output: Path, fetch_rows: list[dict[str, object]]) -> None:
    started = datetime(2026, 11, 29, tzinfo=UTC)
    rows = [{**r, "ingest_date": "2026-11-29", "run_id": "r1"} for r in fetch_rows]
    with Pipeline(runner=FnApiRunner()) as p:
        fetches = p | beam.Create(rows)
        staged = fetches | WritePartitionedParquet(
            str(output), "feed_fetches", FEED_FETCH_SCHEMA, ("ingest_date",), "r1"
        )
        _ = staged.files | CommitRun(
            str(output), "r1", started, ["x"], unaccounted=fetches | CountUnaccounted()
        )


def test_a_run_whose_books_balance_commits(tmp_path: Path) -> None:
    _commit(tmp_path, [{"source": "a", "entries": 3, "articles_written": 2, "duplicates": 1}])
    published = list((tmp_path / "feed_fetches").rglob("*.parquet"))
    assert len(published) == 1
    assert not (tmp_path / "_staging").exists()


def test_a_run_that_lost_entries_publishes_nothing(tmp_path: Path) -> None:
    lost = [
        {"source": "a", "entries": 3, "articles_written": 3},
        {"source": "b", "entries": 5, "articles_written": 2, "dead_letters": 1},
    ]
    with pytest.raises(Exception, match="2 entries are neither written"):
        _commit(tmp_path, lost)
    assert not (tmp_path / "feed_fetches").exists()
    assert list(tmp_path.glob("_runs/*.json")) == []
