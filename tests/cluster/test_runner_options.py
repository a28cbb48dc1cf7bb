"""The `flink` and `dataflow` runner names: what they turn into, and the clear errors when unusable."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

from pipeline.config import load_settings
from pipeline.options import make_pipeline_options
from pipeline.runners import RunnerError, make_runner
from tests.conftest import PROJECT

DETECTOR = "--pipeline_resources_detector_factory_class=io.newsbeam.flink.ClusterProvidedResources"


@pytest.fixture
def job_endpoint() -> Iterator[str]:
    """A port that accepts connections, as a running job server's does (the state file is checked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"localhost:{sock.getsockname()[1]}"


def test_flink_runs_beams_portable_runner_on_the_cluster_of_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job_endpoint: str
) -> None:
    state = tmp_path / "cluster.json"
    worker_command = "/x/.cluster/flink/sdk_worker"
    state.write_text(
        json.dumps({
            "job_endpoint": job_endpoint, "worker_command": worker_command, "parallelism": 2,
            "pipeline_options": [DETECTOR],
        })
    )  # fmt: skip
    monkeypatch.setenv("NEWSBEAM_FLINK_CLUSTER", str(state))
    settings = load_settings(PROJECT / "configs" / "flink.yaml")
    assert make_runner(settings.runner) == "PortableRunner"
    options = make_pipeline_options(settings.runner, settings.beam_options, ["--parallelism=3"])
    portable = options.view_as(PortableOptions)
    assert portable.job_endpoint == job_endpoint
    assert portable.environment_type == "PROCESS"
    assert json.loads(portable.environment_config) == {"command": worker_command}
    everything = options.get_all_options()
    assert everything["parallelism"] == 3  # the command line wins over the cluster's 2
    # The cluster's own Java option reaches the job server (Beam drops options it does not define).
    assert everything["pipeline_resources_detector_factory_class"] == DETECTOR.split("=", 1)[1]


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


def test_a_flink_job_keeps_one_sdk_worker_per_taskmanager_for_all_its_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job_endpoint: str
) -> None:
    # Beam's default (0) stops a TaskManager's SDK worker at the end of each task, so a batch job of ~20
    # Python stages started ~20 workers per TaskManager, one after another.
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps({"job_endpoint": job_endpoint, "worker_command": "/x/sdk_worker"}))
    monkeypatch.setenv("NEWSBEAM_FLINK_CLUSTER", str(state))
    options = make_pipeline_options("flink", {}, [])
    # Kept longer than the gap between two stages' tasks on 2 busy cores (a few seconds).
    assert int(options.view_as(PortableOptions).environment_cache_millis) >= 30_000
    # A config's beam_options come after the runner's defaults and win.
    options = make_pipeline_options("flink", {"environment_cache_millis": 0}, [])
    assert int(options.view_as(PortableOptions).environment_cache_millis) == 0
