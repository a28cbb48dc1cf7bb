"""The batch pipeline on Prism writes what it writes on the direct runner.

Two things used to stop it there. Prism gives each input of a Flatten the Flatten's output coder, by
coder id: an input with the generic pickled coder (an untyped step) had that shared coder replaced
for every collection using it, and stage building failed ("unknown coder urn key"). And outputs of
`finish_bundle` stamped at MAX_TIMESTAMP, past the global window's end, were dropped as late at the
next grouping, so nothing was deduplicated and the accounting refused the commit.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from apache_beam.pipeline import Pipeline

from pipeline.build import build_batch
from pipeline.config import load_settings
from tests.conftest import PROJECT, SEEDS, require
from tests.test_e2e_cli import Run, run_cli
from transforms.schema import RunInfo

FLATTEN = "beam:transform:flatten:v1"


def prism_binary() -> Path:
    path = Path(os.environ.get("NEWSBEAM_PRISM", PROJECT / ".prism" / "bin" / "prism"))
    require(path.is_file(), f"the Prism runner is not built at {path}: run `make prism`")
    return path


def article_ids(run: Run) -> list[str]:
    table = ds.dataset(run.output / "articles", format="parquet", partitioning="hive").to_table()
    return sorted(table.column("article_id").to_pylist())


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = run_cli("-q", "--input", str(SEEDS), output=tmp_path_factory.mktemp("direct") / "out")
    assert run.returncode == 0, run.stderr
    return run


def test_batch_run_on_prism_commits_the_same_articles_as_direct(tmp_path: Path, direct_run: Run) -> None:
    prism_binary()
    run = run_cli("-q", "--runner", "prism", "--input", str(SEEDS), output=tmp_path / "out")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "committed" in run.stdout
    ids = article_ids(run)
    assert ids, "no articles written"
    assert ids == article_ids(direct_run)
    assert len(set(ids)) == len(ids)  # deduplicated on Prism too
    assert run.manifest["counts"] == direct_run.manifest["counts"]


def test_every_flatten_input_has_the_flattens_coder(tmp_path: Path) -> None:
    settings = load_settings(
        PROJECT / "configs" / "local.yaml",
        {"inputs": [str(SEEDS)], "output": str(tmp_path / "out"), "feeds": []},
    )
    p = Pipeline()
    build_batch(p, settings, RunInfo("coders", datetime(2026, 12, 2, tzinfo=UTC), "test"))
    components = p.to_runner_api().components
    mismatched = {}
    for transform in components.transforms.values():
        if transform.spec.urn != FLATTEN:
            continue
        (output,) = transform.outputs.values()
        wanted = components.pcollections[output].coder_id
        coders = {components.pcollections[pcoll].coder_id for pcoll in transform.inputs.values()}
        if coders - {wanted}:
            mismatched[transform.unique_name] = (wanted, sorted(coders))
    assert not mismatched
