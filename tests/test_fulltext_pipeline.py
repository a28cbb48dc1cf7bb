"""Full text through the batch pipeline: `run_batch` over http feeds whose entries link local pages.

The articles come back from Parquet with the page's text and its provenance, a `page_fetches` row
per page; a second run over the same feeds fetches no page again (counted at the server); a run over
a feed file makes no request at all; and a schema 3 file reads next to the new ones with DuckDB.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline import Settings, run_batch
from pipeline.build import pages_folder
from tests.feedserver import FeedServer, Reply
from tests.test_extract import SUMMARY, TITLE, article_html
from transforms.schema import ARTICLE_COLUMNS, RunInfo

HTML = {"Content-Type": "text/html; charset=utf-8"}
PAGE = article_html(body_top=f"<p class='standfirst'>{SUMMARY}</p>").encode()
# Columns added by schema 4 and 5 to articles: a schema 3 file has none of them.
NEW_ARTICLE_COLUMNS = {
    "text_source",
    "page_url",
    "page_status",
    "page_fetched_at",
    "page_outcome",
    "page_canonical_url",
    "extractor",
    "extractor_version",
    "authors_source",
    "language_declared_source",
    "feed_category",
    "feed_tags",
}


def rss(*links: str) -> bytes:
    items = "".join(
        f"<item><title>{TITLE} {i}</title><link>{link}</link><guid>{link}</guid>"
        f"<description>{SUMMARY}</description></item>"
        for i, link in enumerate(links)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Local news</title>'
        f"<link>http://local.example/</link>{items}</channel></rss>"
    ).encode()


def rows(output: Path, dataset: str, columns: str) -> list[tuple[Any, ...]]:
    pattern = (output / dataset / "**" / "*.parquet").as_posix()
    return duckdb.execute(
        f"SELECT {columns} FROM read_parquet(?, union_by_name = true) ORDER BY 1", [pattern]
    ).fetchall()


def settings(inputs: list[str], output: Path, **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "inputs": inputs,
            "output": str(output),
            "fetch": {"allow_private_hosts": True},
            "fulltext": {"min_interval": 0.0},
            **extra,
        }
    )


def test_a_run_over_http_feeds_stores_the_pages_text_once_and_never_fetches_it_again(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    pages = [feed_server.route(f"/news/{i}", Reply(200, PAGE, HTML)) for i in range(2)]
    feed = feed_server.route("/feed.xml", Reply(200, rss(*pages), {"Content-Type": "application/rss+xml"}))
    output = tmp_path / "out"
    first = run_batch(settings([feed], output))
    assert "article pages:     2 fetched (2 extracted), 0 refused by robots.txt, 0 failed, 0 skipped" in (
        first.report
    )

    articles = rows(
        output, "articles", "url, text_source, page_outcome, page_status, extractor, text, summary"
    )
    assert [(a[0], a[1], a[2], a[3], a[4]) for a in articles] == [
        (url, "page", "ok", 200, "trafilatura") for url in pages
    ]
    assert all("medieval cellars" in a[5] and a[6] == SUMMARY for a in articles)
    fetched = rows(output, "page_fetches", "url, outcome, robots, http_status, run_id")
    assert [(f[0], f[1], f[2], f[3]) for f in fetched] == [(url, "ok", "no_robots", 200) for url in pages]
    assert [len(feed_server.hits(f"/news/{i}")) for i in range(2)] == [1, 1]
    # The run's folder for page fetching (host slots, robots.txt, the pages) goes with the run.
    assert not Path(pages_folder(RunInfo(first.run_id, datetime.now(UTC), ""))).exists()

    # The same feeds again (polled now, whatever their freshness): the revisions are stored, no page
    # is fetched.
    again = run_batch(settings([feed], output, state={"force": True}))
    assert len(feed_server.hits("/feed.xml")) == 2
    assert "article pages:     0 fetched (0 extracted), 0 refused by robots.txt, 0 failed, 2 skipped" in (
        again.report
    )
    assert [len(feed_server.hits(f"/news/{i}")) for i in range(2)] == [1, 1]


def test_a_run_over_a_feed_file_makes_no_request(feed_server: FeedServer, tmp_path: Path) -> None:
    page = feed_server.route("/news/1", Reply(200, PAGE, HTML))
    feed_file = tmp_path / "feed.xml"
    feed_file.write_bytes(rss(page))
    output = tmp_path / "out"
    run_batch(settings([str(feed_file)], output, fulltext={"mode": "always"}))
    assert feed_server.requests == []
    assert rows(output, "articles", "text_source, page_outcome") == [("feed_summary", None)]


def test_a_schema_3_file_reads_next_to_a_new_one(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_file = tmp_path / "feed.xml"
    feed_file.write_bytes(rss("http://local.example/a"))
    output = tmp_path / "out"
    run_batch(settings([str(feed_file)], output))
    new = pq.read_table(next((output / "articles").rglob("*.parquet")), partitioning=None)
    old_columns = [
        c for c in ARTICLE_COLUMNS if c.name in new.schema.names and c.name not in NEW_ARTICLE_COLUMNS
    ]
    old_schema = pa.schema([pa.field(c.name, c.type) for c in old_columns])
    old = new.select([c.name for c in old_columns]).cast(old_schema)
    old = old.set_column(old.schema.get_field_index("article_id"), "article_id", pa.array(["old-id"]))
    folder = output / "articles" / "ingest_date=2026-01-01" / "language=en"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "schema3.parquet")
    found = rows(output, "articles", "article_id, text_source")
    assert sorted(found, key=lambda r: r[0] == "old-id") == [(found[0][0], "feed_summary"), ("old-id", None)]


def test_batch_and_streaming_store_the_same_text_for_the_same_page(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    from tests.test_stream_e2e import finish, start_stream

    pages = [feed_server.route(f"/news/{i}", Reply(200, PAGE, HTML)) for i in range(2)]
    feed = feed_server.route("/feed.xml", Reply(200, rss(*pages), {"Content-Type": "application/rss+xml"}))
    batch_output, stream_output = tmp_path / "batch", tmp_path / "stream"
    run_batch(settings([feed], batch_output))
    config = tmp_path / "streaming.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runner": "prism",
                "output": str(stream_output),
                "feeds": [{"url": feed}],
                "stream": {"poll_interval": "1s", "window": "2s"},
                "fetch": {"allow_private_hosts": True, "max_attempts": 1, "total_timeout": 10},
                "fulltext": {"min_interval": 0.0},
                "beam_options": {"environment_type": "LOOPBACK"},
            }
        ),
        encoding="utf-8",
    )
    finish(start_stream(config, "--duration", "6", "--run-id", "same-page"))
    # The job's folder for page fetching goes with the job, as a batch run's does.
    assert not Path(pages_folder(RunInfo("same-page", datetime.now(UTC), ""))).exists()
    columns = "url, text_source, page_outcome, extractor, text, summary, published_at, content_hash"
    batch, stream = rows(batch_output, "articles", columns), rows(stream_output, "articles", columns)
    assert [row[:4] for row in batch] == [(url, "page", "ok", "trafilatura") for url in pages]
    assert stream == batch
    # Each page once per job, however many polls found the feed unchanged.
    assert [len(feed_server.hits(f"/news/{i}")) for i in range(2)] == [2, 2]
