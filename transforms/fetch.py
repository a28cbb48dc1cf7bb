"""Fetch one feed (or page) over HTTP the way a careful feed reader does, without ever raising.

`fetch()` returns a `FetchResult` for every outcome: a body, a 304, or a named error. It bounds
each request: connect and read timeouts, a total deadline enforced on the socket itself
(`transforms.fetch_connection`), and a body-size cap that also holds after gzip/deflate decoding:
urllib3 2 decodes in bounded steps (`HTTPResponse.stream(amt)` never inflates more than `amt`
bytes at a time), so a gzip bomb never inflates past the cap. It follows redirects itself so that
each hop is checked: only http/https, and the address rule of `transforms.fetch_connection` on
every connection (private addresses, DNS rebinding, redirects from public to private hosts).
It retries 5xx answers, timeouts and dropped connections with exponential backoff and full
jitter, honouring `Retry-After` on 429 and 503 up to a cap. A conditional GET sends the stored
`ETag` / `Last-Modified`; a 304 is a success without a body.

Credentials in a URL are sent as basic auth to its origin only and never recorded
(`transforms.credentials`). The session comes from `make_session()`, built once per worker in a
`DoFn.setup()`.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from transforms.credentials import basic_auth, same_origin, split_credentials
from transforms.credentials import carry_credentials as carry_credentials
from transforms.credentials import redact_url as redact_url
from transforms.fetch_connection import HOP, HopPolicy, PinnedAdapter, ip_is_private
from transforms.source_errors import FetchError
from transforms.source_errors import error_class as error_class

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS = frozenset({301, 308})
RETRY_STATUSES = frozenset({500, 502, 503, 504})
CHUNK_BYTES = 64 * 1024


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
    max_concurrent: int = 16  # feeds fetched at once per worker
    max_per_host: int = 2  # requests at once to one host, across all workers


@dataclass
class FetchResult:
    url: str  # as requested, redacted; final_url and permanent_redirect never carry credentials
    final_url: str | None = None
    status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    max_age: int | None = None  # Cache-Control max-age of the final answer, in seconds
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
        return self.error_type is None and self.status == 304

    @property
    def error_class(self) -> str | None:
        return error_class(self.error_type)


def make_session(settings: FetchSettings, pool_size: int | None = None) -> requests.Session:
    session = requests.Session()
    size = pool_size or max(settings.max_concurrent, 1)
    # Retries and redirects are handled in fetch() so that each hop and attempt is checked.
    adapter = PinnedAdapter(pool_connections=size, pool_maxsize=size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {"User-Agent": settings.user_agent, "Accept": FEED_ACCEPT, "Accept-Encoding": "gzip, deflate"}
    )
    return session


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.I)


def max_age_seconds(cache_control: str | None) -> int | None:
    """`max-age` of a Cache-Control header (0 for no-cache / no-store); None when absent."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-cache" in lowered or "no-store" in lowered:
        return 0
    ages = {name.lower(): int(value) for name, value in _MAX_AGE.findall(cache_control)}
    return ages.get("max-age", ages.get("s-maxage"))


