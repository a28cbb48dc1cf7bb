"""Fetch one feed (or page) over HTTP the way a careful feed reader does, without ever raising.

`fetch()` returns a `FetchResult` for every outcome: a body, a 304, or a named error. It bounds
each request: connect and read timeouts, and a total deadline enforced on the socket itself (every
read waits at most for what is left of the deadline, so a server that drips one byte at a time,
headers or body, is cut off at the deadline), and a body-size cap that also holds after
gzip/deflate decoding, decoded here in bounded steps so that a gzip bomb never inflates past the
cap. It follows redirects itself so that each hop is checked: only http/https; and a private,
loopback or link-local address is refused outright unless `allow_private_hosts` is set for intranet
feeds, and even then never reached by a redirect from a public host (the classic way to reach a
cloud metadata server). The address rule runs inside the connection: the name is resolved once,
the addresses are checked, and the socket connects to exactly those addresses (the Host header,
TLS SNI and certificate check keep the name), so a name that resolves to a public address for the
check and to a private one for the connection (DNS rebinding) never reaches the private address.
It retries 5xx answers, timeouts and dropped connections with exponential backoff and full
jitter, honouring `Retry-After` on 429 and 503 up to a cap. A conditional GET sends the stored
`ETag` / `Last-Modified`; a 304 is a success without a body.

Credentials in a URL (`https://user:password@host/feed`) are sent as basic auth, only to that
URL's origin, and never recorded: `redact_url()` is the one function every dataset, state file,
manifest and message uses for a URL (`https://***@host/feed`).

The session comes from `make_session()`, built once per worker in a `DoFn.setup()`.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import ipaddress
import random
import re
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, cast
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS = frozenset({301, 308})
RETRY_STATUSES = frozenset({500, 502, 503, 504})
CHUNK_BYTES = 64 * 1024

# error_type -> error_class: a coarse family to group feed health by.
_ERROR_CLASSES = {
    "connect_timeout": "timeout",
    "read_timeout": "timeout",
    "timeout": "timeout",
    "connection_error": "network",
    "tls_error": "network",
    "dns_error": "network",
    "too_large": "body",
    "bad_encoding": "body",
    "bad_url": "policy",
    "bad_scheme": "policy",
    "bad_redirect": "policy",
    "bad_redirect_scheme": "policy",
    "private_address": "policy",
    "private_redirect": "policy",
    "redirect_loop": "policy",
    "too_many_redirects": "policy",
}


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


class FetchError(Exception):
    def __init__(self, error_type: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


def error_class(error_type: str | None) -> str | None:
    """The family of a fetch error: http, timeout, network, body, policy (or content for the rest)."""
    if error_type is None:
        return None
    if error_type.startswith("http_"):
        return "http"
    return _ERROR_CLASSES.get(error_type, "content")


# --- URLs with credentials ---------------------------------------------------------------------

# The userinfo of a URL: after the scheme, up to the last "@" before the path (a password may
# hold an unescaped "@"; "/", "?", "#" and spaces end the authority).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")


def redact_url(text: str) -> str:
    """A URL (or a message quoting URLs) as it may be recorded: `user:password@` becomes `***@`.

    The one redaction rule for every dataset, state file, manifest, log line and report. Text
    without credentials (file paths, URLs without userinfo, redacted URLs) comes back unchanged.
    """
    return _USERINFO.sub(r"\g<scheme>***@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its userinfo, and the (user, password) it held, percent-decoded (an escape
    that is no UTF-8, such as `%FF`, kept as a surrogate: `basic_auth` sends its byte)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _colon, password = userinfo.partition(":")
    plain = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return plain, (unquote(user, errors="surrogateescape"), unquote(password, errors="surrogateescape"))


def basic_auth(credentials: tuple[str, str]) -> requests.auth.HTTPBasicAuth:
    """(user, password) as the bytes Basic auth sends: UTF-8 (RFC 7617), escaped bytes as they are.

    requests would encode text as Latin-1, which cannot hold '€' and fails quoting the character.
    """
    user, password = credentials
    return requests.auth.HTTPBasicAuth(
        user.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape")
    )


def carry_credentials(target: str, listed: str) -> str:
    """`target` (where the listed feed moved) with the listed URL's credentials when it is on the
    same origin, so that a moved feed is still fetched with them; else `target` as it is."""
    plain, credentials = split_credentials(listed)
    if credentials is None or split_credentials(target)[1] is not None or not same_origin(plain, target):
        return target
    userinfo = urlsplit(listed).netloc.rpartition("@")[0]
    parts = urlsplit(target)
    return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def same_origin(first: str, second: str) -> bool:
    """Whether credentials given for `first` may go to `second`: the same scheme, host and port,
    or the upgrade from http on port 80 to https on 443 of the same host (as requests allows)."""
    try:
        a, b = _origin(first), _origin(second)
    except ValueError:
        return False
    return a == b or (a[1] == b[1] and a[0::2] == ("http", 80) and b[0::2] == ("https", 443))


# --- the address rule, applied inside the connection ------------------------------------------


def ip_is_private(ip: str) -> bool:
    """True for an address that is not globally routable.

    That covers private, loopback, link-local (169.254.169.254, the cloud metadata server),
    shared (100.64/10), reserved, multicast and unspecified addresses, and IPv6 addresses that
    carry such an IPv4 one (IPv4-mapped, NAT64, 6to4, IPv4-compatible).
    """
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL_USE:
            return True
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            address = embedded
    return not address.is_global or address.is_multicast


# IPv6 prefixes that carry an IPv4 address a connection may end up at: NAT64's well-known prefix
# (RFC 6052; a DNS64 network's gateway connects to the IPv4 address in the last 32 bits) and the
# IPv4-compatible form (::a.b.c.d); 6to4 (2002::/16) and IPv4-mapped have their own properties.
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: not globally reachable


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses of `host` from one lookup, in the resolver's order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class HopPolicy:
    """What the connection of one request must hold to: set by fetch() around each request."""

    allow_private: bool = False
    redirected_from_public: bool | None = None  # None: the URL as listed, not a redirect target
    deadline: float | None = None  # time.monotonic() by which every read must be done
    # The connection used appends the address it is connected to (a response without a body
    # gives its connection back before the caller could ask it).
    connected: list[str] | None = None


# A session used outside fetch() gets the strict rule (no private address) and no deadline.
_STRICT = HopPolicy()
_HOP: ContextVar[HopPolicy] = ContextVar("newsbeam_fetch_hop", default=_STRICT)


def check_addresses(host: str, addresses: Sequence[str], hop: HopPolicy) -> bool:
    """Apply the address rule to the addresses a host resolved to; returns whether all are public.

    Any private address makes the host private: refused without `allow_private`, and refused
    after a redirect from a public host even with it.
    """
    private = [ip for ip in addresses if ip_is_private(ip)]
    if private and not hop.allow_private:
        raise FetchError(
            "private_address",
            f"refusing {host} ({private[0]}): a private, loopback or link-local address"
            " (set `fetch.allow_private_hosts: true` in the config to allow private hosts)",
        )
    if private and hop.redirected_from_public:
        raise FetchError(
            "private_redirect",
            f"refusing a redirect from a public host to {host} ({private[0]}), a private address",
        )
    return not private


class _DeadlineReader(io.RawIOBase):
    """A socket's byte stream whose every read waits at most until the deadline (and at most the
    socket's own timeout): a server sending one byte just before each read timeout is cut off."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the total time limit was reached")
        timeout = self._sock.gettimeout()
        self._sock.settimeout(remaining if timeout is None else min(timeout, remaining))
        try:
            return self._raw.readinto(buffer)
        finally:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What http.client.HTTPResponse reads from: the socket, through a `_DeadlineReader`."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    """Status line, headers and body all read under the deadline of the fetch that sent the request."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        deadline = _HOP.get().deadline
        if deadline is not None:
            sock = cast(socket.socket, _DeadlineSocket(sock, deadline))
        super().__init__(sock, *args, **kwargs)


