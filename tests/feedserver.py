"""A real HTTP server on 127.0.0.1 whose answers the tests script, path by path.

Each path has a list of `Reply`s served in turn (the last one repeats) or a function of the
request. Replies can be slow, stall mid-body, drip one byte at a time (a slowloris server),
reset the connection, redirect or answer 304 to a conditional GET, so that fetching is tested
against real sockets rather than a mocked client.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    stall_after: int | None = None  # send this many body bytes, then stall for `stall_seconds`
    stall_seconds: float = 30.0
    # Send the answer one byte at a time, this many seconds apart (an honest Content-Length, a
    # server that never stalls long enough for a read timeout); `drip_head` drips the status
    # line and headers too, else only the body.
    drip_every: float | None = None
    drip_head: bool = False
    reset: bool = False  # close the connection with a TCP RST instead of answering
    gzip: bool = False  # gzip the body and say so in Content-Encoding


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    at: float


Route = list[Reply] | Callable[[Request], Reply]


class InFlight:
    """Requests being answered now and the most at once, over all the servers that share it."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


def conditional(
    body: bytes, etag: str, last_modified: str | None = None, **headers: str
) -> Callable[[Request], Reply]:
    """A feed that answers 304 when the client sends its ETag (or Last-Modified) back."""

    def answer(request: Request) -> Reply:
        if request.headers.get("if-none-match") == etag or (
            last_modified and request.headers.get("if-modified-since") == last_modified
        ):
            return Reply(304, headers={"ETag": etag})
        validators = {"ETag": etag} | ({"Last-Modified": last_modified} if last_modified else {})
        return Reply(200, body, {"Content-Type": "application/rss+xml", **validators, **headers})

    return answer


def gzip_bomb(decoded_bytes: int) -> bytes:
    """A small gzip body that decodes to `decoded_bytes` zero bytes."""
    return gzip.compress(b"\0" * decoded_bytes, compresslevel=9)


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 128  # many feeds fetched at once must not overflow the listen backlog

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up mid-answer (a timeout, a size cap) resets its socket: expected here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FeedServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        latency: float = 0.0,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        shared: InFlight | None = None,
    ) -> None:
        """`host` may be any 127.x.y.z address (each is a different host to a client); `latency`
        delays every answer, as a distant server would; `port` 0 lets the system pick one; with
        `tls` (a server context) it speaks HTTPS; `shared` counts its requests in flight together
        with other servers'."""
        self.host = host
        self.scheme = "https" if tls else "http"
        self.latency = latency
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0  # the most answered at once: what a per-host limit bounds
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; with Nagle on, the body waits for the client's
            # delayed ACK (~40 ms a response), which would swamp any latency a test sets.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                if shared is not None:
                    shared.enter()
                try:
                    server._handle(self)
                finally:
                    if shared is not None:
                        shared.leave()
                    with server._lock:
                        server.in_flight -= 1

        self._httpd = _QuietServer((host, port), Handler)
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        # A short poll interval: stop() waits for it, and every test stops a server.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def route(self, path: str, *replies: Reply | Callable[[Request], Reply]) -> str:
        """Serve `replies` in turn on `path` (the last repeats); returns the path's URL."""
        if len(replies) == 1 and callable(replies[0]) and not isinstance(replies[0], Reply):
            self.routes[path] = replies[0]
        else:
            self.routes[path] = [r for r in replies if isinstance(r, Reply)]
        return self.url(path)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reply(self, request: Request) -> Reply:
        route = self.routes.get(request.path.split("?", 1)[0])
        if route is None:
            return Reply(404, b"not found", {"Content-Type": "text/plain"})
        if callable(route):
            return route(request)
        with self._lock:
            index = self._served.get(request.path, 0)
            self._served[request.path] = index + 1
        return route[min(index, len(route) - 1)]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        request = Request(handler.path, {k.lower(): v for k, v in handler.headers.items()}, time.monotonic())
        with self._lock:
            self.requests.append(request)
        reply = self._next_reply(request)
        if self.latency:
            time.sleep(self.latency)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.reset:
            # SO_LINGER with a zero timeout makes close() send RST: a "connection reset by peer".
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return
        body = gzip.compress(reply.body) if reply.gzip else reply.body
        headers = {"Content-Length": str(len(body)), **reply.headers}
        if reply.gzip:
            headers.setdefault("Content-Encoding", "gzip")
        if reply.drip_every is not None:
            self._drip(handler, reply, headers, body)
            return
        handler.send_response(reply.status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            if reply.stall_after is not None:
                handler.wfile.write(body[: reply.stall_after])
                handler.wfile.flush()
                time.sleep(reply.stall_seconds)
                handler.close_connection = True
                return
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _drip(
        self, handler: BaseHTTPRequestHandler, reply: Reply, headers: dict[str, str], body: bytes
    ) -> None:
        head = f"HTTP/1.1 {reply.status} {handler.responses[reply.status][0]}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        if not reply.drip_head:
            handler.wfile.write(head.encode("latin-1"))
            handler.wfile.flush()
        data = (head.encode("latin-1") if reply.drip_head else b"") + body
        handler.close_connection = True
        try:
            for index in range(len(data)):
                handler.wfile.write(data[index : index + 1])
                handler.wfile.flush()
                time.sleep(reply.drip_every or 0.0)
        except (BrokenPipeError, ConnectionResetError):
            pass


def servers_on_one_port(*hosts: str, tries: int = 20) -> list[FeedServer]:
    """Started servers on the same port of several 127.x addresses: one name that resolves to
    either address reaches one or the other (what a DNS rebinding test needs)."""
    for _ in range(tries):
        first = FeedServer(hosts[0]).start()
        servers = [first]
        try:
            servers += [FeedServer(host, port=first.port).start() for host in hosts[1:]]
            return servers
        except OSError:  # that port is taken on another address: try another one
            for server in servers:
                server.stop()
    raise OSError(f"no free port on all of {hosts}")


class KeyState:
    """Beam's ReadModifyWriteState of one key, as the streaming runner keeps it (for polls run directly)."""

    def __init__(self) -> None:
        self.value: str | None = None

    def read(self) -> str | None:
        return self.value

    def write(self, value: str) -> None:
        self.value = value
