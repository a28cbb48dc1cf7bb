"""Fetching article pages politely, seen from the server's side (a real HTTP server on 127.0.0.1).

robots.txt disallow obeyed and read once per host, a 5xx robots.txt treated as "disallow all",
Crawl-delay spacing the requests, the per-host limit holding across worker processes, 429 with
Retry-After holding the whole host off, a page linked twice fetched once, and every failure a
typed outcome.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.feedserver import FeedServer, Reply
from transforms.fetch import FetchSettings
from transforms.pages import PageFetch, PageFetcher, PageOutcome, PageSettings
from transforms.robots import RobotsDecision

HTML = {"Content-Type": "text/html; charset=utf-8"}
PAGE = b"<html><head><title>A page</title></head><body><p>Some words of an article.</p></body></html>"
FAST = FetchSettings(
    allow_private_hosts=True,
    connect_timeout=1.0,
    read_timeout=1.0,
    total_timeout=4.0,
    max_attempts=2,
    backoff_base=0.01,
    max_retry_after=3.0,
    max_concurrent=4,
)


def page_fetcher(
    tmp_path: Path, *, fetch: FetchSettings = FAST, page_reuse_seconds: float = 600.0
) -> PageFetcher:
    """A worker's fetcher of the test's run (all of a test's fetchers share its run folder)."""
    settings = PageSettings(fetch=fetch, min_interval_seconds=0.0, page_reuse_seconds=page_reuse_seconds)
    return PageFetcher(settings, tmp_path / "run")


def fetch_all(fetcher: PageFetcher, urls: list[str], threads: int = 4) -> list[PageFetch]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fetcher.fetch, urls))


