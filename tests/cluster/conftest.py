"""Servers shared by the cluster tests: one local S3 and one local GCS per test session, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.object_servers import serve_gcs, serve_s3


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with serve_s3() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    with serve_gcs() as endpoint:
        yield endpoint
