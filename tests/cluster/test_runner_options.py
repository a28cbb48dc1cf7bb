"""The `flink` and `dataflow` runner names: what they turn into, and the clear errors when unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

from pipeline.config import load_settings
from pipeline.options import make_pipeline_options
from pipeline.runners import RunnerError, make_runner
from tests.conftest import PROJECT

STATE = {
    "job_endpoint": "localhost:18099",
    "worker_command": "/x/.cluster/flink/sdk_worker",
    "parallelism": 2,
}


def test_flink_runs_beams_portable_runner_on_the_cluster_of_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps(STATE))
    monkeypatch.setenv("NEWSBEAM_FLINK_CLUSTER", str(state))
    settings = load_settings(PROJECT / "configs" / "flink.yaml")
    assert make_runner(settings.runner) == "PortableRunner"
    options = make_pipeline_options(settings.runner, settings.beam_options, ["--parallelism=3"])
    portable = options.view_as(PortableOptions)
    assert portable.job_endpoint == "localhost:18099"
    assert portable.environment_type == "PROCESS"
    assert json.loads(portable.environment_config) == {"command": STATE["worker_command"]}
    assert options.get_all_options()["parallelism"] == 3  # the command line wins over the cluster's 2


def test_flink_without_a_running_cluster_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSBEAM_FLINK_CLUSTER", str(tmp_path / "missing.json"))
    with pytest.raises(RunnerError, match="make cluster-up"):
        make_pipeline_options("flink", {}, [])
    (tmp_path / "bad.json").write_text('{"ports": {}}')
    monkeypatch.setenv("NEWSBEAM_FLINK_CLUSTER", str(tmp_path / "bad.json"))
    with pytest.raises(RunnerError, match="not a cluster state file"):
        make_pipeline_options("flink", {}, [])


def test_dataflow_is_beams_dataflow_runner() -> None:
    assert make_runner("dataflow") == "DataflowRunner"
    settings = load_settings(PROJECT / "configs" / "dataflow.yaml")
    options = make_pipeline_options(settings.runner, settings.beam_options, [])
    assert options.view_as(StandardOptions).streaming is False
