"""Stories against articles, for `newsbeam report` and `newsbeam show`: totals and the largest stories.

Read from the committed `stories` dataset joined to the latest article versions (the DuckDB tables
that pipeline/health.py's `open_store` loads): a story's title is its first article's, its outlets
are the distinct `source_domain`s of its articles.
"""

from __future__ import annotations

from typing import Any

from pipeline.datasets import Store

STORY_COLUMNS = ["article_id", "story_id", "near_duplicate_of", "source_domain", "published_at"]


def story_totals(store: Store) -> dict[str, int]:
    """Articles with a story, stories, stories of two or more articles, articles that joined one."""
    (totals,) = store.rows(
        "SELECT count(*) AS articles, count(DISTINCT story_id) AS stories, "
        "count(near_duplicate_of) AS joined, "
        "(SELECT count(*) FROM (SELECT story_id FROM stories GROUP BY 1 HAVING count(*) > 1)) AS shared "
        "FROM stories"
    )
    return {key: int(value or 0) for key, value in totals.items()}


def largest_stories(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The `limit` largest stories: size, outlets, the first article's title and publication time."""
    return store.rows(
        "SELECT s.story_id, count(*) AS articles, count(DISTINCT s.source_domain) AS outlets, "
        "string_agg(DISTINCT s.source_domain, ', ' ORDER BY s.source_domain) AS domains, "
        "any_value(first.title) AS title, min(s.published_at) AS first_published "
        "FROM stories s LEFT JOIN latest_articles first ON first.article_id = s.story_id "
        "GROUP BY s.story_id HAVING count(*) > 1 "
        "ORDER BY articles DESC, outlets DESC, s.story_id LIMIT ?",
        [limit],
    )
