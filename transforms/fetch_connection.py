"""The fetcher's connection: the address rule applied inside it, and every read under a deadline.

A private, loopback or link-local address is refused outright unless `allow_private_hosts` is set
for intranet feeds, and even then never reached by a redirect from a public host (the classic way
to reach a cloud metadata server). The rule runs inside the connection: the name is resolved once,
the addresses are checked, and the socket connects to exactly those addresses (the Host header,
TLS SNI and certificate check keep the name), so a name that resolves to a public address for the
check and to a private one for the connection (DNS rebinding) never reaches the private address.
Every read of status line, headers and body waits at most for what is left of the fetch's total
deadline, so a server that drips one byte at a time is cut off at the deadline.

`fetch()` sets the `HopPolicy` of each request in a context variable (`HOP`) around it; a
session used outside fetch() gets the strict rule and no deadline.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from transforms.source_errors import FetchError


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
HOP: ContextVar[HopPolicy] = ContextVar("newsbeam_fetch_hop", default=_STRICT)


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
        deadline = HOP.get().deadline
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
        hop = HOP.get()
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
        hop = HOP.get()
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


class PinnedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with pinned, deadline-bound connections (through a proxy too, where the
    address checked is the proxy's, as it is the one connected to)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _PINNED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _PINNED_POOLS
        return manager
