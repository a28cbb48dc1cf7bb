"""PrismServer: the Prism process it starts never outlives it, even when start-up is interrupted.

A real child process stands in for Prism (a script that never listens), so the test needs no
Prism build: what is checked is the process handling, which is the same for any binary. The
Ctrl-C is a real SIGINT to a Python process of its own: an interrupt raised inside the test process
can land while a thread holds a lock (logging's, once) and hang every later test.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import PROJECT
from tests.stream_scenario import process_alive, wait_for

# Starts a PrismServer and, once interrupted, stays alive until its stdin closes: the runner must be
# stopped by PrismServer itself, not by this process exiting (its runner dies with its parent).
INTERRUPTED_START = """
import sys
from pathlib import Path
from pipeline.runners import PrismServer

server = PrismServer(Path(sys.argv[1]), start_timeout=60)
print(server.log_path, flush=True)
try:
    with server:
        print("started", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.stdin.read()
"""


def test_a_ctrl_c_during_start_up_stops_the_runner_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "prism.pid"
    never_listens = tmp_path / "prism"
    part, done = shlex.quote(f"{pid_file}.part"), shlex.quote(str(pid_file))
    never_listens.write_text(f"#!/bin/sh\necho $$ > {part} && mv {part} {done}\nexec sleep 120\n")
    never_listens.chmod(0o755)
    launcher = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_START, str(never_listens)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    assert launcher.stdin is not None and launcher.stdout is not None
    # Every read of its output ends in bounded time, even if the launcher hangs: it is killed.
    watchdog = threading.Timer(90, launcher.kill)
    watchdog.start()
    runner_pid = None
    try:
        log_path = Path(launcher.stdout.readline().strip())
        assert wait_for(pid_file.exists, 30), "the runner was not started"
        runner_pid = int(pid_file.read_text())
        assert process_alive(runner_pid)
        launcher.send_signal(signal.SIGINT)  # the launcher only: the runner has its own session
        assert launcher.stdout.readline().strip() == "interrupted"
        assert wait_for(lambda: not process_alive(runner_pid), 15), f"runner pid {runner_pid} left running"
        assert launcher.poll() is None  # stopped by PrismServer, its launcher still alive
        assert not log_path.exists()
        launcher.stdin.close()
        assert launcher.wait(timeout=15) == 0
    finally:
        watchdog.cancel()
        if launcher.poll() is None:
            launcher.kill()
        if runner_pid is not None and process_alive(runner_pid):
            subprocess.run(["kill", "-9", str(runner_pid)], check=False)
