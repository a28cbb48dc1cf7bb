"""Fetch one feed over HTTP the way a careful feed reader does, without ever raising.

`fetch()` returns a `FetchResult` for every outcome: a body, a 304, or a named error. It bounds
each request (connect and read timeouts, a total deadline, a body-size cap that also holds after
gzip/deflate decoding), follows redirects itself so that each hop is checked (only http/https,
never from a public host to a private, loopback or link-local address), and retries 5xx answers,
timeouts and dropped connections with exponential backoff and jitter, honouring `Retry-After` on
429 and 503 up to a cap. The session comes from `make_session()`, built once per worker.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS = frozenset({301, 308})
RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class FetchSettings:
    user_agent: str = "newsbeam/0.1 (+https://github.com/newsbeam/newsbeam)"
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 60.0  # for all attempts and redirects of one feed
    max_bytes: int = 20 * 1024 * 1024  # after decompression
    max_redirects: int = 5
    max_attempts: int = 3
    backoff_base: float = 0.5  # seconds; doubled per attempt, with full jitter
    max_retry_after: float = 30.0  # a longer Retry-After is not waited for: the fetch fails
    allow_private_hosts: bool = False  # True for feeds on an intranet (and for tests on 127.0.0.1)


@dataclass
class FetchResult:
    url: str
    final_url: str | None = None
    status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None
    error_type: str | None = None
    message: str | None = None
    attempts: int = 0
    elapsed_ms: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_type is None and self.status is not None and 200 <= self.status < 300

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class FetchError(Exception):
    def __init__(self, error_type: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


def make_session(settings: FetchSettings, pool_size: int = 32) -> requests.Session:
    session = requests.Session()
    # Retries and redirects are handled in fetch() so that each hop and attempt is checked.
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {"User-Agent": settings.user_agent, "Accept": FEED_ACCEPT, "Accept-Encoding": "gzip, deflate"}
    )
    return session


def is_private_address(host: str) -> bool:
    """True when any address the host resolves to is private, loopback, link-local or reserved."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False  # unresolvable: the request itself will fail with a clear error
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            return True
    return False


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


