"""The commit lock on object stores: a lease object taken, renewed and released by conditional writes.

Object stores have no locks, but S3 and GCS decide a conditional write atomically: a create that
succeeds only if the object is absent (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`) and a write
that succeeds only if the object is still the version the writer saw (S3 `If-Match: <ETag>`, GCS
`ifGenerationMatch=<generation>`). Beam's `FileSystems` sends no preconditions, so this module calls
boto3 and google-cloud-storage directly, configured from the pipeline options Beam's own filesystems
read (`--s3_endpoint_url`, keys and region; Google credentials, or a local emulator named by
`STORAGE_EMULATOR_HOST`).

The protocol on one object, `OUTPUT/_state/commit.lock`, a JSON naming its holder:
- **take**: create it only if absent. Of any number of contenders, exactly one create succeeds.
- **hold**: the holder rewrites it every `lease / 4` seconds, conditioned on the version it wrote
  last, so the version changes for as long as the holder lives. Every body differs (the holder's
  token and a renewal count are in it), so an ETag never repeats.
- **take over**: a contender that has watched one version stay unchanged for a whole lease (by its
  own monotonic clock, so no two clocks need to agree), or whose holder's `expires` time passed more
  than a lease ago (tolerating clock skew up to a lease), rewrites it conditioned on exactly that
  version. Of several contenders one wins; a holder that renewed meanwhile makes them all lose.
- **release**: delete it conditioned on the holder's own version, so a holder that lost the lock
  never deletes its successor's.
A holder whose renewal finds another's version, or that could not renew for a whole lease, has lost
the lock; at release it says so (`ObjectLease.release` returns why) and `CommitLock` fails the commit
instead of reporting one the lock did not serialize. What no lock can prevent: a holder frozen for a
whole lease (a paused VM) that resumes and writes before its renewer notices.

Longer than ~400 lines for a reason: the two store clients (S3, GCS) sit beside the one protocol they
serve, and each is only read together with it; a third store would be the moment to give them a module.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger(__name__)

# One request to the store, and one call with its retries: well under a lease, so that a renewal that
# hangs cannot outlast it (botocore's and google-api-core's defaults allow minutes).
REQUEST_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    version: str  # S3: the ETag; GCS: the generation


class ConditionalObjects(Protocol):
    """One store's conditional writes; a condition that did not hold gives None (or False), not an error."""

    def read(self, path: str) -> StoredObject | None: ...

    def create(self, path: str, body: bytes) -> str | None:
        """The new version, or None when the object exists."""

    def replace(self, path: str, body: bytes, version: str) -> str | None:
        """The new version, or None when the object is no longer at `version` (or gone)."""

    def delete(self, path: str, version: str) -> bool:
        """Whether the object, still at `version`, was deleted."""


