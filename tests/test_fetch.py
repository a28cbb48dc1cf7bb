"""fetch() against a real HTTP server on 127.0.0.1: every way a feed can go wrong ends as a named result."""

from __future__ import annotations

import base64
import gzip
import socket
import ssl
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

import transforms.fetch as fetch_module
import transforms.fetch_connection as connection_module
from tests.feedserver import FeedServer, Reply, conditional, gzip_bomb, servers_on_one_port
from transforms.credentials import carry_credentials, redact_url, split_credentials
from transforms.fetch import (
    FetchSettings,
    check_url,
    fetch,
    make_session,
    max_age_seconds,
    retry_after_seconds,
)
from transforms.fetch_connection import HopPolicy, check_addresses
from transforms.source_errors import FetchError, error_class

RSS = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
    b"<item><title>One</title><link>http://example.org/1</link></item></channel></rss>"
)
FAST = FetchSettings(
    allow_private_hosts=True,
    connect_timeout=1.0,
    read_timeout=0.5,
    total_timeout=5.0,
    max_attempts=2,
    backoff_base=0.01,
    max_retry_after=2.0,
    max_bytes=64 * 1024,
)


@pytest.fixture
def session() -> requests.Session:
    return make_session(FAST)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A fake system resolver: each name in the returned dict answers its addresses in turn, one
    per lookup (the last repeats), as a rebinding DNS server does; 127.0.0.2 plays a public address."""
    answers: dict[str, list[str]] = {}
    real_getaddrinfo = socket.getaddrinfo
    real_ip_is_private = connection_module.ip_is_private

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        queue = answers[host]
        ip = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def fake_ip_is_private(ip: str) -> bool:
        return ip != "127.0.0.2" and real_ip_is_private(ip)

    for module in (fetch_module, connection_module):  # the address rule, and the redirect's origin
        monkeypatch.setattr(module, "ip_is_private", fake_ip_is_private)
    return answers


def test_200_with_validators_then_304_without_body(
    feed_server: FeedServer, session: requests.Session
) -> None:
    url = feed_server.route("/feed", conditional(RSS, '"v1"', "Sat, 28 Nov 2026 10:00:00 GMT"))
    first = fetch(session, url, FAST)
    assert first.ok and first.body == RSS
    assert (first.etag, first.last_modified) == ('"v1"', "Sat, 28 Nov 2026 10:00:00 GMT")

    second = fetch(session, url, FAST, etag=first.etag, last_modified=first.last_modified)
    assert second.not_modified and second.status == 304 and second.body is None and second.error_type is None
    sent = feed_server.hits("/feed")[-1].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Sat, 28 Nov 2026 10:00:00 GMT"


def test_sends_user_agent_naming_the_project_and_feed_accept(
    feed_server: FeedServer, session: requests.Session
) -> None:
    url = feed_server.route("/feed", Reply(200, RSS))
    fetch(session, url, FAST)
    headers = feed_server.hits("/feed")[0].headers
    assert headers["user-agent"].startswith("newsbeam/")
    assert "application/rss+xml" in headers["accept"] and "application/atom+xml" in headers["accept"]
    assert headers["accept-encoding"] == "gzip, deflate"


def test_500_then_200_is_retried(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(500, b"oops"), Reply(200, RSS))
    result = fetch(session, url, FAST)
    assert result.ok and result.body == RSS and result.attempts == 2
    assert len(feed_server.hits("/feed")) == 2


def test_500_every_time_fails_after_max_attempts(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(503, b"down"))
    result = fetch(session, url, FAST)
    assert (result.error_type, result.status, result.attempts, result.error_class) == (
        "http_503",
        503,
        2,
        "http",
    )
    assert result.body is None


def test_429_waits_for_retry_after(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(429, headers={"Retry-After": "1"}), Reply(200, RSS))
    waits: list[float] = []
    result = fetch(session, url, FAST, sleep=waits.append)
    assert result.ok and result.attempts == 2
    assert waits == [1.0]


def test_429_with_retry_after_over_the_cap_fails_at_once(
    feed_server: FeedServer, session: requests.Session
) -> None:
    url = feed_server.route("/feed", Reply(429, headers={"Retry-After": "3600"}), Reply(200, RSS))
    waits: list[float] = []
    result = fetch(session, url, FAST, sleep=waits.append)
    assert result.error_type == "http_429" and result.attempts == 1 and waits == []
    assert "over the cap" in (result.message or "")


def test_4xx_is_not_retried(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(403, b"no"))
    result = fetch(session, url, FAST)
    assert (result.error_type, result.attempts) == ("http_403", 1)
    assert len(feed_server.hits("/feed")) == 1


def test_connection_reset_is_retried_then_named(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(reset=True))
    result = fetch(session, url, FAST)
    assert (result.error_type, result.error_class, result.attempts) == ("connection_error", "network", 2)
    assert len(feed_server.hits("/feed")) == 2


def test_reset_then_200_recovers(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(reset=True), Reply(200, RSS))
    result = fetch(session, url, FAST)
    assert result.ok and result.body == RSS and result.attempts == 2


def test_server_that_stalls_mid_body_times_out(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(200, RSS, stall_after=20, stall_seconds=3))
    result = fetch(session, url, FAST)
    assert result.error_type == "read_timeout" and result.error_class == "timeout"
    assert result.body is None
    assert result.elapsed_ms < 4000  # two attempts of 0.5 s each, not the 3 s stall twice


def test_total_deadline_caps_a_slow_drip(feed_server: FeedServer, session: requests.Session) -> None:
    settings = FetchSettings(allow_private_hosts=True, read_timeout=5, total_timeout=0.6, max_attempts=3)
    url = feed_server.route("/feed", Reply(200, RSS, delay=0.3, stall_after=10, stall_seconds=2))
    result = fetch(make_session(settings), url, settings)
    assert result.error_type in ("read_timeout", "timeout")
    assert result.elapsed_ms < 1500


def test_body_over_the_cap(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/big", Reply(200, b"x" * (FAST.max_bytes + 1)))
    result = fetch(session, url, FAST)
    assert (result.error_type, result.error_class, result.body) == ("too_large", "body", None)


def test_gzip_body_over_the_cap_after_decoding(feed_server: FeedServer, session: requests.Session) -> None:
    body = b"<rss>" + b"a" * (FAST.max_bytes * 2) + b"</rss>"  # compresses to well under the cap
    url = feed_server.route("/big", Reply(200, body, gzip=True))
    result = fetch(session, url, FAST)
    assert result.error_type == "too_large" and "after decoding" in (result.message or "")


def test_the_cap_after_decoding_is_exact(feed_server: FeedServer, session: requests.Session) -> None:
    # urllib3 decodes in bounded steps; the cap is the decoded size, to the byte.
    exact = feed_server.route("/exact", Reply(200, b"a" * FAST.max_bytes, gzip=True))
    over = feed_server.route("/over", Reply(200, b"a" * (FAST.max_bytes + 1), gzip=True))
    assert fetch(session, exact, FAST).body == b"a" * FAST.max_bytes
    assert fetch(session, over, FAST).error_type == "too_large"


def test_gzip_bomb_stops_at_the_cap(feed_server: FeedServer, session: requests.Session) -> None:
    bomb = gzip_bomb(200 * 1024 * 1024)  # 200 MB of zeros in about 200 KB
    url = feed_server.route("/bomb", Reply(200, bomb, {"Content-Encoding": "gzip"}))
    result = fetch(session, url, FAST)
    assert result.error_type == "too_large" and result.body is None


def test_gzip_and_deflate_bodies_are_decoded(feed_server: FeedServer, session: requests.Session) -> None:
    zlib_wrapped = feed_server.route("/zlib", Reply(200, zlib.compress(RSS), {"Content-Encoding": "deflate"}))
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(RSS) + raw.flush()
    raw_url = feed_server.route("/raw", Reply(200, raw_deflate, {"Content-Encoding": "deflate"}))
    gzipped = feed_server.route("/gz", Reply(200, RSS, gzip=True))
    two_members = feed_server.route(
        "/two", Reply(200, gzip.compress(RSS[:50]) + gzip.compress(RSS[50:]), {"Content-Encoding": "gzip"})
    )
    for url in (zlib_wrapped, raw_url, gzipped, two_members):
        result = fetch(session, url, FAST)
        assert result.ok and result.body == RSS, url


def test_padding_after_the_gzip_stream_is_ignored(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/pad", Reply(200, gzip.compress(RSS) + b"\0" * 16, {"Content-Encoding": "gzip"}))
    result = fetch(session, url, FAST)
    assert result.ok and result.body == RSS


def test_broken_gzip_is_named(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/bad", Reply(200, b"this is not gzip at all", {"Content-Encoding": "gzip"}))
    assert fetch(session, url, FAST).error_type == "bad_encoding"


def test_redirect_loop(feed_server: FeedServer, session: requests.Session) -> None:
    feed_server.route("/a", Reply(302, headers={"Location": "/b"}))
    url = feed_server.route("/b", Reply(302, headers={"Location": "/a"}))
    result = fetch(session, url, FAST)
    assert result.error_type == "redirect_loop" and result.error_class == "policy"
    assert len(feed_server.hits("/a")) == 1


def test_too_many_redirects(feed_server: FeedServer, session: requests.Session) -> None:
    for hop in range(10):
        feed_server.route(f"/r{hop}", Reply(302, headers={"Location": f"/r{hop + 1}"}))
    result = fetch(session, feed_server.url("/r0"), FAST)
    assert result.error_type == "too_many_redirects"
    assert len(feed_server.hits(f"/r{FAST.max_redirects}")) == 1
    assert feed_server.hits(f"/r{FAST.max_redirects + 1}") == []


def test_redirect_to_a_file_url_is_refused(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(302, headers={"Location": "file:///etc/passwd"}))
    result = fetch(session, url, FAST)
    assert result.error_type == "bad_redirect_scheme" and result.body is None
    assert "/etc/passwd" in (result.message or "")


def test_non_http_url_is_refused() -> None:
    result = fetch(make_session(FAST), "file:///etc/passwd", FAST)
    assert result.error_type == "bad_scheme" and result.attempts == 1


def test_private_address_refused_without_allow_private_hosts(feed_server: FeedServer) -> None:
    settings = FetchSettings(max_attempts=1)
    url = feed_server.route("/feed", Reply(200, RSS))
    result = fetch(make_session(settings), url, settings)
    assert result.error_type == "private_address"
    assert feed_server.hits("/feed") == []  # refused before any request


def test_redirect_from_public_to_private_refused_even_when_private_hosts_are_allowed(
    feed_server: FeedServer, fake_dns: dict[str, list[str]]
) -> None:
    # 127.0.0.2 plays a public host; the metadata server on 127.0.0.1 is private (as it is).
    metadata = feed_server.route("/latest/meta-data", Reply(200, b"secret"))
    with FeedServer("127.0.0.2") as public:
        url = public.route("/feed", Reply(302, headers={"Location": metadata}))
        result = fetch(make_session(FAST), url, FAST)
    assert result.error_type == "private_redirect" and result.body is None
    assert feed_server.requests == []


def test_redirect_between_private_hosts_allowed_for_intranets(
    feed_server: FeedServer, session: requests.Session
) -> None:
    feed_server.route("/new", Reply(200, RSS))
    url = feed_server.route(
        "/feed", Reply(302, headers={"Location": f"http://localhost:{feed_server.port}/new"})
    )
    result = fetch(session, url, FAST)
    assert result.ok and result.body == RSS
    assert result.final_url == f"http://localhost:{feed_server.port}/new"


def test_url_and_address_rules() -> None:
    listed, redirected = (
        HopPolicy(allow_private=True),
        HopPolicy(allow_private=True, redirected_from_public=True),
    )
    strict = HopPolicy(allow_private=False)
    assert check_url("http://news.example/feed") == "news.example"
    with pytest.raises(FetchError, match="non-http"):
        check_url("ftp://news.example/")
    with pytest.raises(FetchError, match="redirect target"):
        check_url("file:///etc/passwd", redirect=True)
    assert check_addresses("news.example", ["93.184.216.34"], strict) is True
    assert check_addresses("intranet", ["10.0.0.5"], listed) is False
    assert check_addresses("intranet", ["10.0.0.5"], HopPolicy(True, redirected_from_public=False)) is False
    for addresses, policy in (
        (["169.254.169.254"], redirected),
        (["10.0.0.5"], strict),
        (["93.184.216.34", "127.0.0.1"], strict),  # one private address makes the host private
        (["::ffff:127.0.0.1"], strict),
    ):
        with pytest.raises(FetchError, match="private"):
            check_addresses("host", addresses, policy)


def test_permanent_redirect_is_reported_temporary_is_not(
    feed_server: FeedServer, session: requests.Session
) -> None:
    new = feed_server.route("/new", Reply(200, RSS))
    moved = feed_server.route("/moved", Reply(301, headers={"Location": "/new"}))
    temporary = feed_server.route("/temp", Reply(302, headers={"Location": "/new"}))
    chain = feed_server.route("/chain", Reply(301, headers={"Location": "/temp"}))
    assert fetch(session, moved, FAST).permanent_redirect == new
    assert fetch(session, temporary, FAST).permanent_redirect is None
    assert fetch(session, chain, FAST).permanent_redirect is None  # a temporary hop breaks the chain


def test_cache_control_max_age_is_read(feed_server: FeedServer, session: requests.Session) -> None:
    url = feed_server.route("/feed", Reply(200, RSS, {"Cache-Control": "public, max-age=900"}))
    assert fetch(session, url, FAST).max_age == 900


def test_connection_refused_is_a_network_error(session: requests.Session) -> None:
    with FeedServer() as server:
        url = server.url("/gone")
    result = fetch(session, url, FAST)
    assert result.error_type == "connection_error" and result.error_class == "network"


def test_header_helpers() -> None:
    assert max_age_seconds("public, max-age=300") == 300
    assert max_age_seconds("s-maxage=60") == 60
    assert max_age_seconds("no-cache") == 0
    assert max_age_seconds(None) is None and max_age_seconds("public") is None
    assert retry_after_seconds("120") == 120.0
    later = datetime.now(UTC) + timedelta(seconds=90)
    waited = retry_after_seconds(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert waited is not None and 80 <= waited <= 91
    assert retry_after_seconds("soon") is None
    assert [error_class(e) for e in ("http_404", "read_timeout", "private_redirect", "html_page", None)] == [
        "http",
        "timeout",
        "policy",
        "content",
        None,
    ]


# --- a slowloris server: the deadline holds on the socket, not only between reads --------------


def test_a_body_dripping_one_byte_at_a_time_ends_at_the_total_deadline(feed_server: FeedServer) -> None:
    # An honest Content-Length and a byte every 50 ms: no read ever times out, yet the body would
    # take 10 s. The fetch must end at its 1 s deadline, as a timeout, without retrying.
    settings = FetchSettings(allow_private_hosts=True, read_timeout=2, total_timeout=1.0, max_attempts=3)
    url = feed_server.route("/drip", Reply(200, RSS, drip_every=0.05))
    result = fetch(make_session(settings), url, settings)
    assert (result.error_type, result.error_class, result.body) == ("timeout", "timeout", None)
    assert "total time limit of 1s" in (result.message or "")
    assert 1000 <= result.elapsed_ms < 2000  # not the 8 s the body takes
    assert len(feed_server.hits("/drip")) == 1


def test_headers_dripping_one_byte_at_a_time_end_at_the_total_deadline(feed_server: FeedServer) -> None:
    settings = FetchSettings(allow_private_hosts=True, read_timeout=2, total_timeout=1.0, max_attempts=3)
    url = feed_server.route("/drip", Reply(200, RSS, drip_every=0.05, drip_head=True))
    result = fetch(make_session(settings), url, settings)
    assert (result.error_type, result.status, result.body) == ("timeout", None, None)
    assert 1000 <= result.elapsed_ms < 2000  # not the 8 s the body takes


# --- DNS rebinding: the address checked is the address connected to ---------------------------


def test_a_rebinding_name_never_reaches_the_private_address(fake_dns: dict[str, list[str]]) -> None:
    # Resolved for the check: "public" 127.0.0.2; for the connection: 127.0.0.1. One lookup only,
    # and the request goes to the address that was checked, with the name in its Host header.
    settings = FetchSettings(allow_private_hosts=False, max_attempts=1, connect_timeout=1, read_timeout=1)
    public, private = servers_on_one_port("127.0.0.2", "127.0.0.1")
    try:
        public.route("/feed", Reply(200, RSS))
        private.route("/feed", Reply(200, b"secret"))
        fake_dns["rebind.test"] = ["127.0.0.2", "127.0.0.1"]
        result = fetch(make_session(settings), f"http://rebind.test:{public.port}/feed", settings)
        assert private.requests == []
        assert result.ok and result.body == RSS
        assert [r.headers["host"] for r in public.hits("/feed")] == [f"rebind.test:{public.port}"]
    finally:
        public.stop()
        private.stop()


def test_a_redirect_to_a_rebinding_name_never_reaches_the_private_address(
    fake_dns: dict[str, list[str]],
) -> None:
    # Intranet feeds allowed, but a public host may not redirect to a private address: the hop's
    # name resolves "public" for the check and private for the connection.
    settings = FetchSettings(allow_private_hosts=True, max_attempts=1, connect_timeout=1, read_timeout=1)
    public, private = servers_on_one_port("127.0.0.2", "127.0.0.1")
    try:
        hop = f"http://metadata.test:{public.port}/latest/meta-data"
        public.route("/feed", Reply(302, headers={"Location": hop}))
        public.route("/latest/meta-data", Reply(200, RSS))
        private.route("/latest/meta-data", Reply(200, b"secret"))
        fake_dns["metadata.test"] = ["127.0.0.2", "127.0.0.1"]
        result = fetch(make_session(settings), f"http://127.0.0.2:{public.port}/feed", settings)
        assert private.requests == []
        assert result.ok and result.body == RSS and result.final_url == hop
    finally:
        public.stop()
        private.stop()


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


def test_https_connects_to_the_checked_address_and_verifies_the_name(
    fake_dns: dict[str, list[str]], test_ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the TCP peer is pinned: SNI and the certificate check still use the feed's name.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("feeds.test").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # as a user trusts a private CA
    settings = FetchSettings(allow_private_hosts=False, max_attempts=1, connect_timeout=1, read_timeout=1)
    fake_dns["feeds.test"] = ["127.0.0.2"]
    fake_dns["other.test"] = ["127.0.0.2"]
    with FeedServer("127.0.0.2", tls=context) as server:
        server.route("/feed", Reply(200, RSS))
        session = make_session(settings)
        result = fetch(session, f"https://feeds.test:{server.port}/feed", settings)
        assert result.ok and result.body == RSS
        assert server.hits("/feed")[0].headers["host"] == f"feeds.test:{server.port}"
        for wrong_name in (f"https://other.test:{server.port}/feed", f"https://127.0.0.2:{server.port}/feed"):
            refused = fetch(session, wrong_name, settings)
            assert refused.error_type == "tls_error", wrong_name  # the certificate is for feeds.test
        assert len(server.hits("/feed")) == 1


# --- credentials in a feed URL -------------------------------------------------------------------


def test_redact_url() -> None:
    assert (
        redact_url("https://user:pa55@host.example:8443/feed?x=1") == "https://***@host.example:8443/feed?x=1"
    )
    assert redact_url("http://token@host.example/") == "http://***@host.example/"
    assert redact_url("http://us%40er:p@ss@host.example/a@b") == "http://***@host.example/a@b"
    assert redact_url("http://***@host.example/") == "http://***@host.example/"
    for unchanged in ("http://host.example/a@b", "/data/feeds/a@b.xml", "mailto:a@b.example", "seeds/x.txt"):
        assert redact_url(unchanged) == unchanged
    assert (
        redact_url("ConnectionError: http://u:p@a.example/ and https://v:q@b.example/")
        == "ConnectionError: http://***@a.example/ and https://***@b.example/"
    )


def test_split_and_carry_credentials() -> None:
    assert split_credentials("http://us%40er:p%3Ass@host.example/f") == (
        "http://host.example/f",
        ("us@er", "p:ss"),
    )
    assert split_credentials("http://host.example/f") == ("http://host.example/f", None)
    listed = "http://u:p@host.example/old"
    assert carry_credentials("http://host.example/new", listed) == "http://u:p@host.example/new"
    assert carry_credentials("https://host.example/new", listed) == "https://u:p@host.example/new"
    assert carry_credentials("http://elsewhere.example/new", listed) == "http://elsewhere.example/new"
    assert carry_credentials("http://host.example:8080/new", listed) == "http://host.example:8080/new"
    assert (
        carry_credentials("http://host.example/new", "http://host.example/old") == "http://host.example/new"
    )


def test_credentials_go_as_basic_auth_to_their_origin_only(feed_server: FeedServer) -> None:
    with FeedServer("127.0.0.2") as other:
        other.route("/feed", Reply(200, RSS))
        feed_server.route("/here", Reply(200, RSS))
        feed_server.route("/moved", Reply(301, headers={"Location": "/here"}))
        feed_server.route("/away", Reply(302, headers={"Location": other.url("/feed")}))
        listed = f"http://alice:pa55w0rd@127.0.0.1:{feed_server.port}"
        session = make_session(FAST)
        moved = fetch(session, f"{listed}/moved", FAST)
        away = fetch(session, f"{listed}/away", FAST)
    auth = "Basic " + base64.b64encode(b"alice:pa55w0rd").decode()
    assert [r.headers.get("authorization") for r in feed_server.requests] == [auth, auth, auth]
    assert [r.headers.get("authorization") for r in other.requests] == [None]  # another origin
    assert moved.ok and away.ok
    assert moved.url == f"http://***@127.0.0.1:{feed_server.port}/moved"
    assert moved.final_url == moved.permanent_redirect == feed_server.url("/here")
    assert away.final_url == other.url("/feed")


def test_credentials_in_a_redirect_location_are_dropped(feed_server: FeedServer) -> None:
    target = f"http://mallory:stolen@127.0.0.1:{feed_server.port}/feed"
    feed_server.route("/feed", Reply(200, RSS))
    url = feed_server.route("/go", Reply(301, headers={"Location": target}))
    result = fetch(make_session(FAST), url, FAST)
    assert result.ok and result.final_url == result.permanent_redirect == feed_server.url("/feed")
    assert "authorization" not in feed_server.hits("/feed")[0].headers


def _unanswering(address: str, port: int) -> list[socket.socket]:
    """A listener on address:port whose accept queue is full: a connect to it waits unanswered
    (its SYN dropped), as one to a blackholed address does."""
    listener = socket.socket()
    listener.bind((address, port))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=1)
    return [listener, filler]


def _resolve_to(monkeypatch: pytest.MonkeyPatch, name: str, addresses: list[str]) -> None:
    """`name` answers all of `addresses` in one lookup, in that order (several A records)."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, service: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real_getaddrinfo(host, service, *args, **kwargs)
        family, kind, protocol = socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [(family, kind, protocol, "", (ip, int(service))) for ip in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_an_unanswering_address_falls_back_to_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # A dual-stack or multi-A host whose first addresses are blackholed is still fetched, as
    # urllib3's own create_connection does: a connect timeout moves on to the next address.
    (server,) = servers_on_one_port("127.0.0.4")
    url = server.route("/feed", Reply(body=RSS))
    sockets = _unanswering("127.0.0.2", server.port) + _unanswering("127.0.0.3", server.port)
    _resolve_to(monkeypatch, "multi.example", ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    settings = FetchSettings(allow_private_hosts=True, connect_timeout=0.3, total_timeout=5.0, max_attempts=1)
    try:
        result = fetch(make_session(settings), url.replace("127.0.0.4", "multi.example"), settings)
    finally:
        server.stop()
        for sock in sockets:
            sock.close()
    assert result.ok and result.body == RSS, result


def test_many_unanswering_addresses_end_at_the_total_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Five blackholed addresses at 0.6 s each would take 3 s: the 1 s deadline holds across them.
    addresses = [f"127.0.0.{last}" for last in range(2, 7)]
    sockets = _unanswering(addresses[0], 0)
    port = sockets[0].getsockname()[1]
    for address in addresses[1:]:
        sockets += _unanswering(address, port)
    _resolve_to(monkeypatch, "many.example", addresses)
    settings = FetchSettings(allow_private_hosts=True, connect_timeout=0.6, total_timeout=1.0, max_attempts=1)
    try:
        result = fetch(make_session(settings), f"http://many.example:{port}/feed", settings)
    finally:
        for sock in sockets:
            sock.close()
    assert result.error_type == "timeout", result
    assert 900 <= result.elapsed_ms < 1500


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052): a DNS64 network's gateway reaches 169.254.169.254
        "64:ff9b::a00:1",  # ... and 10.0.0.1
        "64:ff9b:1::7f00:1",  # the local-use NAT64 prefix (RFC 8215)
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:7f00:1::1",
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "0.0.0.0",
        "::",
    ],
)
def test_an_ipv6_address_holding_a_private_ipv4_one_is_private(address: str) -> None:
    with pytest.raises(FetchError) as refused:
        check_addresses("rebind.example", [address], HopPolicy())
    assert refused.value.error_type == "private_address"


