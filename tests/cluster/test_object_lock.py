"""The commit lock on object stores, against real local servers: S3 (moto) and GCS (fake-gcs-server).

Each test runs on both stores (the slow-link one on S3 only). Contenders are threads of this process or
processes of their own (tests/cluster/lock_contender.py); every holder appends `enter` and `exit` to a
shared log, and no log may show two holders at once. A contender on a slow link (`SlowLink` in
tests/cluster/object_servers.py) acts on what the store told it half a second ago, which is where a lock
that writes, waits and reads back lets two holders in; a frozen process (SIGSTOP) is a holder that stops
renewing, as a dead one does, and comes back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.object_servers import S3_KEYS, SlowLink, s3_beam_args
from tests.conftest import PROJECT
from transforms.io.lock import CommitLock, CommitLockTimeout

BUCKET = "newsbeam-lock"
CONTENDERS = 8
DEAD_TOKEN = "dead-holder-token"


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, **S3_KEYS).create_bucket(Bucket=BUCKET)
    return s3_endpoint


@pytest.fixture(scope="module")
def gcs_bucket(gcs_endpoint: str) -> str:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
        from google.cloud.storage import Client

        Client.create_anonymous_client().create_bucket(BUCKET)
    return gcs_endpoint


@dataclass
class Store:
    """One object store: paths on it, its options for Beam, and raw access to plant or read objects."""

    scheme: str
    endpoint: str
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes | None]
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def output(self) -> str:
        return f"{self.scheme}://{BUCKET}/{self.prefix}"

    @property
    def lock_key(self) -> str:
        return f"{self.prefix}/_state/commit.lock"

    def beam_args(self, endpoint: str | None = None) -> list[str]:
        return s3_beam_args(endpoint or self.endpoint) if self.scheme == "s3" else []

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": endpoint or self.endpoint} if self.scheme == "gs" else {}

    def holder(self) -> dict[str, Any]:
        body = self.get(self.lock_key)
        return json.loads(body) if body else {}


@pytest.fixture(params=["s3", "gcs"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if request.param == "s3":
        import boto3

        endpoint = request.getfixturevalue("s3_bucket")
        client = boto3.client("s3", endpoint_url=endpoint, **S3_KEYS)

        def s3_get(key: str) -> bytes | None:
            with suppress(client.exceptions.NoSuchKey):
                return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            return None

        def s3_put(key: str, body: bytes) -> None:
            client.put_object(Bucket=BUCKET, Key=key, Body=body)

        found = Store("s3", endpoint, s3_put, s3_get)
    else:
        endpoint = request.getfixturevalue("gcs_bucket")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        from google.cloud.storage import Client

        bucket = Client.create_anonymous_client().bucket(BUCKET)

        def gcs_get(key: str) -> bytes | None:
            blob = bucket.get_blob(key)
            return None if blob is None else bytes(blob.download_as_bytes())

        found = Store("gs", endpoint, lambda key, body: bucket.blob(key).upload_from_string(body), gcs_get)
    previous = FileSystems._pipeline_options
    FileSystems.set_options(PipelineOptions(found.beam_args()))
    try:
        yield found
    finally:
        FileSystems.set_options(previous)


def dead_holders_lock() -> bytes:
    """The lock object of a holder that died an hour ago (it stopped renewing then)."""
    then = datetime.now(UTC) - timedelta(hours=1)
    return json.dumps(
        {"owner": "a dead run", "pid": 1, "host": "gone", "since": then.isoformat(), "token": DEAD_TOKEN,
         "lease": 60.0, "renewed": then.isoformat(), "expires": (then + timedelta(minutes=1)).isoformat(),
         "renewals": 0}
    ).encode()  # fmt: skip


def assert_one_holder_at_a_time(log: list[str]) -> None:
    holder: str | None = None
    for line in log:
        event, name = line.split(" ", 1)
        if event == "enter":
            assert holder is None, f"{name} entered while {holder} held the lock: {log}"
            holder = name
        else:
            assert holder == name, f"{name} left while {holder} held the lock: {log}"
            holder = None
    assert holder is None


def race(store: Store, rounds: int, plant: bytes | None = None) -> list[str]:
    """`rounds` times, CONTENDERS threads try the lock at once, once each (timeout 0).

    The winner holds it until every contender has tried, so each round must have exactly one.
    With `plant`, that object is written as the lock before each round.
    """
    log: list[str] = []
    errors: list[BaseException] = []

    def before_round() -> None:
        if plant is not None:
            store.put(store.lock_key, plant)

    start = threading.Barrier(CONTENDERS, action=before_round, timeout=60)
    tried = threading.Barrier(CONTENDERS, timeout=60)

    def contend(me: int) -> None:
        try:
            for round_ in range(rounds):
                start.wait()
                try:
                    with CommitLock(store.output, f"contender {me}", timeout=0, stale_after=60):
                        log.append(f"enter {me}.{round_}")
                        tried.wait()
                        log.append(f"exit {me}.{round_}")
                except CommitLockTimeout:
                    tried.wait()
        except BaseException as error:
            errors.append(error)
            start.abort()
            tried.abort()

    threads = [threading.Thread(target=contend, args=(me,)) for me in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return log


def test_contenders_racing_for_a_free_lock_never_hold_it_together(store: Store) -> None:
    rounds = 50
    log = race(store, rounds)
    assert_one_holder_at_a_time(log)
    winners = [line.split()[1].split(".")[1] for line in log if line.startswith("enter")]
    assert sorted(winners, key=int) == [str(r) for r in range(rounds)], "each round exactly one winner"
    assert store.get(store.lock_key) is None, "the last holder's release deletes the lock object"


def test_a_stale_lock_is_taken_over_by_exactly_one_contender(store: Store) -> None:
    rounds = 20
    log = race(store, rounds, plant=dead_holders_lock())
    assert_one_holder_at_a_time(log)
    winners = [line.split()[1].split(".")[1] for line in log if line.startswith("enter")]
    assert sorted(winners, key=int) == [str(r) for r in range(rounds)], "each stale lock taken over once"


def test_waiting_contenders_take_turns(store: Store) -> None:
    log: list[str] = []
    errors: list[BaseException] = []

    def contend(me: int) -> None:
        try:
            for turn in range(4):
                with CommitLock(store.output, f"waiter {me}", timeout=60, poll=0.005):
                    log.append(f"enter {me}.{turn}")
                    time.sleep(0.002)
                    log.append(f"exit {me}.{turn}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=contend, args=(me,)) for me in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert_one_holder_at_a_time(log)
    assert len(log) == 2 * 4 * CONTENDERS


class Contender:
    """tests/cluster/lock_contender.py in a process (and session) of its own."""

    def __init__(self, store: Store, tmp: Path, name: str, *options: str, endpoint: str | None = None):
        self.stderr = tmp / f"{name}.stderr"
        with self.stderr.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.cluster.lock_contender", store.output, name, str(tmp / "log"),
                 *options, "--", *store.beam_args(endpoint)],
                cwd=PROJECT, env=os.environ | store.env(endpoint), stdout=subprocess.PIPE, stderr=stderr,
                text=True, start_new_session=True,
            )  # fmt: skip

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        got = self.process.stdout.readline().strip()
        assert got == line, f"expected {line!r}, got {got!r}; stderr: {self.stderr.read_text()[-2000:]}"

    def finish(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def contenders() -> Iterator[list[Contender]]:
    started: list[Contender] = []
    yield started
    for contender in started:
        contender.kill()


def test_a_live_holder_keeps_the_lock_and_a_frozen_one_loses_it_and_says_so(
    store: Store, tmp_path: Path, contenders: list[Contender]
) -> None:
    lease = 2.0
    holder = Contender(store, tmp_path, "holder", "--hold", "6", "--stale-after", str(lease))
    contenders.append(holder)
    holder.expect("ready")
    holder.expect("held")
    started = time.monotonic()
    # Longer than a lease: a holder that renews is never taken over, however long it holds.
    expected = rf"holder \(pid {holder.process.pid} on "
    with (
        pytest.raises(CommitLockTimeout, match=expected),
        CommitLock(store.output, "impatient", timeout=1.5 * lease, stale_after=lease),
    ):
        pass
    assert time.monotonic() - started >= 1.5 * lease
    assert store.holder()["owner"] == "holder"
    # Frozen (a paused VM, or dead: to the others it is the same): no more renewals.
    os.killpg(holder.process.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    with CommitLock(store.output, "successor", timeout=30, stale_after=lease):
        took = time.monotonic() - frozen
        assert store.holder()["owner"] == "successor"
        os.killpg(holder.process.pid, signal.SIGCONT)  # it comes back and finds the lock gone
        assert holder.finish() == 3, "a holder that lost the lock must fail its commit"
        assert "CommitLockLost" in holder.stderr.read_text()
        assert store.holder()["owner"] == "successor", "the old holder deleted its successor's lock"
    assert 0.75 * lease <= took <= 5 * lease, f"taken over {took:.1f} s after its holder stopped"
    assert store.get(store.lock_key) is None


# S3 only: GCS's refusal of a write conditioned on a replaced generation is the mechanism the stale
# take-over race above exercises on both stores; this test costs two processes and a slow link.
@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_a_contender_acting_on_a_stale_view_never_overwrites_the_holder(
    store: Store, tmp_path: Path, contenders: list[Contender]
) -> None:
    """A dead holder's lock; a slow contender is told it is stale, and a fast one takes it over
    before the slow one acts on what it was told. A lock that writes, waits and reads back lets
    the slow one overwrite the fast one's lock while the fast one holds it."""
    store.put(store.lock_key, dead_holders_lock())
    with SlowLink(store.port, delay=0.5, watch=DEAD_TOKEN.encode()) as link:
        slow = Contender(store, tmp_path, "slow", "--hold", "0.1", "--poll", "0.02",
                         "--go", str(tmp_path / "go-slow"), endpoint=link.endpoint())  # fmt: skip
        fast = Contender(store, tmp_path, "fast", "--hold", "3.5", "--go", str(tmp_path / "go-fast"))
        contenders += [slow, fast]
        slow.expect("ready")
        fast.expect("ready")
        link.watched.clear()  # what the slow one read while warming up does not count
        (tmp_path / "go-slow").touch()
        assert link.watched.wait(60), "the slow contender never read the stale lock"
        (tmp_path / "go-fast").touch()
        assert fast.finish() == 0, fast.stderr.read_text()[-2000:]
        assert slow.finish() == 0, slow.stderr.read_text()[-2000:]
    log = [line.rsplit(" ", 1)[0] for line in (tmp_path / "log").read_text().splitlines()]
    assert not [line for line in log if line.startswith("overwritten")], log
    assert sorted(log) == ["enter fast", "enter slow", "exit fast", "exit slow"]
    assert_one_holder_at_a_time(log)
    assert store.get(store.lock_key) is None
