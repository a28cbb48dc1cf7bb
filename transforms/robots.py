"""robots.txt of the hosts whose article pages are fetched: read once per host per run, obeyed.

The rules come from protego (Scrapy's parser: RFC 9309 matching with wildcards, `$` and the longest
match, `Crawl-delay`, `Request-rate`), for the product token `newsbeam`. What a missing or failing
robots.txt means follows RFC 9309 section 2.3.1: an answer 4xx (none there) allows everything, a
5xx or no answer (unreachable) disallows everything, as a crawler must assume the worst.

A host's robots.txt is fetched once per run by one worker: the first process to need it takes an
`flock` on the host's file in the run folder, fetches and stores the answer there; the others wait
on the lock and read the file. Each process keeps what it read in memory. A stored answer is reused
for at most `ttl_seconds` (24 hours, RFC 9309's limit for a cached robots.txt), so a streaming job
that runs for days reads it again.
"""

from __future__ import annotations

import enum
import fcntl
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protego import Protego

from transforms.fetch import FetchResult
from transforms.host_limits import host_file_stem

ROBOTS_AGENT = "newsbeam"  # the product token robots.txt groups are matched against
MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309: a crawler must parse at least 500 KiB
DEFAULT_TTL_SECONDS = 24 * 3600


class RobotsDecision(enum.StrEnum):
    """What robots.txt says about one page, as the `page_fetches.robots` column records it."""

    ALLOWED = "allowed"  # robots.txt read; the page is allowed
    DISALLOWED = "disallowed"  # robots.txt read; the page is disallowed for `newsbeam`
    NO_ROBOTS = "no_robots"  # robots.txt answered 4xx: no rules, everything allowed
    UNREACHABLE = "unreachable"  # robots.txt answered 5xx or not at all: everything disallowed


class _Availability(enum.StrEnum):
    RULES = "rules"
    NONE = "none"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class RobotsRules:
    """One origin's robots.txt as read, parsed once."""

    origin: str
    availability: str
    http_status: int | None
    text: str
    read_at: float  # time.time() of the fetch
    error: str | None = None

    def decide(self, url: str, agent: str = ROBOTS_AGENT) -> RobotsDecision:
        if self.availability == _Availability.NONE:
            return RobotsDecision.NO_ROBOTS
        if self.availability == _Availability.UNREACHABLE:
            return RobotsDecision.UNREACHABLE
        allowed = self._parsed.can_fetch(url, agent)
        return RobotsDecision.ALLOWED if allowed else RobotsDecision.DISALLOWED

    def delay_seconds(self, agent: str = ROBOTS_AGENT) -> float | None:
        """The spacing between requests robots.txt asks for: `Crawl-delay`, or `Request-rate` n/Ts as T/n."""
        if self.availability != _Availability.RULES:
            return None
        delays: list[float] = []
        crawl_delay = self._parsed.crawl_delay(agent)
        if crawl_delay is not None:
            delays.append(float(crawl_delay))
        rate = self._parsed.request_rate(agent)
        if rate is not None and rate.requests:
            delays.append(float(rate.seconds) / float(rate.requests))
        return max(delays) if delays else None

    @functools.cached_property
    def _parsed(self) -> Any:
        return Protego.parse(self.text)  # once per rules object (cached_property writes __dict__)

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "availability": self.availability,
            "http_status": self.http_status,
            "text": self.text,
            "read_at": self.read_at,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RobotsRules:
        return cls(
            data["origin"],
            data["availability"],
            data.get("http_status"),
            data.get("text", ""),
            float(data["read_at"]),
            data.get("error"),
        )


def rules_from_fetch(origin: str, result: FetchResult, read_at: float) -> RobotsRules:
    """What a robots.txt answer means (RFC 9309 2.3.1): rules, none (4xx) or unreachable (5xx, errors)."""
    if result.ok:
        text = (result.body or b"").decode("utf-8", errors="replace")
        return RobotsRules(origin, _Availability.RULES, result.status, text, read_at)
    status = result.status
    if status is not None and 400 <= status < 500 and result.error_type in (None, f"http_{status}"):
        return RobotsRules(origin, _Availability.NONE, status, "", read_at)
    error = result.error_type or f"http_{status}"
    return RobotsRules(origin, _Availability.UNREACHABLE, status, "", read_at, error)


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower-case: robots.txt is per origin."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc.rpartition('@')[2]).lower()}"


class RobotsCache:
    """`cache.rules(origin)`: the origin's robots.txt, fetched at most once per run by all workers."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        fetch_robots: Callable[[str], FetchResult],
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._fetch = fetch_robots
        self._ttl = ttl_seconds
        self._memory: dict[str, RobotsRules] = {}
        self._lock = threading.Lock()
        self.fetched = 0  # robots.txt requests this process made

    def rules(self, origin: str) -> RobotsRules:
        with self._lock:
            known = self._memory.get(origin)
        if known is not None and time.time() - known.read_at < self._ttl:
            return known
        rules = self._read_or_fetch(origin)
        with self._lock:
            self._memory[origin] = rules
        return rules

    def _read_or_fetch(self, origin: str) -> RobotsRules:
        stem = host_file_stem(origin)
        path = self._folder / f"{stem}.json"
        fd = os.open(self._folder / f"{stem}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one fetch per origin; the others wait and read its answer
            stored = _load(path)
            if stored is not None and time.time() - stored.read_at < self._ttl:
                return stored
            result = self._fetch(f"{origin}/robots.txt")
            self.fetched += 1
            rules = rules_from_fetch(origin, result, time.time())
            temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_text(json.dumps(rules.to_json()), encoding="utf-8")
            temporary.replace(path)
            return rules
        finally:
            os.close(fd)


def _load(path: Path) -> RobotsRules | None:
    try:
        return RobotsRules.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
