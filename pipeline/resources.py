"""Where the shipped configs and seeds are, found from the code, never from the working directory.

In a source checkout `configs/` and `seeds/` sit beside the packages; in an installed wheel they are
package data inside `pipeline/` (pyproject.toml maps both folders in). This module imports nothing
heavy: `newsbeam --help` names the default configs without importing Beam.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_path(name: str) -> Path:
    """`configs/local.yaml`, `seeds` or any path under them, as shipped with this copy of newsbeam."""
    installed = _PACKAGE / name
    return installed if installed.exists() else _PACKAGE.parent / name


def checkout_path(name: str) -> Path:
    """`.prism/bin/prism` or `.cluster/...` as `make` builds them in the checkout, from any directory.

    An installed copy has no checkout: there it is the working directory's (a clone's root).
    """
    in_checkout = _PACKAGE.parent / name
    return in_checkout if in_checkout.exists() or not Path(name).exists() else Path(name).resolve()


DEFAULT_CONFIG = shipped_path("configs/local.yaml")
STREAM_CONFIG = shipped_path("configs/streaming.yaml")
DATAFLOW_CONFIG = shipped_path("configs/dataflow.yaml")
