"""PrismServer: the Prism process it starts never outlives it, even when start-up is interrupted.

A real child process stands in for Prism (a script that never listens), so the test needs no
Prism build: what is checked is the process handling, which is the same for any binary.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import pytest

from pipeline.runners import PrismServer
from tests.stream_scenario import process_alive, wait_for


def test_a_ctrl_c_during_start_up_stops_the_runner_it_started(tmp_path: Path) -> None:
    never_listens = tmp_path / "prism"
    never_listens.write_text("#!/bin/sh\nexec sleep 120\n")
    never_listens.chmod(0o755)
    server = PrismServer(never_listens, start_timeout=60)
    started: list[int] = []

    def interrupt(number: int, frame: FrameType | None) -> None:
        if server.pid is not None:
            started.append(server.pid)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(KeyboardInterrupt), server:
            pytest.fail("a runner that never listens cannot have started")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert started, "the interrupt came before the runner was started"
    assert wait_for(lambda: not process_alive(started[0]), 15), f"runner pid {started[0]} left running"
    assert not server.log_path.exists()