class _PinnedConnection(HTTPConnection):
    """An urllib3 connection that resolves its host once, checks the addresses and connects to
    exactly them; a kept-alive connection is checked again before each request (a redirect from
    a public host may not reuse a connection to a private one). Its responses read under the
    fetch's deadline."""

    checked_address: str | None = None
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        hop = _HOP.get()
        try:
            addresses = resolve_host(self._dns_host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        check_addresses(self.host, addresses, hop)
        # Like urllib3's create_connection, an address that fails or does not answer gives way to
        # the next one (a blackholed IPv6 address before a working IPv4 one), but all of them
        # together stay within the fetch's deadline.
        last: OSError | None = None
        timed_out: str | None = None
        for address in addresses:
            timeout = self.timeout
            if hop.deadline is not None:
                remaining = hop.deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = timed_out or address
                    break
                timeout = remaining if not isinstance(timeout, int | float) else min(timeout, remaining)
            try:
                sock = create_connection(
                    (address, self.port), timeout, self.source_address, self.socket_options
                )
            except TimeoutError as error:
                last, timed_out = error, address
                continue
            except OSError as error:
                last = error
                continue
            self.checked_address = address
            return sock
        if timed_out is not None:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} ({timed_out}) timed out. (connect timeout={self.timeout})"
            ) from last
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")

    def request(self, *args: Any, **kwargs: Any) -> None:
        hop = _HOP.get()
        if self.sock is not None and self.checked_address is not None:
            check_addresses(self.host, [self.checked_address], hop)
        super().request(*args, **kwargs)  # connects (and checks) a new connection
        if hop.connected is not None and self.checked_address is not None:
            hop.connected.append(self.checked_address)


class _PinnedHTTPSConnection(_PinnedConnection, HTTPSConnection):
    """The same over TLS: only the TCP peer is pinned; SNI and the certificate check use the name."""


class _PinnedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _PinnedConnection


class _PinnedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


