"""Inputs from and output to an object store, through Beam's filesystems: s3:// against a local S3 server.

The S3 server is moto's server mode (PyPI `moto[server]`, in .cluster/moto-venv, installed by
`deploy/flink/cluster.py install`), started on 127.0.0.1 for the session (tests/cluster/conftest.py);
Beam's S3 filesystem (the `aws` extra) is pointed at it with Beam's own options (`--s3_endpoint_url`,
keys, region). The same run on the local filesystem is the reference. gs:// goes through the same
FileSystems calls; runs on it are covered only by the Dataflow dry run (tests/cluster/test_dataflow.py),
its commit lock by tests/cluster/test_object_lock.py against fake-gcs-server.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.cluster.object_servers import S3_KEYS as KEYS
from tests.cluster.object_servers import s3_beam_args
from tests.cluster.test_flink import RUN_COLUMNS
from tests.conftest import PROJECT, SEEDS, require

NEWSBEAM = Path(sys.executable).parent / "newsbeam"
BUCKET = "newsbeam-test"


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    try:
        import boto3
    except ImportError:
        require(False, "the aws extra (apache-beam[aws], boto3) is not installed: make cluster-deps")
    client = boto3.client("s3", endpoint_url=s3_endpoint, **KEYS)
    client.create_bucket(Bucket=BUCKET)
    for path in SEEDS.rglob("*"):
        if path.is_file() and path.suffix != ".md":
            client.upload_file(str(path), BUCKET, f"inputs/{path.relative_to(SEEDS)}")
    return client


def _run(inputs: str, output: str, *beam_args: str) -> str:
    done = subprocess.run(
        [str(NEWSBEAM), "run", "--runner", "direct", "--input", inputs, "--output", output, *beam_args],
        capture_output=True, text=True, cwd=PROJECT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout


def _keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _articles_from_s3(s3: Any, prefix: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in _keys(s3, f"{prefix}/articles/"):
        if key.endswith(".parquet"):
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            # Partition columns live in the key (`.../ingest_date=.../language=.../part-...`).
            partitions = dict(part.split("=", 1) for part in key.split("/") if "=" in part)
            rows += [row | partitions for row in pq.read_table(io.BytesIO(body)).to_pylist()]
    return rows


@pytest.fixture(scope="module")
def s3_run(s3: Any, s3_endpoint: str) -> str:
    return _run(f"s3://{BUCKET}/inputs/", f"s3://{BUCKET}/out", *s3_beam_args(s3_endpoint))


def test_a_run_reads_s3_and_writes_hive_partitioned_parquet_to_s3(s3: Any, s3_run: str) -> None:
    assert f"manifest:          s3://{BUCKET}/out/_runs/" in s3_run
    keys = _keys(s3, "out/")
    articles = [key for key in keys if key.startswith("out/articles/")]
    assert articles and all(
        key.split("/")[2].startswith("ingest_date=") and key.split("/")[3].startswith("language=")
        for key in articles
    )
    assert any(key.startswith("out/feed_fetches/ingest_date=") for key in keys)
    assert [key for key in keys if key.startswith("out/_runs/") and key.endswith(".json")]
    assert not [key for key in keys if "/_staging/" in key], "staged files are left behind"


def test_s3_output_equals_the_local_filesystem_output(s3: Any, s3_run: str, tmp_path: Path) -> None:
    local = tmp_path / "out"
    _run(str(SEEDS), str(local))
    import pyarrow.dataset as ds

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # `source` differs by design (the s3:// key vs the local path): compare the rest of each row.
        skipped = RUN_COLUMNS | {"source"}
        return sorted(
            ({k: v for k, v in row.items() if k not in skipped} for row in rows),
            key=lambda r: r["article_id"],
        )

    local_rows = ds.dataset(local / "articles", format="parquet", partitioning="hive").to_table().to_pylist()
    s3_rows = _articles_from_s3(s3, "out")
    assert len(s3_rows) == len(local_rows) >= 20
    assert strip(s3_rows) == strip(local_rows)
    assert {row["source"] for row in s3_rows} >= {f"s3://{BUCKET}/inputs/feeds/rss2_en.xml"}


def test_staging_is_emptied_on_an_object_store(s3: Any, s3_endpoint: str) -> None:
    """Object stores have no folders: whatever a run left under its staging prefix is deleted by key."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.io.staging import remove_staging

    FileSystems.set_options(PipelineOptions(s3_beam_args(s3_endpoint)))
    for key in ("a/part-1.parquet", "a/b/part-2.parquet", "part-3-edited.parquet"):
        s3.put_object(Bucket=BUCKET, Key=f"leftovers/_staging/run-1/{key}", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="leftovers/_staging/run-2/part-4.parquet", Body=b"x")
    remove_staging(f"s3://{BUCKET}/leftovers", "run-1")
    assert _keys(s3, "leftovers/") == ["leftovers/_staging/run-2/part-4.parquet"]  # another run's stay
    remove_staging(f"s3://{BUCKET}/leftovers", "no-such-run")  # nothing staged: nothing to do, no error
    assert _keys(s3, "leftovers/") == ["leftovers/_staging/run-2/part-4.parquet"]


def test_an_s3_output_with_glob_characters_is_listed_literally(s3: Any, s3_endpoint: str) -> None:
    """`out[1]` is a name: the index and markers under it are found, so a rerun stores nothing new."""
    output = f"s3://{BUCKET}/glob[1]*?"
    s3.put_object(Bucket=BUCKET, Key="glob1X/_state/articles/part-decoy.parquet", Body=b"not parquet")

    def run_here() -> str:  # this tree's code (`python -m pipeline` from the project root)
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--runner", "direct", "--input",
             f"s3://{BUCKET}/inputs/feeds/rss2_en.xml", "--output", output, *s3_beam_args(s3_endpoint)],
            capture_output=True, text=True, cwd=PROJECT, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        return done.stdout

    first, second = run_here(), run_here()
    written = [line for line in first.splitlines() if "articles written:" in line]
    assert written and not written[0].strip().endswith(": 0")
    assert "articles written:  0" in second
    index = [key for key in _keys(s3, "glob[1]*?/_state/articles/") if key.endswith(".parquet")]
    assert len(index) == 1
    assert not [key for key in _keys(s3, "glob[1]*?/") if "/_staging/" in key]