def test_robots_disallow_is_obeyed_and_robots_txt_is_read_once(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.route(
        "/robots.txt", Reply(200, b"User-agent: *\nAllow: /\n\nUser-agent: newsbeam\nDisallow: /private/\n")
    )
    allowed = [feed_server.route(f"/news/{i}", Reply(200, PAGE, HTML)) for i in range(3)]
    refused = feed_server.route("/private/1", Reply(200, PAGE, HTML))
    fetcher = page_fetcher(tmp_path)
    results = fetch_all(fetcher, [*allowed, refused])

    assert [r.outcome for r in results] == [PageOutcome.OK] * 3 + [PageOutcome.ROBOTS_DISALLOWED]
    assert [r.robots for r in results] == [RobotsDecision.ALLOWED] * 3 + [RobotsDecision.DISALLOWED]
    assert results[0].body == PAGE and results[3].body is None
    assert feed_server.hits("/private/1") == []
    assert len(feed_server.hits("/robots.txt")) == 1  # cached for the host
    # A second fetcher of the same run (another worker) reads the run's copy: no second request.
    page_fetcher(tmp_path).fetch(feed_server.url("/news/9"))
    assert len(feed_server.hits("/robots.txt")) == 1
    assert all("newsbeam" in r.headers["user-agent"] for r in feed_server.requests)
    assert "text/html" in feed_server.hits("/news/0")[0].headers["accept"]


def test_an_unreachable_robots_txt_disallows_and_a_missing_one_allows(tmp_path: Path) -> None:
    with FeedServer() as failing, FeedServer("127.0.0.2") as missing:
        failing.route("/robots.txt", Reply(503, b"down"))
        refused = page_fetcher(tmp_path).fetch(failing.route("/a", Reply(200, PAGE, HTML)))
        fetched = page_fetcher(tmp_path).fetch(missing.route("/a", Reply(200, PAGE, HTML)))
        assert failing.hits("/a") == [] and len(missing.hits("/a")) == 1
    assert (refused.outcome, refused.robots) == (PageOutcome.ROBOTS_UNREACHABLE, RobotsDecision.UNREACHABLE)
    assert (fetched.outcome, fetched.robots) == (PageOutcome.OK, RobotsDecision.NO_ROBOTS)


def test_crawl_delay_spaces_the_requests_to_a_host(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.route("/robots.txt", Reply(200, b"User-agent: *\nCrawl-delay: 0.4\n"))
    urls = [feed_server.route(f"/news/{i}", Reply(200, PAGE, HTML)) for i in range(4)]
    results = fetch_all(page_fetcher(tmp_path), urls)  # 4 threads, 2 slots

    assert {r.outcome for r in results} == {PageOutcome.OK} and results[0].crawl_delay_seconds == 0.4
    starts = sorted(r.at for r in feed_server.requests if r.path.startswith("/news/"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 0.38, gaps


def test_a_crawl_delay_over_the_cap_is_not_fetched(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.route("/robots.txt", Reply(200, b"User-agent: *\nCrawl-delay: 120\n"))
    result = page_fetcher(tmp_path).fetch(feed_server.route("/a", Reply(200, PAGE, HTML)))
    assert result.outcome is PageOutcome.CRAWL_DELAY_TOO_LONG and feed_server.hits("/a") == []
    assert result.message is not None and "Crawl-delay 120s" in result.message


def _fetch_in_worker(work_dir: str, urls: list[str], barrier: object) -> list[str]:
    fetcher = PageFetcher(PageSettings(fetch=FAST, min_interval_seconds=0.0), work_dir)
    barrier.wait()  # type: ignore[attr-defined]
    return [page.outcome.value for page in fetch_all(fetcher, urls, threads=4)]


def test_the_per_host_limit_holds_across_worker_processes(tmp_path: Path) -> None:
    with FeedServer(latency=0.15) as server:
        urls = [server.route(f"/news/{i}", Reply(200, PAGE, HTML)) for i in range(16)]
        context = multiprocessing.get_context("fork")  # separate processes, cheap to start
        with context.Manager() as manager:
            barrier = manager.Barrier(3)
            with context.Pool(3) as pool:
                work_dir = str(tmp_path / "run")
                outcomes = pool.starmap(_fetch_in_worker, [(work_dir, urls[i::3], barrier) for i in range(3)])
    assert sorted(o for chunk in outcomes for o in chunk) == ["ok"] * 16
    # 3 processes x 4 threads wanted 12 requests at once; the host saw its limit of 2, never more.
    assert server.max_in_flight == 2


def test_429_retry_after_is_waited_before_the_retry(feed_server: FeedServer, tmp_path: Path) -> None:
    busy = feed_server.route("/busy", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, PAGE, HTML))
    other = feed_server.route("/other", Reply(200, PAGE, HTML))
    fetcher = page_fetcher(tmp_path)
    first = fetcher.fetch(busy)
    assert first.outcome is PageOutcome.OK and first.attempts == 2
    second = fetcher.fetch(other)
    hits = feed_server.hits("/busy")
    assert hits[1].at - hits[0].at >= 0.95  # the Retry-After was waited
    assert second.outcome is PageOutcome.OK


def test_retry_after_of_one_request_delays_the_others_to_that_host(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    busy = feed_server.route("/busy", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, PAGE, HTML))
    other = feed_server.route("/other", Reply(200, PAGE, HTML))
    fetcher = page_fetcher(tmp_path)
    started = threading.Event()
    results: list[PageFetch] = []

    def fetch_busy() -> None:
        started.set()
        results.append(fetcher.fetch(busy))

    thread = threading.Thread(target=fetch_busy)
    thread.start()
    started.wait()
    while not feed_server.hits("/busy"):
        time.sleep(0.01)
    time.sleep(0.2)  # the 429 is answered: the host is held off
    fetcher.fetch(other)
    thread.join()
    first_429 = feed_server.hits("/busy")[0].at
    assert feed_server.hits("/other")[0].at - first_429 >= 0.95


def test_a_page_linked_twice_is_fetched_once(feed_server: FeedServer, tmp_path: Path) -> None:
    url = feed_server.route("/shared", Reply(200, PAGE, HTML))
    first, second = fetch_all(page_fetcher(tmp_path), [url, url], threads=2)
    third = page_fetcher(tmp_path).fetch(url)  # another worker of the same run
    assert len(feed_server.hits("/shared")) == 1
    assert [first.body, second.body, third.body] == [PAGE] * 3
    assert sorted([first.shared, second.shared, third.shared]) == [False, True, True]


@pytest.mark.parametrize(
    ("reply", "outcome", "error_type"),
    [
        (Reply(404, b"gone", HTML), PageOutcome.HTTP_ERROR, "http_404"),
        (Reply(200, b"%PDF-1.7 ...", {"Content-Type": "application/pdf"}), PageOutcome.NOT_HTML, None),
        (Reply(200, b"\x89PNG\r\n\x1a\n....", HTML), PageOutcome.NOT_HTML, None),  # an image called HTML
        (Reply(200, b"x" * (10 * 1024 * 1024), HTML), PageOutcome.TOO_LARGE, "too_large"),
        (Reply(200, PAGE, HTML, stall_after=10, stall_seconds=6), PageOutcome.TIMEOUT, "read_timeout"),
        (Reply(302, headers={"Location": "/loop"}), PageOutcome.REDIRECT_LOOP, "redirect_loop"),
        (Reply(302, headers={"Location": "ftp://example.org/a"}), PageOutcome.BAD_URL, "bad_redirect_scheme"),
    ],
)
def test_each_failure_is_a_typed_outcome(
    feed_server: FeedServer, tmp_path: Path, reply: Reply, outcome: PageOutcome, error_type: str | None
) -> None:
    url = feed_server.route("/loop", reply)
    started = time.monotonic()
    result = page_fetcher(tmp_path).fetch(url)
    assert (result.outcome, result.error_type, result.body) == (outcome, error_type, None)
    assert time.monotonic() - started < 6  # a stalled page ends at the total deadline


def test_a_private_address_is_refused_without_a_request(feed_server: FeedServer, tmp_path: Path) -> None:
    strict = FetchSettings(max_attempts=1)
    url = feed_server.route("/a", Reply(200, PAGE, HTML))
    result = page_fetcher(tmp_path, fetch=strict).fetch(url)
    assert result.outcome is PageOutcome.PRIVATE_ADDRESS and result.error_type == "private_address"
    assert feed_server.requests == []  # not even robots.txt


def test_a_page_fetched_longer_ago_than_the_reuse_time_is_fetched_again(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.route("/revised", Reply(200, PAGE, HTML), Reply(200, PAGE + b"<p>Update</p>", HTML))
    first = page_fetcher(tmp_path, page_reuse_seconds=0.3).fetch(url)
    time.sleep(0.4)  # a streaming job meets a new revision of the article later
    second = page_fetcher(tmp_path, page_reuse_seconds=0.3).fetch(url)
    assert len(feed_server.hits("/revised")) == 2 and not second.shared
    assert second.body is not None and first.body is not None and second.body.endswith(b"Update</p>")
