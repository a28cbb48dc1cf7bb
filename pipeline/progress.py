"""Progress of a batch run while it runs: inputs read (of how many), articles, dead letters, elapsed.

Beam's in-process runner reports its metrics only when the pipeline has finished, so the pipeline
tells the CLI itself: `CountProgress` steps, fused into the stages that read and process (no
shuffle), send their counts as small UDP datagrams to a `ProgressListener` on 127.0.0.1 in the
launching process. That works for every worker on this machine (in-process, `multi_processing`,
Prism's loopback workers); workers elsewhere (Flink, Dataflow) cannot reach it, and the CLI adds the
steps only for local runners. A lost datagram costs a moment of stale progress, never the run.

On a terminal the counts drive a tqdm bar; otherwise (cron, Airflow) a plain log line every
`interval` seconds, and always one at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

import apache_beam as beam

PROGRESS_KINDS = ("inputs", "articles", "dead_letters")
_FLUSH_SECONDS = 0.2
log = logging.getLogger("newsbeam.progress")


class CountProgress(beam.DoFn):
    """Counts the elements passing by and sends the count to the listener; emits nothing."""

    def __init__(self, address: tuple[str, int], kind: str) -> None:
        self._address = address
        self._kind = kind
        self._socket: socket.socket | None = None
        self._pending = 0
        self._last_sent = 0.0

    def setup(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def process(self, element: Any) -> Iterator[Any]:
        self._pending += 1
        if time.monotonic() - self._last_sent >= _FLUSH_SECONDS:
            self._send()
        return iter(())

    def finish_bundle(self) -> None:
        self._send()

    def teardown(self) -> None:
        if self._socket is not None:
            self._socket.close()

    def _send(self) -> None:
        self._last_sent = time.monotonic()
        if not self._pending or self._socket is None:
            return
        with contextlib.suppress(OSError):  # progress is best effort; the run never waits on it
            self._socket.sendto(json.dumps({self._kind: self._pending}).encode(), self._address)
            self._pending = 0


class ProgressListener:
    """Receives `CountProgress` datagrams on 127.0.0.1 (a port the OS picks) and sums them."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.address: tuple[str, int] = self._socket.getsockname()
        self._counts = dict.fromkeys(PROGRESS_KINDS, 0)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="newsbeam-progress", daemon=True)
        self._thread.start()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _receive(self) -> None:
        while not self._stopped.is_set():
            try:
                self._take(self._socket.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    def _take(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        with self._lock:
            for kind, count in message.items():
                if kind in self._counts and isinstance(count, int):
                    self._counts[kind] += count

    def close(self) -> None:
        """Stop, after taking the datagrams already sent (the steps send their last ones at bundle end)."""
        self._stopped.set()
        self._thread.join(timeout=2)
        self._socket.setblocking(False)
        with contextlib.suppress(OSError):
            while True:
                self._take(self._socket.recv(65536))
        self._socket.close()


def progress_line(counts: dict[str, int], total_inputs: int | None, elapsed: float) -> str:
    of_total = f"/{total_inputs}" if total_inputs is not None else ""
    return (
        f"{counts['inputs']}{of_total} inputs read, {counts['articles']} articles processed, "
        f"{counts['dead_letters']} dead letters, {elapsed:.0f}s elapsed"
    )


class ProgressDisplay:
    """Shows the listener's counts: a tqdm bar on a terminal, else a log line every `interval` s."""

    def __init__(
        self,
        listener: ProgressListener,
        run_id: str,
        total_inputs: int | None,
        interval: float,
        stream: TextIO | None = None,
    ) -> None:
        self._listener = listener
        self._run_id = run_id
        self._total = total_inputs
        self._interval = interval
        self._stream = stream or sys.stderr
        self._started = time.monotonic()
        self._stopped = threading.Event()
        self._bar: Any = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_inputs,
                desc=f"newsbeam run {run_id}",
                unit=" inputs",
                file=self._stream,
                dynamic_ncols=True,
                leave=False,
            )
        self._thread = threading.Thread(target=self._show, name="newsbeam-progress-display", daemon=True)
        self._thread.start()

    def _show(self) -> None:
        last_line = time.monotonic()
        while not self._stopped.wait(0.25 if self._bar is not None else min(self._interval, 1.0)):
            if self._bar is not None:
                self._update_bar()
            elif time.monotonic() - last_line >= self._interval:
                last_line = time.monotonic()
                self._log()

    def _update_bar(self) -> None:
        counts = self._listener.counts()
        self._bar.n = counts["inputs"]
        self._bar.set_postfix_str(
            f"{counts['articles']} articles, {counts['dead_letters']} dead letters", refresh=False
        )
        self._bar.refresh()

    def _log(self) -> None:
        elapsed = time.monotonic() - self._started
        line = progress_line(self._listener.counts(), self._total, elapsed)
        log.info("newsbeam run %s: %s", self._run_id, line)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2)
        if self._bar is not None:
            self._update_bar()
            self._bar.close()
        else:
            self._log()


@contextlib.contextmanager
def showing_progress(run_id: str, total_inputs: int | None, interval: float) -> Iterator[tuple[str, int]]:
    """A listener and its display for the duration of a run; yields the address the steps send to."""
    listener = ProgressListener()
    display = ProgressDisplay(listener, run_id, total_inputs, interval)
    try:
        yield listener.address
    finally:
        listener.close()
        display.close()