def split_path(path: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    _, _, rest = path.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ValueError(f"not an object path (scheme://bucket/key): {path!r}")
    return bucket, key


# --- S3 -------------------------------------------------------------------------------------------


def _s3_refused(error: Exception) -> bool:
    """A failed condition: 412, 409 (S3's answer while another conditional write to the key is in
    flight) or 404 (`If-Match` on a key that is gone)."""
    response: dict[str, Any] = getattr(error, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    return status in (404, 409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


class S3Objects:
    def __init__(self, client: Any) -> None:
        self._client = client

    def read(self, path: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        bucket, key = split_path(path)
        try:
            answer = self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return StoredObject(answer["Body"].read(), str(answer["ETag"]))

    def create(self, path: str, body: bytes) -> str | None:
        return self._put(path, body, IfNoneMatch="*")

    def replace(self, path: str, body: bytes, version: str) -> str | None:
        return self._put(path, body, IfMatch=version)

    def _put(self, path: str, body: bytes, **condition: str) -> str | None:
        from botocore.exceptions import ClientError

        bucket, key = split_path(path)
        try:
            answer = self._client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
        except ClientError as error:
            if _s3_refused(error):
                return None
            raise
        return str(answer["ETag"])

    def delete(self, path: str, version: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_path(path)
        try:
            self._client.delete_object(Bucket=bucket, Key=key, IfMatch=version)
        except ClientError as error:
            if _s3_refused(error):
                return False
            raise
        return True


# --- GCS ------------------------------------------------------------------------------------------


class GcsObjects:
    def __init__(self, client: Any) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self._client = client
        # Every write here is conditional, so a retry is safe (a retried write that had landed is
        # refused, and the lease then finds its own token).
        self._retry = DEFAULT_RETRY.with_timeout(CALL_TIMEOUT_S)

    def read(self, path: str) -> StoredObject | None:
        from google.api_core.exceptions import NotFound

        bucket, name = split_path(path)
        for _ in range(5):
            listed = self._client.bucket(bucket).get_blob(name, timeout=REQUEST_TIMEOUT_S, retry=self._retry)
            if listed is None:
                return None
            # Exactly the generation just listed, and from the client's own endpoint: a blob as
            # listed downloads from the server's `mediaLink`, another host behind a proxy or emulator.
            blob = self._client.bucket(bucket).blob(name, generation=listed.generation)
            try:
                body = blob.download_as_bytes(timeout=REQUEST_TIMEOUT_S, retry=self._retry)
            except NotFound:
                continue  # replaced or deleted between the two requests: look again
            return StoredObject(body, str(listed.generation))
        raise OSError(f"{path} changed on every one of 5 reads")

    def create(self, path: str, body: bytes) -> str | None:
        return self._upload(path, body, 0)

    def replace(self, path: str, body: bytes, version: str) -> str | None:
        return self._upload(path, body, int(version))

    def _upload(self, path: str, body: bytes, generation: int) -> str | None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        bucket, name = split_path(path)
        blob = self._client.bucket(bucket).blob(name)
        try:
            blob.upload_from_string(
                body,
                content_type="application/json",
                if_generation_match=generation,
                timeout=REQUEST_TIMEOUT_S,
                retry=self._retry,
            )
        except (PreconditionFailed, NotFound):
            return None
        return str(blob.generation)

    def delete(self, path: str, version: str) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        bucket, name = split_path(path)
        try:
            # Naming the generation as well: a delete of a replaced generation is a 404 even where
            # the precondition is not checked (fake-gcs-server ignores it on deletes).
            self._client.bucket(bucket).delete_blob(
                name,
                generation=int(version),
                if_generation_match=int(version),
                timeout=REQUEST_TIMEOUT_S,
                retry=self._retry,
            )
        except (PreconditionFailed, NotFound):
            return False
        return True


# --- clients from Beam's options -----------------------------------------------------------------


def _pipeline_options() -> Any:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.value_provider import RuntimeValueProvider

    # Where Beam's own filesystems find their options (FileSystems.get_filesystem reads the same two).
    options = FileSystems._pipeline_options or RuntimeValueProvider.runtime_options
    if isinstance(options, dict):
        return PipelineOptions.from_dictionary(options)
    return options if options is not None else PipelineOptions([])


_s3_clients: dict[tuple[Any, ...], Any] = {}
_s3_clients_lock = threading.Lock()


def _s3_client(options: Any) -> Any:
    """A boto3 client configured as Beam's S3 filesystem configures its own, with short timeouts.

    Built here rather than taken from Beam, whose client keeps botocore's 60 s timeouts and 5
    attempts: a renewal stuck that long would outlast the lease. One per configuration and process
    (boto3 clients are thread-safe; building one costs tens of milliseconds).
    """
    import boto3
    from apache_beam.options.pipeline_options import S3Options
    from botocore.config import Config

    s3 = options.view_as(S3Options)
    settings = (
        s3.s3_access_key_id, s3.s3_secret_access_key, s3.s3_session_token, s3.s3_endpoint_url,
        s3.s3_region_name, s3.s3_api_version, s3.s3_verify, s3.s3_disable_ssl,
    )  # fmt: skip
    with _s3_clients_lock:
        if settings not in _s3_clients:
            _s3_clients[settings] = boto3.session.Session().client(
                "s3",
                aws_access_key_id=s3.s3_access_key_id,
                aws_secret_access_key=s3.s3_secret_access_key,
                aws_session_token=s3.s3_session_token,
                endpoint_url=s3.s3_endpoint_url,
                region_name=s3.s3_region_name,
                api_version=s3.s3_api_version,
                verify=s3.s3_verify,
                use_ssl=not s3.s3_disable_ssl,
                config=Config(
                    connect_timeout=10, read_timeout=REQUEST_TIMEOUT_S, retries={"max_attempts": 3}
                ),
            )
        return _s3_clients[settings]


def _gcs_client(options: Any) -> Any:
    from google.cloud.storage import Client as StorageClient

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # A local emulator takes no credentials (google-cloud-storage's own rule for it); Beam's
        # credential lookup would first retry for about 20 s without finding any.
        return StorageClient.create_anonymous_client()
    from apache_beam.io.gcp.gcsio import create_storage_client

    # Beam's own GCS client (its credentials, project and impersonation); Beam too builds one per use.
    return create_storage_client(options)


CONDITIONAL_SCHEMES = ("s3", "gs")


def has_conditional_writes(path: str) -> bool:
    return path.partition("://")[0] in CONDITIONAL_SCHEMES


def conditional_objects(path: str) -> ConditionalObjects:
    """The conditional writes of the store `path` is on (s3:// or gs://)."""
    scheme = path.partition("://")[0]
    if scheme == "s3":
        return S3Objects(_s3_client(_pipeline_options()))
    if scheme == "gs":
        return GcsObjects(_gcs_client(_pipeline_options()))
    raise ValueError(f"the commit lock needs conditional writes, known for s3:// and gs:// only: {path!r}")


# --- the lease ------------------------------------------------------------------------------------


def _parse(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _instant(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


class ObjectLease:
    """One would-be holder's side of the protocol in the module docstring, for the lock object `path`.

    `info` (owner, pid, host, since, and a `token` unique to this holder) goes into the object; the
    lease adds `lease`, `renewed`, `expires` and `renewals`.
    """

    def __init__(self, path: str, info: dict[str, Any], lease: float, store: ConditionalObjects) -> None:
        if not info.get("token"):
            raise ValueError("a lease needs a token unique to its holder")
        self.path, self.lease = path, lease
        self._info, self._store = dict(info), store
        self._version: str | None = None
        self._renewals = 0
        self._watched: tuple[str, float] | None = None  # (version, monotonic time it was first seen)
        self._renewed_at = 0.0  # monotonic time the last successful write was sent
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._version is not None

    def _body(self) -> bytes:
        now = datetime.now(UTC)
        return json.dumps(
            self._info
            | {
                "lease": self.lease,
                "renewed": now.isoformat(timespec="milliseconds"),
                "expires": (now + timedelta(seconds=self.lease)).isoformat(timespec="milliseconds"),
                "renewals": self._renewals,
            }
        ).encode("utf-8")

    def try_acquire(self) -> dict[str, Any] | None:
        """None when this holder now has the lock, else what the lock object says of its holder."""
        if self.held:
            raise RuntimeError(f"{self.path} is already held by this lease")
        current = self._store.read(self.path)
        self._info["since"] = datetime.now(UTC).isoformat(timespec="seconds")
        if current is None:
            sent = time.monotonic()
            version = self._store.create(self.path, self._body())
            if version is None:
                return {}  # another contender created it first
            self._acquired(version, sent)
            return None
        holder = _parse(current.body)
        if holder.get("token") == self._info["token"]:
            # Our own create, whose answer was lost and then retried (the retry was refused): ours.
            self._acquired(current.version, time.monotonic())
            return None
        if not self._stale(current.version, holder):
            return holder
        sent = time.monotonic()
        version = self._store.replace(self.path, self._body(), current.version)
        if version is None:
            return holder  # another contender took it over first, or its holder renewed it just now
        log.warning(
            "took over the commit lock %s from %s (pid %s on %s), which stopped renewing it",
            self.path, holder.get("owner", "?"), holder.get("pid", "?"), holder.get("host", "?"),
        )  # fmt: skip
        self._acquired(version, sent)
        return None

    def _stale(self, version: str, holder: dict[str, Any]) -> bool:
        now = time.monotonic()
        if self._watched is None or self._watched[0] != version:
            self._watched = (version, now)
        # The longer of our lease and the holder's: a holder renews at a quarter of its own.
        lease = max(self.lease, _seconds(holder.get("lease")))
        if now - self._watched[1] >= lease:
            return True
        expires = _instant(holder.get("expires"))
        return expires is not None and datetime.now(UTC) - expires > timedelta(seconds=lease)

    def _acquired(self, version: str, sent: float) -> None:
        """Holding from now on: the renewer keeps the lease."""
        self._version, self._renewed_at, self._lost = version, sent, None
        self._stop.clear()
        self._renewer = threading.Thread(
            target=self._renew_while_held, name="commit-lock-renewer", daemon=True
        )
        self._renewer.start()

    def _renew_while_held(self) -> None:
        while not self._stop.wait(self.lease / 4):
            if not self._renew():
                return

    def _renew(self) -> bool:
        """Rewrite the lock object; False once the lock is lost (and renewing stops)."""
        assert self._version is not None
        self._renewals += 1
        sent = time.monotonic()
        try:
            version = self._store.replace(self.path, self._body(), self._version)
            if version is None:
                current = self._store.read(self.path)
                if current is not None and _parse(current.body).get("token") == self._info["token"]:
                    version = current.version  # our last renewal landed but its answer was lost
        except Exception as error:  # the store is unreachable: go on trying while the lease lasts
            if time.monotonic() - self._renewed_at < self.lease:
                log.warning("could not renew the commit lock %s: %s", self.path, error)
                return True
            return self._lose(f"it could not be renewed for {self.lease:.0f} s ({error})")
        if version is None:
            return self._lose("another process took it over after it went unrenewed for a whole lease")
        self._version, self._renewed_at = version, sent
        return True

    def _lose(self, why: str) -> bool:
        self._lost = why
        log.error("lost the commit lock %s: %s", self.path, why)
        return False

    def release(self) -> str | None:
        """Stop renewing and delete the lock object if it is still ours.

        Returns None when the lock was this holder's from take to release (no one else wrote the
        object meanwhile), else why it was lost.
        """
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self._version is None:
            return None
        self._version = None
        try:
            current = self._store.read(self.path)
        except Exception as error:
            if self._lost is None and time.monotonic() - self._renewed_at < self.lease:
                # Renewed within the lease, so still ours: it expires by itself for the next holder.
                log.warning("could not release the commit lock %s (%s); it expires in %.0f s", self.path,
                            error, self.lease)  # fmt: skip
                return None
            return self._lost or f"its release failed ({error}) after the lease ran out"
        if current is None or _parse(current.body).get("token") != self._info["token"]:
            return self._lost or "another process took it over"
        if not self._store.delete(self.path, current.version) and self._store.read(self.path) is not None:
            # Refused and still there: rewritten in the moment between our read and our delete.
            # (Refused and gone: our delete landed and its retry was refused.)
            return "another process took it over while it was being released"
        return None
