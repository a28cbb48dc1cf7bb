"""Dataflow, offline: the job `newsbeam launch` builds, the worker packaging, and the Flex Template's files.

No credentials and no network: Beam's `--dry_run` (with `--no_auth`) builds the job's pipeline proto and
stops before submitting; Dataflow's own job-description code (`apiclient.Environment`) then gives the
worker pool Dataflow would receive. The Flex Template image cannot be built here (no Docker engine):
its Dockerfile and metadata are validated, not built.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import apache_beam
import jsonschema
import pytest
import yaml

from pipeline.commands import build_parser
from pipeline.config import ConfigError, Settings, load_settings
from tests.conftest import PROJECT

DATAFLOW_CONFIG = PROJECT / "configs" / "dataflow.yaml"
TEMPLATE = PROJECT / "deploy" / "dataflow"
NEWSBEAM = Path(sys.executable).parent / "newsbeam"
STAGES = (
    "ReadSources",
    "ProcessArticles",
    "ProcessArticles/NormalizeArticles",
    "ProcessArticles/IdentifyArticles",
    "ProcessArticles/MarkStoredRevisions",
    "ProcessArticles/DetectLanguage",
    "ProcessArticles/EnrichArticles",
    "DeduplicateArticles",
    "WriteArticles",
    "WriteDeadLetters",
    "WriteFeedFetches",
    "CommitRun",
)
# The parts of Google's Flex Template metadata format that newsbeam uses.
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "parameters"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "streaming": {"type": "boolean"},
        "parameters": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "label", "helpText"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-zA-Z][a-zA-Z0-9_]*$"},
                    "label": {"type": "string", "minLength": 1},
                    "helpText": {"type": "string", "minLength": 1},
                    "isOptional": {"type": "boolean"},
                    "regexes": {"type": "array", "items": {"type": "string"}},
                    "paramType": {"enum": ["TEXT", "GCS_READ_FILE", "GCS_WRITE_FOLDER", "GCS_READ_FOLDER"]},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def gcp() -> None:
    # The gcp extra is a declared dependency (make test installs it): missing, it fails, never skips.
    try:
        import apache_beam.runners.dataflow.internal.apiclient  # noqa: F401
    except ImportError as error:
        pytest.fail(f"the gcp extra is not installed (make venv-test installs it): {error}")


@pytest.fixture(scope="module")
def launched(gcp: None) -> Any:
    from pipeline.launch import launch_dataflow

    settings = load_settings(DATAFLOW_CONFIG)
    return launch_dataflow(settings, [], "dry-run-test", "0.1.0", dry_run=True)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DATAFLOW_CONFIG.read_text())
    return loaded


def test_the_dry_run_builds_every_stage_of_the_batch_job(launched: Any) -> None:
    assert launched.job_id is None
    names = {t.unique_name for t in launched.job.proto_pipeline.components.transforms.values()}
    assert set(STAGES) <= names
    assert launched.job.proto.type.name == "JOB_TYPE_BATCH"


def test_workers_run_the_configured_sdk_image_with_the_deployment_options(
    launched: Any, config: dict[str, Any]
) -> None:
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.internal import apiclient

    options = config["beam_options"]
    environments = launched.job.proto_pipeline.components.environments
    assert len(environments) == 1
    (environment,) = environments.values()
    assert environment.urn == "beam:env:docker:v1"
    assert options["sdk_container_image"].encode() in environment.payload
    # What Dataflow would receive: the job environment its client builds from the options.
    described = apiclient.Environment(
        [], launched.options, apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION, "gs://x/pipeline.pb",
        launched.job.proto_pipeline,
    ).proto  # fmt: skip
    (pool,) = described.workerPools
    assert pool.machineType == options["machine_type"]
    assert pool.autoscalingSettings.maxNumWorkers == options["max_num_workers"]
    assert pool.network == options["network"]
    assert pool.subnetwork == options["subnetwork"]
    assert [image.containerImage for image in pool.sdkHarnessContainerImages] == [
        options["sdk_container_image"]
    ]
    assert described.serviceAccountEmail == options["service_account_email"]
    assert "use_runner_v2" in described.experiments
    cloud = launched.options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region) == (options["project"], options["region"])
    # Beam gives each job a folder of its own under the temp and staging locations.
    assert cloud.temp_location.startswith(options["temp_location"] + "/beamapp-")
    assert cloud.staging_location.startswith(options["staging_location"] + "/beamapp-")


def test_the_staged_package_holds_pipeline_and_transforms(launched: Any) -> None:
    (environment,) = launched.job.proto_pipeline.components.environments.values()
    staged = {}
    for dependency in environment.dependencies:
        role = apache_beam.portability.api.beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
            dependency.role_payload
        )
        path = apache_beam.portability.api.beam_runner_api_pb2.ArtifactFilePayload.FromString(
            dependency.type_payload
        ).path
        staged[role.staged_name] = path
    assert "workflow.tar.gz" in staged, staged  # Beam's name for the --setup_file sdist
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        member = next(m for m in sdist.getmembers() if m.name.endswith(".egg-info/requires.txt"))
        requirements = sdist.extractfile(member)
        assert requirements is not None
        requires = requirements.read().decode().splitlines()
    for package in ("pipeline", "transforms"):
        sources = {f"{package}/{path.name}" for path in (PROJECT / package).glob("*.py")}
        assert sources <= names, sorted(sources - names)
    # The workers install the same pins as pyproject.toml.
    assert "apache-beam==2.62.0" in requires
    assert any(line.startswith("pyarrow==") for line in requires)


def test_launch_dry_run_from_the_command_line(gcp: None) -> None:
    done = subprocess.run(
        [str(NEWSBEAM), "launch", "--runner", "dataflow", "--config", str(DATAFLOW_CONFIG), "--dry-run"],
        capture_output=True, text=True, cwd=PROJECT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dry run, nothing submitted" in done.stdout
    assert "n2-standard-2 x 10" in done.stdout


def test_a_launch_without_project_or_with_local_paths_fails_before_building(
    gcp: None, tmp_path: Path
) -> None:
    from pipeline.launch import launch_dataflow

    settings = load_settings(DATAFLOW_CONFIG)
    options = {k: v for k, v in settings.beam_options.items() if k != "project"}
    broken = Settings.model_validate(
        settings.model_dump() | {"beam_options": options, "output": str(tmp_path)}
    )
    with pytest.raises(ConfigError) as error:
        launch_dataflow(broken, [], "r", "0.1.0", dry_run=True)
    message = str(error.value)
    assert "beam_options.project: required for Dataflow" in message
    assert "output:" in message and "not a gs:// URL" in message


def _template_main() -> ModuleType:
    spec = importlib.util.spec_from_file_location("newsbeam_template_main", TEMPLATE / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flex_template_metadata_is_valid_and_every_parameter_reaches_launch() -> None:
    metadata = json.loads((TEMPLATE / "metadata.json").read_text())
    jsonschema.validate(metadata, METADATA_SCHEMA)
    examples = {
        "inputs": "gs://b/seeds/*.txt,https://example.com/feed.xml",
        "output": "gs://b/news",
        "config": "configs/dataflow.yaml",
        "run_id": "20261129T000000Z-abc123",
    }
    assert {p["name"] for p in metadata["parameters"]} == set(examples)
    for parameter in metadata["parameters"]:
        for regex in parameter.get("regexes", []):
            assert re.fullmatch(regex, examples[parameter["name"]]), (parameter["name"], regex)
    argv = _template_main().template_argv([f"--{name}={value}" for name, value in examples.items()])
    args, beam_args = build_parser().parse_known_args(argv)
    assert beam_args == []
    assert args.command == "launch" and args.runner == "dataflow"
    assert args.input == ["gs://b/seeds/*.txt", "https://example.com/feed.xml"]
    assert (args.output, str(args.config), args.run_id) == (
        "gs://b/news",
        "configs/dataflow.yaml",
        examples["run_id"],
    )


def test_flex_template_dockerfile_copies_existing_files_and_pins_beam_and_python() -> None:
    """Validated, not built: no Docker engine here."""
    text = (TEMPLATE / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    copies = [line.split()[1:] for line in instructions if line.startswith("COPY") and "--from" not in line]
    assert copies
    destinations = set()
    for *sources, destination in copies:
        for source in sources:
            assert (PROJECT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        destinations.add(destination.rstrip("/"))
    assert {"pipeline", "transforms", "configs", "main.py"} <= destinations
    beam_image = re.search(r"^FROM apache/beam_python(\d+\.\d+)_sdk:(\S+)$", text, re.MULTILINE)
    assert beam_image is not None
    assert beam_image.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert beam_image.group(2) == apache_beam.__version__ == "2.62.0"
    env = dict(re.findall(r"^ENV (\w+)=(\S+)$", text, re.MULTILINE))
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "/template/main.py"
    assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "/template/setup.py"
    assert "WORKDIR /template" in instructions
    assert re.search(r"pip install .*-c constraints.txt", text)