def fetch(
    session: requests.Session,
    url: str,
    settings: FetchSettings,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """GET one URL; every failure is a FetchResult with an error_type, never an exception.

    Credentials in `url` are sent as basic auth to its origin; the result names the URL redacted.
    """
    started = time.monotonic()
    deadline = started + settings.total_timeout
    result = FetchResult(url=redact_url(url))
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
                    result.message = None
                    continue
                break
            except FetchError as error:
                result.error_type, result.message = error.error_type, str(error)[:500]
                result.body = None
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
    except Exception as error:  # a bug or an exotic library error stays this feed's problem
        result.error_type, result.message = (
            "fetch_crash",
            redact_url(f"{type(error).__name__}: {error}")[:500],
        )
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
            return _backoff(attempt, settings) + settings.backoff_base
    return _backoff(attempt, settings)


def check_url(url: str, *, redirect: bool = False) -> str:
    """Refuse a URL fetch() must not request (not http/https, no host); returns its host.

    Where the host may be reached is the address rule's job, at connect time (`check_addresses`).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(
            "bad_redirect_scheme" if redirect else "bad_scheme",
            f"refusing non-http URL {url[:200]}" + (" (redirect target)" if redirect else ""),
        )
    try:
        host = parts.hostname or ""
    except ValueError as error:
        raise FetchError("bad_url", f"{url[:200]}: {error}") from error
    if not host:
        raise FetchError("bad_url", f"no host in {url[:200]}")
    return host


def _timed_out(kind: str, error: Exception, settings: FetchSettings, deadline: float) -> FetchError:
    if time.monotonic() >= deadline:  # the deadline, not one slow read: not worth a retry
        return FetchError("timeout", f"total time limit of {settings.total_timeout:g}s reached")
    return FetchError(kind, str(error)[:300], retryable=True)


def _get_following_redirects(
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    settings: FetchSettings,
    deadline: float,
    result: FetchResult,
) -> None:
    listed, credentials = split_credentials(url)
    current = listed
    seen = {listed}
    permanent = True
    from_public: bool | None = None
    for _hop in range(settings.max_redirects + 1):
        check_url(current, redirect=from_public is not None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timeout", f"total time limit of {settings.total_timeout:g}s reached")
        connected: list[str] = []
        hop = HopPolicy(settings.allow_private_hosts, from_public, deadline, connected)
        token = HOP.set(hop)
        try:
            response = session.get(
                current,
                headers=headers,
                auth=basic_auth(credentials) if credentials and same_origin(listed, current) else None,
                allow_redirects=False,
                stream=True,
                timeout=(min(settings.connect_timeout, remaining), min(settings.read_timeout, remaining)),
            )
        except requests.exceptions.ConnectTimeout as error:
            raise _timed_out("connect_timeout", error, settings, deadline) from error
        except requests.exceptions.ReadTimeout as error:
            raise _timed_out("read_timeout", error, settings, deadline) from error
        except requests.exceptions.SSLError as error:
            raise FetchError("tls_error", str(error)[:300]) from error
        except requests.exceptions.ConnectionError as error:
            raise FetchError("connection_error", str(error)[:300], retryable=True) from error
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, ValueError) as error:
            raise FetchError("bad_url", str(error)[:300]) from error
        finally:
            HOP.reset(token)
        with response:
            from_public = bool(connected) and not any(ip_is_private(ip) for ip in connected)
            result.status = response.status_code
            result.final_url = current
            result.headers = {k.lower(): v for k, v in response.headers.items()}
            if response.status_code in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise FetchError("bad_redirect", f"HTTP {response.status_code} without Location")
                permanent = permanent and response.status_code in PERMANENT_REDIRECTS
                # Credentials in a Location are dropped, never followed: they would be recorded.
                current = split_credentials(urljoin(current, location.strip()))[0]
                if current in seen:
                    raise FetchError("redirect_loop", f"redirect loop back to {current[:200]}")
                seen.add(current)
                continue
            if permanent and current != listed:
                result.permanent_redirect = current
            result.etag = response.headers.get("etag")
            result.last_modified = response.headers.get("last-modified")
            result.content_type = response.headers.get("content-type")
            result.max_age = max_age_seconds(response.headers.get("cache-control"))
            if response.status_code == 200:
                result.body = read_body(response.raw, settings, deadline)
            return
    raise FetchError(
        "too_many_redirects", f"more than {settings.max_redirects} redirects from {listed[:200]}"
    )


# The encodings `make_session` accepts; urllib3 would pass any other through undecoded.
_DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})


def read_body(raw: urllib3.BaseHTTPResponse, settings: FetchSettings, deadline: float) -> bytes:
    """The decoded body of a streamed response, within the size cap and the deadline.

    urllib3 decodes gzip (every member) and deflate (zlib-wrapped, or raw as some servers send
    it) in steps of at most the amount asked for; the bytes on the wire count against the cap
    too, decoded or ignored (padding after the gzip stream).
    """
    encoding = (raw.headers.get("content-encoding") or "").strip().lower()
    if encoding not in _DECODED_ENCODINGS:
        raise FetchError("bad_encoding", f"unsupported Content-Encoding {encoding!r}")
    content_length = raw.headers.get("content-length")
    if content_length and content_length.strip().isdigit() and int(content_length) > settings.max_bytes:
        # Encoded bytes over the cap can only decode to more.
        raise FetchError(
            "too_large", f"Content-Length {content_length} is over the {settings.max_bytes}-byte cap"
        )
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in raw.stream(CHUNK_BYTES, decode_content=True):
            size += len(chunk)
            if size > settings.max_bytes or raw.tell() > settings.max_bytes:
                raise FetchError("too_large", f"body over the {settings.max_bytes}-byte cap (after decoding)")
            parts.append(chunk)
            if time.monotonic() > deadline:
                raise FetchError(
                    "timeout", f"total time limit of {settings.total_timeout:g}s reached mid-body"
                )
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as error:
        if time.monotonic() >= deadline:
            raise FetchError(
                "timeout", f"total time limit of {settings.total_timeout:g}s reached mid-body"
            ) from error
        raise FetchError("read_timeout", f"stalled mid-body: {error}", retryable=True) from error
    except urllib3.exceptions.DecodeError as error:
        raise FetchError("bad_encoding", f"undecodable {encoding} body: {error}") from error
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, ConnectionError) as error:
        raise FetchError(
            "connection_error", f"connection broken mid-body: {error}", retryable=True
        ) from error
    return b"".join(parts)
