"""Deduplication order: which of several articles with one id wins, and the combiner that finds it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from transforms.dedupe import BestRankAndCount, rank


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


def combine(ranks: list[Any], splits: int) -> tuple[Any, int]:
    """Run the CombineFn as a runner would: partial accumulators, merged, then extracted."""
    fn = BestRankAndCount()
    accumulators = []
    for part in range(splits):
        accumulator = fn.create_accumulator()
        for value in ranks[part::splits]:
            accumulator = fn.add_input(accumulator, value)
        accumulators.append(accumulator)
    accumulators.append(fn.create_accumulator())  # an empty bundle
    result: tuple[Any, int] = fn.extract_output(fn.merge_accumulators(accumulators))
    return result


def test_best_rank_and_count() -> None:
    ranks = [
        rank(article(source="a")),
        rank(article(source="b", updated_at=datetime(2024, 3, 6, tzinfo=UTC))),
        rank(article(source="c", summary="More.")),
    ]
    expected = (rank(article(source="b", updated_at=datetime(2024, 3, 6, tzinfo=UTC))), 3)
    for splits in (1, 2, 3):
        assert combine(ranks, splits) == expected


def test_best_rank_and_count_of_nothing() -> None:
    fn = BestRankAndCount()
    assert fn.extract_output(fn.create_accumulator()) == (None, 0)
    assert fn.merge_accumulators([fn.create_accumulator(), fn.create_accumulator()]) == (None, 0)