@pytest.mark.parametrize(
    "address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2606:4700::1111"]
)
def test_an_ipv6_address_holding_a_public_ipv4_one_is_public(address: str) -> None:
    assert check_addresses("public.example", [address], HopPolicy()) is True


def test_credentials_are_sent_as_the_bytes_the_url_spells(feed_server: FeedServer) -> None:
    # RFC 7617: user and password in UTF-8; percent-escapes give their bytes exactly ("%FF" too).
    # requests would encode a str as Latin-1 and fail on '€', quoting the password's character.
    feed_server.route("/feed", Reply(200, RSS))
    base = f"127.0.0.1:{feed_server.port}/feed"
    unicode_password = fetch(make_session(FAST), f"http://j%C3%BCrgen:p%E2%82%AC55@{base}", FAST)
    raw_byte = fetch(make_session(FAST), f"http://bob:p%FF%3A@{base}", FAST)
    unescaped = fetch(make_session(FAST), f"http://zoë:naïve€@{base}", FAST)
    assert unicode_password.ok and raw_byte.ok and unescaped.ok, (unicode_password, raw_byte, unescaped)
    sent = [base64.b64decode(r.headers["authorization"].removeprefix("Basic ")) for r in feed_server.requests]
    assert sent == ["jürgen:p€55".encode(), b"bob:p\xff:", "zoë:naïve€".encode()]
