"""Fetch one article page, politely, and say what happened as a typed outcome (never raises).

`PageFetcher.fetch(url)` is the whole politeness sequence for one page:
1. robots.txt of the page's origin, read once per run (`robots.py`): a disallowed page is never
   requested, and a `Crawl-delay` (or `Request-rate`) longer than the per-host interval replaces it;
2. the host's limits across every worker process of the run (`host_limits.py`): at most
   `max_per_host` requests at once, starts spaced by the interval; a 429 or 503 answer's
   Retry-After (and any retry backoff) holds the whole host off, not only the thread that got it;
3. the request itself with the shared hardened fetcher (`fetch.fetch`: timeouts, the deadline on
   the socket, the size cap after decoding, redirects checked hop by hop, the private-address rule
   on the pinned connection, retries, Retry-After), with a User-Agent naming newsbeam and an
   `Accept` asking for HTML;
4. the media type from the header and the bytes: only HTML goes on to extraction.

A page that several articles of one run link to is fetched once: `PageCache` keeps the first
fetch's answer in the run folder (the body compressed), under a per-URL `flock`, so a worker that
meets the same URL waits for the first fetch and reuses it, in any process of the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import hashlib
import json
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transforms.credentials import redact_url
from transforms.fetch import FetchResult, FetchSettings, check_url, fetch, make_session
from transforms.host_limits import HostLimiter
from transforms.page_html import HTML_MEDIA_TYPES, media_type
from transforms.read_outputs import host_key
from transforms.robots import MAX_ROBOTS_BYTES, ROBOTS_AGENT, RobotsCache, RobotsDecision, origin_of
from transforms.source_errors import FetchError

PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"


class PageOutcome(enum.StrEnum):
    """What came of one article page, one value per `page_fetches` row."""

    OK = "ok"  # fetched and extracted: the article has the page's text
    EXTRACT_REJECTED = "extract_rejected"  # fetched, but the text is no upgrade (`rejection` says why)
    NOT_HTML = "not_html"  # a PDF, an image, ...: not extracted
    TOO_LARGE = "too_large"  # over `fulltext.max_page_bytes` (after decoding)
    ROBOTS_DISALLOWED = "robots_disallowed"  # robots.txt disallows it for newsbeam: never requested
    ROBOTS_UNREACHABLE = "robots_unreachable"  # robots.txt answered 5xx or not at all: not requested
    CRAWL_DELAY_TOO_LONG = "crawl_delay_too_long"  # robots.txt asks for more than `max_crawl_delay`
    HTTP_ERROR = "http_error"  # a 4xx or 5xx answer (after retries)
    TIMEOUT = "timeout"  # connect, read or total time limit
    PRIVATE_ADDRESS = "private_address"  # the host, or a redirect target, is a private address
    REDIRECT_LOOP = "redirect_loop"  # a redirect loop or too many redirects
    NETWORK_ERROR = "network_error"  # DNS, TLS, connection refused or reset
    BAD_URL = "bad_url"  # no http(s) URL, or a redirect to one
    BAD_BODY = "bad_body"  # an undecodable Content-Encoding
    CRASH = "crash"  # a bug: the article keeps the feed's text and the message says what happened


# FetchResult.error_type -> outcome (http_NNN is HTTP_ERROR).
_OUTCOMES = {
    "too_large": PageOutcome.TOO_LARGE,
    "timeout": PageOutcome.TIMEOUT,
    "connect_timeout": PageOutcome.TIMEOUT,
    "read_timeout": PageOutcome.TIMEOUT,
    "private_address": PageOutcome.PRIVATE_ADDRESS,
    "private_redirect": PageOutcome.PRIVATE_ADDRESS,
    "redirect_loop": PageOutcome.REDIRECT_LOOP,
    "too_many_redirects": PageOutcome.REDIRECT_LOOP,
    "connection_error": PageOutcome.NETWORK_ERROR,
    "dns_error": PageOutcome.NETWORK_ERROR,
    "tls_error": PageOutcome.NETWORK_ERROR,
    "bad_url": PageOutcome.BAD_URL,
    "bad_scheme": PageOutcome.BAD_URL,
    "bad_redirect_scheme": PageOutcome.BAD_URL,
    "bad_redirect": PageOutcome.BAD_URL,
    "bad_encoding": PageOutcome.BAD_BODY,
}


def outcome_of(error_type: str) -> PageOutcome:
    if error_type.startswith("http_"):
        return PageOutcome.HTTP_ERROR
    return _OUTCOMES.get(error_type, PageOutcome.CRASH)


@dataclass(frozen=True)
class PageSettings:
    """How pages are fetched; `fetch` is the shared fetcher's settings (its caps replaced as below)."""

    fetch: FetchSettings = dataclasses.field(default_factory=FetchSettings)
    max_page_bytes: int = 5 * 1024 * 1024  # after decoding; a bigger page is `too_large`
    max_per_host: int = 2  # requests at once to one host, across all worker processes
    min_interval_seconds: float = 0.5  # between request starts to one host (2 a second at most)
    max_crawl_delay_seconds: float = 30.0  # a host asking for more is not fetched (crawl_delay_too_long)
    robots_ttl_seconds: float = 24 * 3600
    # A page fetched this long ago is fetched again: a new revision in a long streaming job gets a
    # fresh page, while the duplicates of one batch run (minutes apart) share one fetch.
    page_reuse_seconds: float = 600.0

    @property
    def page_fetch(self) -> FetchSettings:
        return dataclasses.replace(self.fetch, max_bytes=self.max_page_bytes)

    @property
    def robots_fetch(self) -> FetchSettings:
        return dataclasses.replace(self.fetch, max_bytes=MAX_ROBOTS_BYTES, max_attempts=2)


