"""Deduplication: which article of an id wins, what the store already has, how staged rows are edited."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime
from typing import Any

from transforms.dedupe import ArticleRef, article_ref, decide, rank
from transforms.io.versions import StoredVersion


def article(**values: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "article_id": "a1",
        "source": "feed-a.xml",
        "ordinal": 0,
        "text": "Body text.",
        "summary": None,
        "authors": [],
        "tags": [],
        "published_at": datetime(2024, 3, 4, 9, 0, tzinfo=UTC),
        "updated_at": None,
        "content_hash": "h1",
    }
    record.update(values)
    return record


def best(*articles: dict[str, Any]) -> dict[str, Any]:
    return max(articles, key=rank)


def test_the_newest_update_wins() -> None:
    old = article(text="A much longer and more complete body " * 10, source="a")
    new = article(updated_at=datetime(2024, 3, 5, tzinfo=UTC), source="b")
    assert best(old, new) is new


def test_a_later_publication_counts_as_newer() -> None:
    first = article(published_at=datetime(2024, 3, 4, 9, 0, tzinfo=UTC), source="a")
    later = article(published_at=datetime(2024, 3, 4, 12, 40, tzinfo=UTC), source="b")
    assert best(first, later) is later


def test_the_most_recent_of_update_and_publication_counts() -> None:
    updated_early = article(
        published_at=datetime(2024, 3, 1, tzinfo=UTC), updated_at=datetime(2024, 3, 2, tzinfo=UTC)
    )
    published_late = article(published_at=datetime(2024, 3, 3, tzinfo=UTC), source="b")
    assert best(updated_early, published_late) is published_late


def test_an_undated_article_loses_to_a_dated_one() -> None:
    undated = article(published_at=None, text="Long " * 100)
    dated = article(source="b")
    assert best(undated, dated) is dated


def test_at_equal_time_the_most_complete_wins() -> None:
    bare = article(source="a")
    fuller = article(source="b", summary="A summary.")
    with_authors = article(source="c", authors=["Ann"])
    longer = article(source="d", text="Body text, with more of it.")
    assert best(bare, fuller) is fuller
    assert best(bare, with_authors) is with_authors
    assert best(bare, longer) is longer


def test_the_order_is_total_and_independent_of_arrival() -> None:
    same = [article(source=s, ordinal=o) for s in ("b", "a") for o in (1, 0)]
    winners = {id(max(p, key=rank)) for p in itertools.permutations(same)}
    assert len(winners) == 1
    assert max(same, key=rank)["source"] == "b" and max(same, key=rank)["ordinal"] == 1
    assert len({rank(a) for a in same}) == len(same)


def test_rank_tolerates_missing_fields() -> None:
    minimal = {"article_id": "x", "source": "s"}
    assert rank(minimal) == (float("-inf"), 0, "", "s", 0)


def ref(row: int, **values: Any) -> ArticleRef:
    return article_ref(article(**values), "staged/part-1.parquet", row)


def test_decide_keeps_the_best_and_names_the_duplicates() -> None:
    plain, newer, fuller = (
        ref(0, source="a"),
        ref(1, source="b", updated_at=datetime(2024, 3, 6, tzinfo=UTC), content_hash="h2"),
        ref(2, source="c", summary="More."),
    )
    for order in itertools.permutations([plain, newer, fuller]):
        decision = decide(order, stored=None)
        assert decision.winner == newer and decision.version == 1
        assert decision.duplicates == [fuller, plain]  # best first


def test_decide_against_the_stored_version() -> None:
    same = ref(0, content_hash="h1")
    assert decide([same], StoredVersion("h1", None, 1)).version == 0  # already stored
    assert decide([same], StoredVersion("h0", None, 4)).version == 5  # changed: the next version
    later = ref(0, content_hash="h1", updated_at=datetime(2024, 3, 9, tzinfo=UTC))
    assert decide([later], StoredVersion("h1", datetime(2024, 3, 8, tzinfo=UTC), 2)).version == 3


def test_a_ref_is_small_and_carries_its_index_row() -> None:
    updated = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)
    made = article_ref(
        article(run_id="r1", ingest_date="2026-11-29", version=7, updated_at=updated, text="x" * 5000),
        "out/_staging/r1/articles/ingest_date=2026-11-29/part-r1-abc-0001.parquet",
        3,
    )
    assert (made.article_id, made.source, made.file, made.row) == (
        "a1",
        "feed-a.xml",
        "part-r1-abc-0001.parquet",
        3,
    )
    assert made.updated_at == updated  # to the microsecond
    assert made.index_row(2, "r2") == {
        "article_id": "a1",
        "content_hash": "h1",
        "updated_at": updated,
        "version": 2,
        "run_id": "r2",
        "ingest_date": "2026-11-29",
    }
    assert len(pickle.dumps(made)) < 400  # no text, no full path: one of these per article is grouped
    assert article_ref(article(updated_at=None), "p", 0).updated_at is None
