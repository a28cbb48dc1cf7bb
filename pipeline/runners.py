"""Choose the Beam runner explicitly, so that a local run never waits on a runner download.

Beam's `DirectRunner` may try to download the Prism runner binary first; newsbeam's `direct`
means Beam's in-process `FnApiRunner`, which runs batch pipelines with no download, in one process
or, with `--direct_running_mode=multi_processing --direct_num_workers=N`, in N worker processes.
`prism` uses a Prism binary built locally from Beam's Go module (`make prism`). Any other name is
handed to Beam as it is (FlinkRunner, SparkRunner, DataflowRunner, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner

LOCAL_ALIASES = frozenset({"direct", "directrunner", "fnapirunner", "local"})
PRISM_ALIASES = frozenset({"prism", "prismrunner"})
PRISM_ENV = "NEWSBEAM_PRISM"
PRISM_DEFAULT = Path(".prism/bin/prism")


class RunnerError(ValueError):
    pass


def prism_binary() -> Path:
    path = Path(os.environ.get(PRISM_ENV, PRISM_DEFAULT))
    if not path.is_file():
        raise RunnerError(
            f"runner: the Prism binary {path} does not exist; build it with `make prism` or set {PRISM_ENV}"
        )
    return path


def make_runner(name: str) -> PipelineRunner | str:
    """A runner instance (local ones) or the name Beam resolves itself."""
    key = name.strip().lower()
    if key in LOCAL_ALIASES:
        return FnApiRunner()
    if key in PRISM_ALIASES:
        from apache_beam.runners.portability.prism_runner import PrismRunner

        return PrismRunner()
    return name


def runner_options(name: str) -> list[str]:
    """Extra pipeline flags a runner needs here (Prism's local binary: never a download)."""
    if name.strip().lower() in PRISM_ALIASES:
        return [f"--prism_location={prism_binary().resolve()}"]
    return []
