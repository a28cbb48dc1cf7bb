"""Shared fixtures: a real HTTP feed server, the shipped seeds, the public corpus (or a clear reason)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.feedserver import FeedServer

PROJECT = Path(__file__).resolve().parent.parent
SEEDS = PROJECT / "seeds"
CORPUS = Path(os.environ.get("NEWSBEAM_CORPUS", PROJECT.parent / "shared" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; in CI (CI=true) fail instead, never skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture(scope="session")
def corpus() -> Path:
    require(CORPUS.is_dir(), f"the public corpus is not at {CORPUS} (set NEWSBEAM_CORPUS)")
    return CORPUS


def sql(query: str) -> duckdb.DuckDBPyRelation:
    """`duckdb.sql` for a query that returns rows (DuckDB types its result as possibly None)."""
    relation = duckdb.sql(query)
    assert relation is not None, query
    return relation