@dataclass(frozen=True)
class PageFetch:
    """One page request (or why none was made), with the HTML body when there is one to extract."""

    url: str  # as the article links it, redacted
    outcome: PageOutcome
    fetched_at: datetime
    final_url: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    media_type: str | None = None
    body: bytes | None = None  # set for HTML only
    bytes: int = 0
    elapsed_ms: int = 0
    waited_ms: int = 0  # for a host slot and the host's interval, before the request
    attempts: int = 0
    robots: RobotsDecision | None = None
    crawl_delay_seconds: float | None = None
    error_type: str | None = None
    message: str | None = None
    shared: bool = False  # this run fetched the page for another article first: no request made

    @property
    def fetched(self) -> bool:
        return self.body is not None


class PageFetcher:
    """Built once per worker (`DoFn.setup()`): one session, the run's limits, robots and page cache.

    `work_dir` is the run's folder, on this machine, shared by all its worker processes: the host
    limits, robots.txt and the page cache live there.
    """

    def __init__(
        self,
        settings: PageSettings,
        work_dir: str | os.PathLike[str],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        folder = Path(work_dir)
        self._limiter = HostLimiter(folder / "hosts", settings.max_per_host, sleep=sleep)
        self._robots = RobotsCache(
            folder / "robots", self._fetch_robots, ttl_seconds=settings.robots_ttl_seconds
        )
        self._cache = PageCache(folder / "pages", settings.page_reuse_seconds)
        self._session = make_session(settings.fetch, pool_size=max(settings.fetch.max_concurrent, 1))
        self._session.headers["Accept"] = PAGE_ACCEPT
        self._sleep = sleep

    def close(self) -> None:
        self._session.close()

    def fetch(self, url: str) -> PageFetch:
        """The page at `url` under robots.txt and the host's limits, fetched once per run."""
        try:
            return self._cache.fetch_once(url, self._fetch_politely)
        except Exception as error:  # a bug, or a broken run folder: this page's problem only
            return PageFetch(
                redact_url(url),
                PageOutcome.CRASH,
                datetime.now(UTC),
                error_type="page_crash",
                message=redact_url(f"{type(error).__name__}: {error}")[:500],
            )

    def _fetch_politely(self, url: str) -> PageFetch:
        fetched_at = datetime.now(UTC)
        recorded = redact_url(url)
        try:
            check_url(url)
        except FetchError as error:
            return PageFetch(
                recorded, PageOutcome.BAD_URL, fetched_at, error_type=error.error_type, message=str(error)
            )
        rules = self._robots.rules(origin_of(url))
        decision = rules.decide(url, ROBOTS_AGENT)
        delay = rules.delay_seconds(ROBOTS_AGENT)
        refused = {
            RobotsDecision.DISALLOWED: PageOutcome.ROBOTS_DISALLOWED,
            RobotsDecision.UNREACHABLE: PageOutcome.ROBOTS_UNREACHABLE,
        }.get(decision)
        if decision is RobotsDecision.UNREACHABLE and rules.error in ("private_address", "private_redirect"):
            refused = PageOutcome.PRIVATE_ADDRESS  # the host itself is refused, robots.txt or not
        if refused is None and delay is not None and delay > self._settings.max_crawl_delay_seconds:
            refused = PageOutcome.CRAWL_DELAY_TOO_LONG
        if refused is not None:
            message = f"robots.txt of {origin_of(recorded)}: {decision.value}" + (
                f", Crawl-delay {delay:g}s"
                if delay is not None
                else f" ({rules.error})"
                if rules.error
                else ""
            )
            return PageFetch(
                recorded,
                refused,
                fetched_at,
                robots=decision,
                crawl_delay_seconds=delay,
                error_type=rules.error,
                message=message,
            )
        host = host_key(url)
        interval = max(self._settings.min_interval_seconds, delay or 0.0)
        with self._limiter.request(host, interval) as wait:
            fetched_at = datetime.now(UTC)
            result = fetch(self._session, url, self._settings.page_fetch, sleep=self._host_sleep(host))
        return _page_fetch(recorded, result, fetched_at, decision, delay, wait.total_seconds)

    def _fetch_robots(self, robots_url: str) -> FetchResult:
        host = host_key(robots_url)
        with self._limiter.request(host, self._settings.min_interval_seconds):
            return fetch(self._session, robots_url, self._settings.robots_fetch, sleep=self._host_sleep(host))

    def _host_sleep(self, host: str) -> Callable[[float], None]:
        """fetch()'s wait before a retry (Retry-After, backoff), applied to the whole host."""

        def hold_off(seconds: float) -> None:
            self._limiter.hold_off(host, seconds)
            self._sleep(seconds)

        return hold_off

    @property
    def robots_fetched(self) -> int:
        return self._robots.fetched


def _page_fetch(
    url: str,
    result: FetchResult,
    fetched_at: datetime,
    robots: RobotsDecision,
    crawl_delay: float | None,
    waited: float,
) -> PageFetch:
    common: dict[str, Any] = {
        "final_url": result.final_url,
        "http_status": result.status,
        "content_type": result.content_type,
        "elapsed_ms": result.elapsed_ms,
        "waited_ms": int(waited * 1000),
        "attempts": result.attempts,
        "robots": robots,
        "crawl_delay_seconds": crawl_delay,
    }
    if result.error_type is not None or result.body is None:
        error_type = result.error_type or f"http_{result.status}"
        return PageFetch(
            url, outcome_of(error_type), fetched_at, error_type=error_type, message=result.message, **common
        )
    kind = media_type(result.content_type, result.body)
    if kind not in HTML_MEDIA_TYPES:
        return PageFetch(
            url,
            PageOutcome.NOT_HTML,
            fetched_at,
            media_type=kind,
            bytes=len(result.body),
            message=f"the page is {kind}, not HTML",
            **common,
        )
    return PageFetch(
        url, PageOutcome.OK, fetched_at, media_type=kind, body=result.body, bytes=len(result.body), **common
    )


class PageCache:
    """The pages this run fetched lately, by URL, shared by every worker process of the machine."""

    def __init__(self, folder: str | os.PathLike[str], reuse_seconds: float = 600.0) -> None:
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._reuse_seconds = reuse_seconds
        self.prune()

    def prune(self) -> None:
        """Remove the answers too old to reuse (a streaming job's folder lives for days)."""
        horizon = time.time() - 2 * self._reuse_seconds
        for path in self._folder.iterdir():
            with contextlib.suppress(OSError):
                if path.suffix in (".json", ".body") and path.stat().st_mtime < horizon:
                    path.unlink()

    def fetch_once(self, url: str, fetch_page: Callable[[str], PageFetch]) -> PageFetch:
        stem = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        fd = os.open(self._folder / f"{stem}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the first fetch of this URL runs; the others wait for it
            stored = self._load(stem)
            if stored is not None:
                return dataclasses.replace(stored, shared=True)
            page = fetch_page(url)
            self._store(stem, page)
            return page
        finally:
            os.close(fd)

    def _store(self, stem: str, page: PageFetch) -> None:
        record = {k: v for k, v in dataclasses.asdict(page).items() if k != "body"}
        record["fetched_at"] = page.fetched_at.isoformat()
        tag = f"{os.getpid()}.{threading.get_ident()}.tmp"
        if page.body is not None:
            body_path = self._folder / f"{stem}.body"
            temporary = body_path.with_suffix(f".{tag}")
            temporary.write_bytes(zlib.compress(page.body, 1))
            temporary.replace(body_path)
        meta_path = self._folder / f"{stem}.json"
        temporary = meta_path.with_suffix(f".{tag}")
        temporary.write_text(json.dumps(record), encoding="utf-8")
        temporary.replace(meta_path)  # last: a page with a .json is complete

    def _load(self, stem: str) -> PageFetch | None:
        try:
            record = json.loads((self._folder / f"{stem}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        body = None
        with contextlib.suppress(OSError, zlib.error):
            body = zlib.decompress((self._folder / f"{stem}.body").read_bytes())
        if record["outcome"] == PageOutcome.OK and body is None:
            return None  # the body is gone: fetch again
        record["outcome"] = PageOutcome(record["outcome"])
        record["robots"] = RobotsDecision(record["robots"]) if record.get("robots") else None
        record["fetched_at"] = datetime.fromisoformat(record["fetched_at"])
        page = PageFetch(body=body, **record)
        if (datetime.now(UTC) - page.fetched_at).total_seconds() > self._reuse_seconds:
            return None
        return page
