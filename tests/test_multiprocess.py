"""The CLI in two worker processes writes the same articles as in one.

`--direct_num_workers=2 --direct_running_mode=multi_processing` runs the stages in separate
processes, which see none of the launching process's module state: langdetect must be seeded in
each worker's `DoFn.setup()`, or languages and confidences drift from run to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT, sql

pytestmark = pytest.mark.e2e

RUN_COLUMNS = {"run_id", "ingested_at", "ingest_date"}
TIMING_COLUMNS = {"started_at", "elapsed_ms", "failed_at"}


def run_cli(output: Path, *beam_args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--output", str(output), *beam_args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    return completed.stdout


def rows(output: Path, dataset: str, drop: set[str], order: str) -> list[dict[str, Any]]:
    pattern = (output / dataset / "**" / "*.parquet").as_posix()
    relation = sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true) ORDER BY {order}")
    return [
        {k: v for k, v in zip(relation.columns, row, strict=True) if k not in drop}
        for row in relation.fetchall()
    ]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    single = tmp_path_factory.mktemp("single") / "out"
    multi = tmp_path_factory.mktemp("multi") / "out"
    run_cli(single)
    report = run_cli(multi, "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert "committed" in report.splitlines()[0]
    return single, multi


def test_two_worker_processes_write_the_same_articles(outputs: tuple[Path, Path]) -> None:
    single, multi = outputs
    one = rows(single, "articles", RUN_COLUMNS, "article_id")
    two = rows(multi, "articles", RUN_COLUMNS, "article_id")
    assert len(one) == 22  # the shipped seeds: 23 entries, one duplicate
    assert [a["article_id"] for a in two] == [a["article_id"] for a in one]
    for a, b in zip(one, two, strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_langdetect_is_seeded_in_the_workers(outputs: tuple[Path, Path]) -> None:
    """Same languages and the very same confidences (an unseeded detector varies in the last digits)."""
    single, multi = outputs
    columns = "article_id, language, language_confidence, language_detected, language_source"
    for a, b in zip(
        rows(single, "articles", set(), "article_id"),
        rows(multi, "articles", set(), "article_id"),
        strict=True,
    ):
        assert [a[c.strip()] for c in columns.split(",")] == [b[c.strip()] for c in columns.split(",")]
    confidences = [a["language_confidence"] for a in rows(multi, "articles", set(), "article_id")]
    assert all(0.5 < c <= 1.0 for c in confidences)


def test_two_worker_processes_account_for_inputs_the_same_way(outputs: tuple[Path, Path]) -> None:
    single, multi = outputs
    drop = RUN_COLUMNS | TIMING_COLUMNS
    assert rows(multi, "feed_fetches", drop, "source") == rows(single, "feed_fetches", drop, "source")
