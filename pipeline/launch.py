"""`newsbeam launch`: submit the batch job to Google Cloud Dataflow and return without waiting.

    newsbeam launch --runner dataflow --config configs/dataflow.yaml
    newsbeam launch --runner dataflow --project my-project --region europe-west1 \\
        --temp_location gs://my-bucket/tmp --output gs://my-bucket/news --input 'gs://my-bucket/seeds/*.txt'
    newsbeam launch --runner dataflow --dry-run      # build the Dataflow job offline, submit nothing

The deployment options (project, region, temp and staging locations, machine type, max workers,
service account, network, subnetwork, SDK container image) are Beam's own pipeline options: they live
under `beam_options:` in configs/dataflow.yaml and any of them can be given as a flag. Workers get
`pipeline/` and `transforms/` from the sdist Beam builds with `--setup_file` (setup.py beside
pyproject.toml; an installed copy has none and relies on the image), on the SDK container image
the Flex Template's Dockerfile builds (deploy/dataflow/Dockerfile), so that scheduled runs (Cloud
Scheduler -> Flex Template) and manual launches run the same code.

`--dry-run` builds the job as Dataflow would receive it, offline and without credentials: Beam's
`--dry_run` with `--no_auth`, and a local `--dataflow_endpoint` so that Beam skips the bucket checks
that need the network (newsbeam checks the paths' form itself, below).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.pipeline import Pipeline

from pipeline.build import build_batch
from pipeline.config import ConfigError, Settings
from pipeline.options import make_pipeline_options
from pipeline.runners import RunnerError
from transforms.io.paths import validate_run_id
from transforms.schema import RunInfo

SETUP_FILE = Path(__file__).resolve().parent.parent / "setup.py"
# Beam skips its network checks of gs:// buckets for an endpoint on localhost; only dry runs use it.
OFFLINE_ENDPOINT = "http://localhost"


@dataclass(frozen=True)
class Launched:
    """What a launch produced: the job id (None for a dry run) and the job Beam built."""

    job_id: str | None
    run_id: str
    job: Any  # apache_beam.runners.dataflow.internal.apiclient.Job
    options: PipelineOptions


def dataflow_problems(options: PipelineOptions) -> list[str]:
    """What the Beam options of a Dataflow launch lack, one line each (empty when it can be launched).

    The config's own needs (a gs:// output, no local inputs, the runner) are `Settings.check_mode`'s;
    these need the Beam options as the config and the command line's Beam flags make them together.
    """
    cloud = options.view_as(GoogleCloudOptions)
    problems = [
        f"beam_options.{name}: required for Dataflow"
        for name in ("project", "region", "temp_location")
        if not getattr(cloud, name)
    ]
    validator = PipelineOptionsValidator(options, None)
    for name in ("temp_location", "staging_location"):
        if getattr(cloud, name):
            problems += [
                f"beam_options.{name}: {e.strip()}" for e in validator.validate_gcs_path(cloud, name)
            ]
    if cloud.project:
        problems += [f"beam_options.project: {e.strip()}" for e in validator.validate_cloud_options(cloud)]
    if options.view_as(StandardOptions).streaming:
        problems.append(
            "beam_options.streaming: `launch` submits the batch job; the streaming job is "
            "`newsbeam stream --runner DataflowRunner --streaming ...`"
        )
    return problems


def require_gcp_extra() -> None:
    """Beam's Dataflow client comes with the `gcp` extra; without it, one line saying how to get it."""
    try:
        from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401
    except ImportError:
        raise RunnerError(
            "launch: the Dataflow runner needs Beam's gcp extra: pip install 'newsbeam[gcp]' "
            "(in a checkout: make cluster-deps)"
        ) from None


def launch_dataflow(
    settings: Settings, beam_args: list[str], run_id: str, version: str, dry_run: bool = False
) -> Launched:
    require_gcp_extra()
    validate_run_id(run_id)
    # A checkout stages its code from setup.py; an installed copy has none: the workers' SDK image
    # (deploy/dataflow/Dockerfile installs newsbeam) carries it. Config and command line win.
    extra = [f"--setup_file={SETUP_FILE}"] if SETUP_FILE.is_file() else []
    if dry_run:
        extra += ["--dry_run=True", "--no_auth", f"--dataflow_endpoint={OFFLINE_ENDPOINT}"]
    options = make_pipeline_options(settings.runner, settings.beam_options, extra + beam_args)
    needs = [f"{key}: {problem}" for key, problem in settings.mode_problems("launch")]
    problems = needs + dataflow_problems(options)
    if problems:
        raise ConfigError("\n".join(problems))
    setup_file = options.view_as(SetupOptions).setup_file
    if setup_file and not Path(setup_file).is_file():
        raise ConfigError(f"beam_options.setup_file: {setup_file} does not exist")
    if not setup_file and not options.view_as(WorkerOptions).sdk_container_image:
        raise ConfigError(
            "launch: this installed newsbeam has no setup.py to stage its code onto the workers: give "
            "--sdk_container_image (an image with newsbeam installed, deploy/dataflow/Dockerfile) or "
            "--setup_file (a checkout's setup.py)"
        )
    started_at = datetime.now(UTC).replace(microsecond=0)
    run = RunInfo(run_id, started_at, version)
    pipeline = Pipeline(runner="DataflowRunner", options=options)
    build_batch(pipeline, settings, run)
    result: Any = pipeline.run()  # DataflowPipelineResult, or a dry run's result with `.job`
    if dry_run:
        return Launched(None, run_id, result.job, options)
    return Launched(result.job_id(), run_id, result.job, options)


def describe(launched: Launched) -> str:
    cloud = launched.options.view_as(GoogleCloudOptions)
    worker = launched.options.view_as(WorkerOptions)
    lines = [
        f"newsbeam launch {launched.run_id}: "
        + ("dry run, nothing submitted" if launched.job_id is None else f"Dataflow job {launched.job_id}"),
        f"  project/region:   {cloud.project} / {cloud.region}",
        f"  workers:          {worker.machine_type or 'default'} x {worker.max_num_workers or 'auto'}",
        f"  SDK image:        {worker.sdk_container_image or 'Beam default'}",
        f"  steps:            {len(launched.job.proto_pipeline.components.transforms)} transforms",
    ]
    if launched.job_id is not None:
        lines.append(
            f"  console:          https://console.cloud.google.com/dataflow/jobs/{cloud.region}/"
            f"{launched.job_id}?project={cloud.project}"
        )
    return "\n".join(lines)
