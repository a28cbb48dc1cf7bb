"""Fault points: named steps of a commit where a test can stop a process, to kill it exactly there.

`fault_point(name)` marks the steps of a commit. When `NEWSBEAM_PAUSE_AT` names one, the process
writes the name to `NEWSBEAM_PAUSE_MARKER` and waits there until the test removes that file, so that
a test can kill it at exactly that point (or let it go on at the moment it chooses). Without the
variable it does nothing.
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "NEWSBEAM_PAUSE_AT"
PAUSE_MARKER_ENV = "NEWSBEAM_PAUSE_MARKER"


def fault_point(name: str) -> None:
    """Pause forever at `name` when the test hook asks for it (see the module docstring)."""
    target = os.environ.get(PAUSE_ENV)
    if not target or target != name:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if not marker:
        time.sleep(3600)
        return
    with open(f"{marker}.tmp", "w", encoding="utf-8") as stream:
        stream.write(f"{name} {os.getpid()}\n")
    os.replace(f"{marker}.tmp", marker)
    deadline = time.monotonic() + 3600
    while os.path.exists(marker) and time.monotonic() < deadline:  # the test removes it to resume
        time.sleep(0.05)
