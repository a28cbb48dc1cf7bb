"""Inputs from and output to an object store, through Beam's filesystems: s3:// against a local S3 server.

The S3 server is moto's server mode (PyPI `moto[server]`, in .cluster/moto-venv, installed by
`deploy/flink/cluster.py install`), started by the test on 127.0.0.1; Beam's S3 filesystem (the `aws`
extra) is pointed at it with Beam's own options (`--s3_endpoint_url`, keys, region). The same run on
the local filesystem is the reference. gs:// goes through the same FileSystems calls; without a GCS
server here it is covered only by the Dataflow dry run (tests/cluster/test_dataflow.py).
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.cluster.test_flink import RUN_COLUMNS
from tests.conftest import PROJECT, SEEDS, require

MOTO_SERVER = PROJECT / ".cluster" / "moto-venv" / "bin" / "moto_server"
NEWSBEAM = Path(sys.executable).parent / "newsbeam"
BUCKET = "newsbeam-test"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    if not MOTO_SERVER.exists():
        subprocess.run(
            [sys.executable, str(PROJECT / "deploy" / "flink" / "cluster.py"), "install"], timeout=900
        )
    require(MOTO_SERVER.exists(), f"moto's S3 server is not installed at {MOTO_SERVER}")
    port = _free_port()
    server = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not listen within 30 s"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


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


def _s3_args(endpoint: str) -> list[str]:
    return [
        f"--s3_endpoint_url={endpoint}",
        f"--s3_access_key_id={KEYS['aws_access_key_id']}",
        f"--s3_secret_access_key={KEYS['aws_secret_access_key']}",
        f"--s3_region_name={KEYS['region_name']}",
    ]


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
    return _run(f"s3://{BUCKET}/inputs/", f"s3://{BUCKET}/out", *_s3_args(s3_endpoint))


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

    from transforms.write import remove_staging

    FileSystems.set_options(PipelineOptions(_s3_args(s3_endpoint)))
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
             f"s3://{BUCKET}/inputs/feeds/rss2_en.xml", "--output", output, *_s3_args(s3_endpoint)],
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
