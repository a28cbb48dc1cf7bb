"""The commit lock: commits (runs, panes, compaction, pruning) publish by renames and must not interleave.

On a local or POSIX filesystem the lock is `fcntl.flock` on `OUTPUT/_state/commit.lock`: the kernel
releases it when its holder dies, even by SIGKILL, so a crashed run can never leave it behind; the
file also names the holder (pid, host, since) for a clear message to whoever waits. Object stores
have no locks: on s3:// and gs:// the lock is a lease object written only by conditional requests
(created if absent, renewed every `stale_after / 4` seconds, taken over atomically once unrenewed
for `stale_after` seconds, deleted only by its holder; see transforms/io/object_lock.py). A holder
that lost it fails its commit with `CommitLockLost`. Other remote filesystems (hdfs://, azfs://) keep
the best-effort lock newsbeam had everywhere before: write, wait a second, read back.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.io.object_lock import ObjectLease, conditional_objects, has_conditional_writes
from transforms.io.paths import STATE_DIR, is_local, join_path

# The best-effort lock of filesystems without conditional writes is not renewed: a commit may last this long.
UNCONDITIONAL_STALE_AFTER_S = 900.0
LOCK_NAME = "commit.lock"

log = logging.getLogger(__name__)


class CommitLockTimeout(RuntimeError):
    """Another commit held the lock for longer than we were willing to wait."""


class CommitLockLost(RuntimeError):
    """An object store's commit lock was taken over while held: the commit was not serialized."""


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    return (
        f"{info.get('owner', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('since', '?')})"
    )


class CommitLock:
    """Exclusive lock around the commit steps of one output (see the module docstring).

    Waits up to `timeout` seconds, then raises `CommitLockTimeout` naming the holder. On object
    stores `stale_after` is the lease: the holder renews it every quarter of it, and a holder that
    has not renewed it for that long is taken over; waits there back off from `poll` to at most
    20 times `poll` (2 s by default), each with jitter, so that waiters do not poll in step.
    """

    def __init__(
        self,
        output: str,
        owner: str,
        timeout: float = 600.0,
        stale_after: float = 120.0,
        poll: float = 0.1,
    ) -> None:
        self.path = join_path(output, STATE_DIR, LOCK_NAME)
        self._owner, self._timeout, self._stale_after, self._poll = owner, timeout, stale_after, poll
        self._fd: int | None = None
        self._lease: ObjectLease | None = None
        self._held_unconditionally = False
        self._token = uuid.uuid4().hex

    def _info(self) -> dict[str, Any]:
        return {
            "owner": self._owner,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": self._token,
        }

    def __enter__(self) -> CommitLock:
        deadline = time.monotonic() + self._timeout
        told = False
        wait = self._poll
        while True:
            holder = self._try_acquire()
            if holder is None:
                return self
            if time.monotonic() >= deadline:
                raise CommitLockTimeout(
                    f"the commit lock {self.path} is held by {_holder_text(holder)}; "
                    f"gave up after {self._timeout:.0f}s. Another newsbeam run, compact or prune is "
                    "committing to this output; try again when it is done"
                )
            if not told:
                log.warning("waiting for the commit lock held by %s", _holder_text(holder))
                told = True
            if is_local(self.path):
                time.sleep(self._poll)
            else:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
                wait = min(wait * 2, 20 * self._poll, 2.0)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self.release()
        except CommitLockLost:
            if kind is None:
                raise
            log.exception("while failing with %s", kind.__name__)  # the first error is the one to see

    def _try_acquire(self) -> dict[str, Any] | None:
        """None when acquired, else what is known of the holder."""
        if is_local(self.path):
            import fcntl

            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
                    holder: dict[str, Any] = json.loads(text) if text.strip() else {}
                except ValueError:
                    holder = {}
                os.close(fd)
                return holder
            self._fd = fd
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(self._info()).encode("utf-8"), 0)
            except OSError as error:  # a full disk: the lock is held all the same, only unnamed
                log.warning("the commit lock %s is held but cannot name its holder: %s", self.path, error)
            return None
        if not has_conditional_writes(self.path):
            return self._try_acquire_unconditionally()
        if self._lease is None:
            store = conditional_objects(self.path)
            self._lease = ObjectLease(self.path, self._info(), self._stale_after, store)
        return self._lease.try_acquire()

    def _try_acquire_unconditionally(self) -> dict[str, Any] | None:
        # No conditional create known for this filesystem: write, wait, read back (racy, see the README).
        if FileSystems.exists(self.path):
            holder = _read_json(self.path)
            since = holder.get("since")
            age = (datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds() if since else 1e9
            if age < UNCONDITIONAL_STALE_AFTER_S:
                return holder
            log.warning("taking over the stale commit lock of %s", _holder_text(holder))
        log.warning("%s has no conditional writes: its commit lock is best effort", self.path)
        with FileSystems.create(self.path) as stream:
            stream.write(json.dumps(self._info()).encode("utf-8"))
        time.sleep(1.0)
        holder = _read_json(self.path)
        self._held_unconditionally = holder.get("token") == self._token
        return None if self._held_unconditionally else holder

    def release(self) -> None:
        """Release the lock; raises `CommitLockLost` when an object store's lock was taken over."""
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._held_unconditionally:
            self._held_unconditionally = False
            if FileSystems.exists(self.path) and _read_json(self.path).get("token") == self._token:
                FileSystems.delete([self.path])
        elif self._lease is not None:
            lease, self._lease = self._lease, None
            lost = lease.release()
            if lost is not None:
                raise CommitLockLost(
                    f"the commit lock {self.path} of {self._owner} was lost while held: {lost}. Another "
                    "commit may have run at the same time as this one; its manifest lists what it published"
                )


def lock_holder(output: str) -> dict[str, Any] | None:
    """Who holds the commit lock now (local outputs), or None when it is free."""
    path = join_path(output, STATE_DIR, LOCK_NAME)
    if not is_local(path) or not os.path.exists(path):
        return None
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
            try:
                return dict(json.loads(text)) if text.strip() else {}
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_json(path: str) -> dict[str, Any]:
    try:
        with FileSystems.open(path) as stream:
            return dict(json.loads(stream.read().decode("utf-8")))
    except (OSError, ValueError):
        return {}
