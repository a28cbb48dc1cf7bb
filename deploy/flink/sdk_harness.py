"""The Python SDK worker a newsbeam worker pool starts (deploy/flink/worker_pool.py): Beam's own worker setup.

    python deploy/flink/sdk_harness.py --id=ID --control_endpoint=HOST:PORT --logging_endpoint=HOST:PORT \\
        --provision_endpoint=HOST:PORT

Why not Beam's pool default (`python -c "SdkHarness(...).run()"`): that command finds `python` on PATH
(a pool started with another interpreter first on PATH starts workers that die at once, and the job then
waits for them forever), and it skips Beam's worker setup, so the job's pipeline options are not applied
and no logging is set up (the job's INFO lines vanish). This script is run by the pool's own interpreter;
it asks the provision service for the job's pipeline options and runs Beam's `sdk_worker_main` harness
with them, which sends every log record to the runner (Flink's TaskManager log), and it also writes
newsbeam's own INFO lines (and everyone's warnings) to stderr, which the pool copies into its log.

It prints `READY` on stdout once the harness is connected to the TaskManager's control service; the pool
reports a worker that exits before that as an error, so the TaskManager fails the job instead of waiting.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

READY = "READY"
# The project's own loggers: `newsbeam.stream`, and the modules of transforms/ and pipeline/.
PROJECT_LOGGERS = ("newsbeam", "transforms", "pipeline")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [worker %(worker_id)s] %(message)s"
# The pool runs in the project's root; its code (transforms/, pipeline/) is imported from there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ProjectLinesFilter(logging.Filter):
    """newsbeam's INFO lines and every warning; Beam's own INFO chatter goes only to the runner."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = self.worker_id
        return record.levelno >= logging.WARNING or record.name.split(".", 1)[0] in PROJECT_LOGGERS


def stderr_handler(worker_id: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.addFilter(ProjectLinesFilter(worker_id))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def harness_environment(args: argparse.Namespace) -> dict[str, str]:
    """What Beam's container boot gives `sdk_worker_main`: endpoints and the job's pipeline options."""
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2
    from google.protobuf import json_format, text_format

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(),
                metadata=[("worker_id", args.id)],
                timeout=60,
            )
            .info
        )

    def descriptor(url: str) -> str:
        return str(text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url)))

    return {
        "WORKER_ID": args.id,
        "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(args.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": descriptor(args.logging_endpoint),
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("id", "control_endpoint", "logging_endpoint", "provision_endpoint"):
        parser.add_argument(f"--{name}", required=True)
    args, _ = parser.parse_known_args(argv)
    sys.path.insert(0, str(PROJECT_ROOT))
    try:
        from apache_beam.runners.worker import sdk_worker_main
    except ImportError as error:
        print(
            f"sdk_harness: {sys.executable} cannot import Apache Beam ({error}); the worker pool must run "
            "the project's Python (.venv/bin/python)",
            file=sys.stderr,
            flush=True,
        )
        return 3
    environment = harness_environment(args)
    os.environ.update(environment)
    fn_log_handler, harness, _ = sdk_worker_main.create_harness(os.environ)
    logging.getLogger().addHandler(stderr_handler(args.id))
    print(READY, flush=True)
    try:
        harness.run()
    finally:
        if fn_log_handler:
            fn_log_handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
