"""Flex Template entry point: turn the template's parameters into `newsbeam launch` arguments.

The Flex Template launcher runs this file with the parameters of deploy/dataflow/metadata.json as
`--name=value` flags, plus the Dataflow options it fills in itself (project, region, staging and temp
locations, template-specific flags); those pass through to Beam untouched. A scheduled run (Cloud
Scheduler -> flexTemplates:launch) is then the same as `newsbeam launch --runner dataflow ...`.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli import main as newsbeam_main


def template_argv(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", default="configs/dataflow.yaml")
    parser.add_argument("--inputs", default=None, help="comma-separated gs://, s3:// globs or http(s) URLs")
    parser.add_argument("--output", default=None)
    parser.add_argument("--run_id", default=None)
    known, beam_args = parser.parse_known_args(argv)
    args = ["launch", "--runner", "dataflow", "--config", known.config]
    if known.inputs:
        args += ["--input", *[item.strip() for item in known.inputs.split(",") if item.strip()]]
    if known.output:
        args += ["--output", known.output]
    if known.run_id:
        args += ["--run-id", known.run_id]
    return args + beam_args


if __name__ == "__main__":
    sys.exit(newsbeam_main(template_argv(sys.argv[1:])))