def fetch(
    session: requests.Session,
    url: str,
    settings: FetchSettings,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """GET one feed; every failure is a FetchResult with an error_type, never an exception."""
    started = time.monotonic()
    deadline = started + settings.total_timeout
    result = FetchResult(url=url)
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        for attempt in range(1, settings.max_attempts + 1):
            result.attempts = attempt
            try:
                _get_following_redirects(session, url, headers, settings, deadline, result)
                if result.status in RETRY_STATUSES or result.status == 429:
                    wait = _wait_before_retry(result, attempt, settings)
                    if wait is None or attempt == settings.max_attempts or time.monotonic() + wait > deadline:
                        result.error_type = f"http_{result.status}"
                        result.message = result.message or f"HTTP {result.status} after {attempt} attempts"
                        result.body = None
                        break
                    sleep(wait)
                    continue
                break
            except FetchError as error:
                result.error_type, result.message = error.error_type, str(error)
                if not error.retryable or attempt == settings.max_attempts:
                    break
                wait = _backoff(attempt, settings)
                if time.monotonic() + wait > deadline:
                    break
                sleep(wait)
                result.error_type = result.message = None
        if (
            result.error_type is None
            and result.status is not None
            and not (200 <= result.status < 300 or result.status == 304)
        ):
            result.error_type = f"http_{result.status}"
            result.message = f"HTTP {result.status}"
            result.body = None
    finally:
        result.elapsed_ms = int((time.monotonic() - started) * 1000)
    return result


def _backoff(attempt: int, settings: FetchSettings) -> float:
    return random.uniform(0, settings.backoff_base * 2 ** (attempt - 1))


def _wait_before_retry(result: FetchResult, attempt: int, settings: FetchSettings) -> float | None:
    if result.status in (429, 503):
        retry_after = retry_after_seconds(result.headers.get("retry-after"))
        if retry_after is not None:
            if retry_after > settings.max_retry_after:
                result.message = f"HTTP {result.status}: Retry-After {retry_after:.0f}s is over the cap"
                return None
            return retry_after
        if result.status == 429:
            return _backoff(attempt, settings) + 1.0
    return _backoff(attempt, settings)


def _check_target(url: str, origin_public: bool, settings: FetchSettings) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(
            "bad_redirect_scheme" if origin_public is not None else "bad_scheme",
            f"refusing non-http URL {url}",
        )
    host = parts.hostname or ""
    if not host:
        raise FetchError("bad_url", f"no host in {url}")
    if not settings.allow_private_hosts and is_private_address(host):
        raise FetchError("private_address", f"refusing {host}: a private, loopback or link-local address")


def _get_following_redirects(
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    settings: FetchSettings,
    deadline: float,
    result: FetchResult,
) -> None:
    current = url
    permanent = True
    for _hop in range(settings.max_redirects + 1):
        _check_target(current, True, settings)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timeout", f"total time limit of {settings.total_timeout:.0f}s reached")
        try:
            response = session.get(
                current,
                headers=headers,
                allow_redirects=False,
                stream=True,
                timeout=(min(settings.connect_timeout, remaining), min(settings.read_timeout, remaining)),
            )
        except requests.exceptions.ConnectTimeout as error:
            raise FetchError("connect_timeout", str(error), retryable=True) from error
        except requests.exceptions.ReadTimeout as error:
            raise FetchError("read_timeout", str(error), retryable=True) from error
        except requests.exceptions.SSLError as error:
            raise FetchError("tls_error", str(error)) from error
        except requests.exceptions.ConnectionError as error:
            raise FetchError("connection_error", str(error)[:300], retryable=True) from error
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, ValueError) as error:
            raise FetchError("bad_url", str(error)) from error
        with response:
            result.status = response.status_code
            result.final_url = current
            result.headers = {k.lower(): v for k, v in response.headers.items()}
            if response.status_code in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise FetchError("bad_redirect", f"HTTP {response.status_code} without Location")
                permanent = permanent and response.status_code in PERMANENT_REDIRECTS
                current = urljoin(current, location)
                if urlsplit(current).scheme not in ("http", "https"):
                    raise FetchError("bad_redirect_scheme", f"redirect to non-http URL {current}")
                continue
            if permanent and current != url:
                result.permanent_redirect = current
            result.etag = response.headers.get("etag")
            result.last_modified = response.headers.get("last-modified")
            result.content_type = response.headers.get("content-type")
            if response.status_code == 200:
                result.body = _read_body(response, settings, deadline)
            return
    raise FetchError("too_many_redirects", f"more than {settings.max_redirects} redirects from {url}")


def _read_body(response: requests.Response, settings: FetchSettings, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if (
        declared
        and declared.isdigit()
        and int(declared) > settings.max_bytes
        and not response.headers.get("content-encoding")
    ):
        raise FetchError("too_large", f"Content-Length {declared} is over the {settings.max_bytes}-byte cap")
    chunks: list[bytes] = []
    size = 0
    try:
        # decode_content=True: the cap counts decoded bytes, so a gzip bomb stops at the cap.
        for chunk in response.raw.stream(64 * 1024, decode_content=True):
            size += len(chunk)
            if size > settings.max_bytes:
                raise FetchError("too_large", f"body over the {settings.max_bytes}-byte cap (after decoding)")
            if time.monotonic() > deadline:
                raise FetchError(
                    "timeout",
                    f"total time limit of {settings.total_timeout:.0f}s reached mid-body",
                    retryable=False,
                )
            chunks.append(chunk)
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as error:
        raise FetchError("read_timeout", f"stalled mid-body: {error}", retryable=True) from error
    except urllib3.exceptions.DecodeError as error:
        raise FetchError("bad_encoding", f"undecodable content-encoding: {error}") from error
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead, ConnectionError) as error:
        raise FetchError(
            "connection_error", f"connection broken mid-body: {error}", retryable=True
        ) from error
    return b"".join(chunks)


def now_utc() -> datetime:
    return datetime.now(UTC)
