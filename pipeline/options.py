"""Beam pipeline options for a newsbeam run: the config's `beam_options`, the runner's needs, CLI flags.

Flags the CLI does not know (`--direct_num_workers=2`, `--project=...`) are Beam's (the CLI has
checked that a registered `PipelineOptions` class knows each) and pass through; later ones win, so
the order is the runner's defaults, the config, then the command line.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.runners import runner_options


def _flag(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}"] if value else []
    if isinstance(value, list):
        return [f"--{key}={item}" for item in value]
    return [f"--{key}={value}"]


def make_pipeline_options(
    runner: str, config_options: dict[str, Any], beam_args: list[str]
) -> PipelineOptions:
    flags = runner_options(runner)
    for key, value in config_options.items():
        flags += _flag(key, value)
    flags += beam_args
    return PipelineOptions(flags)
