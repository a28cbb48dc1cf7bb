"""Write tests/data/schema_v0/: an `articles` partition as newsbeam wrote it before versioned runs.

    .venv/bin/python tests/data/make_schema_v0.py

The files stand for data written by an older newsbeam: schema version 1, before the `version`
column existed. tests/test_incremental.py reads them together with files of the current schema
(DuckDB `union_by_name`, a pyarrow dataset with the current schema). The old column list is frozen
here on purpose: it must not follow the current schema. Never edit the Parquet files by hand.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from transforms.schema import ARTICLE_COLUMNS  # noqa: E402

TARGET = HERE / "schema_v0"
INGEST_DATE = "2026-01-15"
# The articles columns of schema version 1, in their order then (partition columns excluded).
V1_COLUMNS = [
    "article_id",
    "article_id_source",
    "source",
    "source_type",
    "source_domain",
    "feed_title",
    "feed_url",
    "entry_id",
    "url",
    "canonical_url",
    "title",
    "summary",
    "text",
    "authors",
    "tags",
    "published_at",
    "published_offset_minutes",
    "published_at_source",
    "updated_at",
    "updated_offset_minutes",
    "updated_at_source",
    "ingested_at",
    "language_script",
    "language_confidence",
    "language_detected",
    "language_declared",
    "language_source",
    "word_count",
    "char_count",
    "reading_time_seconds",
    "content_hash",
    "run_id",
    "pipeline_version",
    "schema_version",
]


def v1_schema() -> pa.Schema:
    types = {c.name: c.type for c in ARTICLE_COLUMNS}
    return pa.schema(
        [pa.field(name, types[name]) for name in V1_COLUMNS], metadata={"newsbeam.schema_version": "1"}
    )


def rows() -> list[dict[str, object]]:
    at = datetime(2026, 1, 15, 8, 30, tzinfo=UTC)
    made: list[dict[str, object]] = []
    for number in range(3):
        title = f"Old article {number}"
        text = f"Body of old article {number}, written before versions existed."
        made.append(
            {
                "article_id": f"{number:032x}",
                "article_id_source": "url",
                "source": "feeds/old.xml",
                "source_type": "feed",
                "source_domain": "example.com",
                "feed_title": "Old feed",
                "feed_url": "https://example.com/",
                "entry_id": f"old-{number}",
                "url": f"https://example.com/old/{number}",
                "canonical_url": f"https://example.com/old/{number}",
                "title": title,
                "summary": None,
                "text": text,
                "authors": ["A. Writer"],
                "tags": ["archive"],
                "published_at": at,
                "published_offset_minutes": 0,
                "published_at_source": "feed:published",
                "updated_at": None,
                "updated_offset_minutes": None,
                "updated_at_source": "none",
                "ingested_at": at,
                "language_script": None,
                "language_confidence": 0.99,
                "language_detected": "en",
                "language_declared": "en",
                "language_source": "agreed",
                "word_count": 12,
                "char_count": len(title) + len(text),
                "reading_time_seconds": 4,
                "content_hash": f"{number:064x}",
                "run_id": "20260115T083000Z-000000",
                "pipeline_version": "0.0.9",
                "schema_version": 1,
            }
        )
    return made


def main() -> None:
    shutil.rmtree(TARGET, ignore_errors=True)
    folder = TARGET / "articles" / f"ingest_date={INGEST_DATE}" / "language=en"
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows(), schema=v1_schema())
    pq.write_table(table, folder / "part-20260115T083000Z-000000-schemav0-0000.parquet", compression="zstd")
    print(f"wrote {table.num_rows} rows of schema version 1 under {TARGET}")


if __name__ == "__main__":
    main()