_PINNED_POOLS = {"http": _PinnedHTTPConnectionPool, "https": _PinnedHTTPSConnectionPool}


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with pinned, deadline-bound connections (through a proxy too, where the
    address checked is the proxy's, as it is the one connected to)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _PINNED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _PINNED_POOLS
        return manager


def make_session(settings: FetchSettings, pool_size: int | None = None) -> requests.Session:
    session = requests.Session()
    size = pool_size or max(settings.max_concurrent, 1)
    # Retries and redirects are handled in fetch() so that each hop and attempt is checked.
    adapter = _PinnedAdapter(pool_connections=size, pool_maxsize=size, max_retries=0)
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
        token = _HOP.set(hop)
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
            _HOP.reset(token)
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
                result.body = read_body(
                    response.raw.stream(CHUNK_BYTES, decode_content=False),
                    response.headers.get("content-encoding"),
                    response.headers.get("content-length"),
                    settings,
                    deadline,
                )
            return
    raise FetchError(
        "too_many_redirects", f"more than {settings.max_redirects} redirects from {listed[:200]}"
    )


class _Decoder:
    """gzip / deflate decoding in steps that never produce more than the bytes still allowed."""

    def __init__(self, encoding: str | None) -> None:
        name = (encoding or "identity").strip().lower()
        self._name = name
        self._trailing = False  # the stream ended; what follows is ignored
        if name in ("", "identity"):
            self._wbits: int | None = None
        elif name in ("gzip", "x-gzip"):
            self._wbits = 16 + zlib.MAX_WBITS
        elif name == "deflate":
            self._wbits = zlib.MAX_WBITS  # zlib-wrapped as HTTP says; raw deflate is tried on failure
        else:
            raise FetchError("bad_encoding", f"unsupported Content-Encoding {encoding!r}")
        self._started = False
        self._inflate = zlib.decompressobj(self._wbits) if self._wbits is not None else None

    def decode(self, data: bytes, allowed: int) -> bytes:
        """Decoded bytes of `data`; raises `too_large` as soon as more than `allowed` would come out."""
        if self._inflate is None:
            if len(data) > allowed:
                raise _TooLarge
            return data
        out: list[bytes] = []
        produced = 0
        try:
            if not self._started and self._wbits == zlib.MAX_WBITS:
                self._started = True
                try:
                    probe = zlib.decompressobj(zlib.MAX_WBITS)
                    probe.decompress(data[:64], 1)
                except zlib.error:
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self._started = True
            pending = data
            while pending and not self._trailing:
                piece = self._inflate.decompress(pending, allowed - produced + 1)
                produced += len(piece)
                if produced > allowed:
                    raise _TooLarge
                out.append(piece)
                pending = self._inflate.unconsumed_tail
                if not pending and self._inflate.eof and self._inflate.unused_data:
                    pending = self._next_member(self._inflate.unused_data)
        except zlib.error as error:
            raise FetchError("bad_encoding", f"undecodable {self._name} body: {error}") from error
        return b"".join(out)

    def _next_member(self, rest: bytes) -> bytes:
        # Another gzip member is decoded too, as gzip(1) does; anything else after the end of the
        # stream (padding some servers add) is ignored, as browsers and urllib3 ignore it.
        if self._wbits == 16 + zlib.MAX_WBITS and rest.startswith(b"\x1f\x8b"):
            self._inflate = zlib.decompressobj(self._wbits)
            return rest
        self._trailing = True
        return b""


class _TooLarge(Exception):
    pass


def read_body(
    chunks: Iterable[bytes],
    content_encoding: str | None,
    content_length: str | None,
    settings: FetchSettings,
    deadline: float,
) -> bytes:
    """The decoded body from raw (still encoded) chunks, within the size cap and the deadline."""
    decoder = _Decoder(content_encoding)
    if content_length and content_length.strip().isdigit() and int(content_length) > settings.max_bytes:
        # Encoded bytes over the cap can only decode to more.
        raise FetchError(
            "too_large", f"Content-Length {content_length} is over the {settings.max_bytes}-byte cap"
        )
    parts: list[bytes] = []
    size = received = 0
    try:
        for chunk in chunks:
            received += len(chunk)
            if received > settings.max_bytes:  # bytes on the wire count too, decoded or ignored
                raise _TooLarge
            decoded = decoder.decode(chunk, settings.max_bytes - size)
            size += len(decoded)
            parts.append(decoded)
            if time.monotonic() > deadline:
                raise FetchError(
                    "timeout", f"total time limit of {settings.total_timeout:g}s reached mid-body"
                )
    except _TooLarge:
        raise FetchError(
            "too_large", f"body over the {settings.max_bytes}-byte cap (after decoding)"
        ) from None
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as error:
        if time.monotonic() >= deadline:
            raise FetchError(
                "timeout", f"total time limit of {settings.total_timeout:g}s reached mid-body"
            ) from error
        raise FetchError("read_timeout", f"stalled mid-body: {error}", retryable=True) from error
    except urllib3.exceptions.DecodeError as error:
        raise FetchError("bad_encoding", f"undecodable content-encoding: {error}") from error
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, ConnectionError) as error:
        raise FetchError(
            "connection_error", f"connection broken mid-body: {error}", retryable=True
        ) from error
    return b"".join(parts)
