"""Read a newsbeam output folder with Apache Spark (local mode) and print what it found as JSON.

    .cluster/spark-venv/bin/python deploy/spark/read_output.py OUTPUT_FOLDER

Runs in its own environment (.cluster/spark-venv, PyPI `pyspark`, pinned in deploy/flink/cluster.py),
so the project's .venv keeps its pins. Spark discovers the Hive partitions (`ingest_date=`, `language=`)
from the folder names, as it would on a cluster or in a data lake; tests/cluster/ compares the figures.
"""

from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession


def main(output: str) -> int:
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("newsbeam-read-output")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        articles = spark.read.option("basePath", f"{output}/articles").parquet(f"{output}/articles")
        fetches = spark.read.option("basePath", f"{output}/feed_fetches").parquet(f"{output}/feed_fetches")
        rows = articles.orderBy("article_id").select(
            "article_id", "language", "title", "word_count", "published_at", "ingest_date", "authors"
        )
        by_language = articles.groupBy("language").count().collect()
        result = {
            "articles": articles.count(),
            "feed_fetches": fetches.count(),
            "columns": articles.columns,
            "by_language": {row["language"]: row["count"] for row in by_language},
            "rows": [
                {
                    "article_id": r["article_id"],
                    "language": r["language"],
                    "title": r["title"],
                    "word_count": r["word_count"],
                    "published_at": r["published_at"].isoformat() if r["published_at"] else None,
                    "ingest_date": str(r["ingest_date"]),
                    "authors": list(r["authors"] or []),
                }
                for r in rows.collect()
            ],
        }
    finally:
        spark.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
