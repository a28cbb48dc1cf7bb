"""Per-host politeness that holds across worker processes: concurrency slots and request spacing.

Article pages are fetched where their articles are (inside the fused stage, so no page text ever
crosses a shuffle), which means the pages of one host are fetched by every worker process at once.
The limits therefore live in the file system, in a run-scoped folder that all workers of the run
share, and the kernel arbitrates:

- a host has `max_per_host` slot files; a request holds an exclusive `flock` on one of them for as
  long as it runs, so at most that many requests to a host are in flight, whatever the number of
  processes and threads. A lock dies with its holder (a crashed worker frees its slot at once);
- a host's next allowed start time is kept in a small file, read and advanced under an `flock`:
  each request reserves the next start (`interval` after the previous one: the per-host rate, or
  the host's robots.txt `Crawl-delay` when longer), then waits for it outside the lock.

`flock` conflicts between separate `open()`s in one process too, so threads are limited the same way.
It needs one machine's kernel: local runners (DirectRunner with `multi_processing`, Prism, Flink and
Spark in local mode) share the folder. On Dataflow each worker VM has its own folder, so the limits
hold per VM: a run with N workers sends at most N x `max_per_host` requests to one host at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^a-z0-9.-]+")
_POLL_SECONDS = (0.005, 0.03)  # wait between tries for a free slot: short, jittered
_TIME = struct.Struct("<d")


def host_file_stem(host: str) -> str:
    """A file-name-safe, collision-free stem for a host key (`name:port`)."""
    readable = _UNSAFE.sub("_", host.lower())[:60]
    return f"{readable}-{hashlib.sha256(host.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


@dataclass(frozen=True)
class HostWait:
    """How long a request waited before it was sent: for a free slot, then for its start time."""

    slot_seconds: float
    rate_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.slot_seconds + self.rate_seconds


class HostLimiter:
    """`with limiter.request(host, interval): ...` runs the body under the host's limits."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        max_per_host: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_per_host < 1:
            raise ValueError("max_per_host must be at least 1")
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._max_per_host = max_per_host
        self._sleep = sleep

    @contextlib.contextmanager
    def request(self, host: str, interval: float = 0.0) -> Iterator[HostWait]:
        """Hold one of the host's slots, and start no sooner than `interval` after its last request."""
        stem = host_file_stem(host)
        started = time.monotonic()
        fd = self._take_slot(stem)
        try:
            slot_seconds = time.monotonic() - started
            rate_seconds = self._wait_for_turn(stem, interval)
            yield HostWait(slot_seconds, rate_seconds)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def hold_off(self, host: str, seconds: float) -> None:
        """No request to the host starts in the next `seconds` (a 429's Retry-After, a retry's backoff)."""
        self._advance(host_file_stem(host), lambda now, next_start: max(next_start, now + seconds))

    def _take_slot(self, stem: str) -> int:
        paths = [self._folder / f"{stem}.slot{index}" for index in range(self._max_per_host)]
        while True:
            # Slots are tried in a random order, so that waiting threads do not all queue on slot 0.
            for path in random.sample(paths, len(paths)):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return fd
            self._sleep(random.uniform(*_POLL_SECONDS))

    def _wait_for_turn(self, stem: str, interval: float) -> float:
        """Reserve this request's start time (the host's next start, or now) and wait for it."""
        reserved: list[float] = []

        def reserve(now: float, next_start: float) -> float:
            start = max(now, next_start)
            reserved.extend((start - now,))
            return start + max(interval, 0.0)

        self._advance(stem, reserve)
        wait = reserved[0]
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def _advance(self, stem: str, step: Callable[[float, float], float]) -> None:
        """Set the host's next start time to `step(now, next_start)`, under the host's clock lock."""
        # time.time(): one clock for every process of the machine
        _update_time_file(self._folder / f"{stem}.next", lambda stored: step(time.time(), stored or 0.0))


def _read_time_file(path: Path) -> float | None:
    """The time an 8-byte file holds (written whole at offset 0 by `_update_time_file`), None if none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return _TIME.unpack(raw)[0] if len(raw) == _TIME.size else None


def _update_time_file(path: Path, step: Callable[[float | None], float]) -> None:
    """Replace the time in `path` by `step(stored time or None)`, under an `flock` of the file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, _TIME.size, 0)
        os.pwrite(fd, _TIME.pack(step(_TIME.unpack(raw)[0] if len(raw) == _TIME.size else None)), 0)
    finally:
        os.close(fd)  # closing releases the lock


class LastAnswers:
    """When each feed last answered a poll, in files the machine's worker processes share.

    A streaming poll starts no sooner than its interval after the feed's last answer. The process
    that polled last knows that moment, and so does the shard's Beam state once its bundle ends;
    a process that never polled the feed, reading a state from before its last poll (a state
    restored from a checkpoint, a new SDK worker), knew neither and went by its tick alone: 1-2 ms
    under the interval on Flink. Files are named by a digest of the feed's URL (which may hold
    credentials) and hold 8 bytes, read and written whole at offset 0.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)

    def _path(self, feed: str) -> Path:
        digest = hashlib.sha256(feed.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self._folder / f"{digest}.answered"

    def last(self, feed: str) -> float | None:
        """Epoch seconds of the feed's last answer on this machine, None before any."""
        return _read_time_file(self._path(feed))

    def record(self, feed: str, answered_at: float) -> None:
        """Keep `answered_at` unless a later answer is known (two polls' ends may race)."""
        _update_time_file(
            self._path(feed), lambda known: answered_at if known is None else max(known, answered_at)
        )
