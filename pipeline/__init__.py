"""newsbeam's composition layer: CLI, options, config loading, pipeline building, runner choice.

The Python API is `run_batch` (pipeline/run.py) with `Settings` and `load_settings`
(pipeline/config.py); they are imported on first use, so that `newsbeam --help` imports no Beam.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

# Google's client libraries, which Beam imports when the `gcp` extra is installed, print deprecation
# notices (grpcio, Python versions) on every start: not the user's concern, and they would come
# before newsbeam's own one-line errors.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")

if TYPE_CHECKING:
    from pipeline.config import ConfigError, Settings, load_settings
    from pipeline.run import BatchResult, RunCounts, run_batch

__all__ = ["BatchResult", "ConfigError", "RunCounts", "Settings", "load_settings", "run_batch"]

_HOMES = {
    "BatchResult": "pipeline.run",
    "RunCounts": "pipeline.run",
    "run_batch": "pipeline.run",
    "ConfigError": "pipeline.config",
    "Settings": "pipeline.config",
    "load_settings": "pipeline.config",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
