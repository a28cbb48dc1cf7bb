"""Exactly-once on Prism: the changing-feeds scenario of tests/stream_scenario.py, across stops and kills.

Every distinct (article_id, content_hash) served at a successful poll is stored exactly once, with
versions rising in the order the revisions were first served, across a SIGTERM, a Ctrl-C to the
process group, a kill -9 and restarts; nothing partial is ever visible or left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import PROJECT, require
from tests.stream_scenario import run_exactly_once_scenario

pytestmark = pytest.mark.e2e


def test_every_served_revision_is_stored_exactly_once_across_stops_and_kills(tmp_path: Path) -> None:
    prism = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    require(prism.is_file(), f"the Prism runner is not built at {prism}: run `make prism`")
    report = run_exactly_once_scenario(
        tmp_path, "prism", {"environment_type": "LOOPBACK"}, env={"NEWSBEAM_PRISM": str(prism)}
    )
    assert report.revisions >= 60 and report.runs == 4, report
    print(report.summary())  # figures only: timing is for benchmarks/, not for assertions
