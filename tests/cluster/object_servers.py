"""Local object stores for the cluster tests, on 127.0.0.1: moto's S3 server and fake-gcs-server.

Both are installed into .cluster/ by `deploy/flink/cluster.py install` (`make cluster-deps`): moto from
PyPI into an environment of its own, fake-gcs-server built from its Go module. `serve_s3()` runs moto
one request at a time (tests/cluster/s3_server.py says why); `serve_gcs()` runs fake-gcs-server's
in-memory backend, which decides `ifGenerationMatch` under a lock as GCS does. `SlowLink` is a TCP proxy
that holds back every answer of the server for a while: a client behind it acts on what the store said
a moment ago, as one on a slow network (or a paused process) does.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests.conftest import PROJECT, require

CLUSTER = PROJECT / ".cluster"
MOTO_PYTHON = CLUSTER / "moto-venv" / "bin" / "python"
FAKE_GCS = CLUSTER / "fake-gcs" / "bin" / "fake-gcs-server"
S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def s3_beam_args(endpoint: str) -> list[str]:
    """Beam's own S3 options for the local server (Beam's S3 filesystem and the commit lock read them)."""
    return [
        f"--s3_endpoint_url={endpoint}",
        f"--s3_access_key_id={S3_KEYS['aws_access_key_id']}",
        f"--s3_secret_access_key={S3_KEYS['aws_secret_access_key']}",
        f"--s3_region_name={S3_KEYS['region_name']}",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _install(binary: Path, what: str) -> None:
    if not binary.exists():
        subprocess.run(
            [sys.executable, str(PROJECT / "deploy" / "flink" / "cluster.py"), "install"], timeout=900
        )
    require(binary.exists(), f"{what} is not installed at {binary} (make cluster-deps)")


@contextlib.contextmanager
def _serving(argv: list[str], port: int, name: str) -> Iterator[str]:
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, f"{name} exited with {server.returncode}"
            assert time.monotonic() < deadline, f"{name} did not listen within 30 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextlib.contextmanager
def serve_s3() -> Iterator[str]:
    """moto's S3 server on a free port; yields its endpoint URL."""
    _install(MOTO_PYTHON, "moto's S3 server")
    port = _free_port()
    script = str(PROJECT / "tests" / "cluster" / "s3_server.py")
    with _serving([str(MOTO_PYTHON), script, str(port)], port, "moto's S3 server") as endpoint:
        yield endpoint


@contextlib.contextmanager
def serve_gcs() -> Iterator[str]:
    """fake-gcs-server (in memory, plain HTTP) on a free port; yields its endpoint URL."""
    _install(FAKE_GCS, "fake-gcs-server")
    port = _free_port()
    argv = [str(FAKE_GCS), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
            "-port", str(port), "-log-level", "error"]  # fmt: skip
    with _serving(argv, port, "fake-gcs-server") as endpoint:
        yield endpoint


class SlowLink:
    """A proxy to 127.0.0.1:`port` that delivers each answer `delay` seconds after the server sent it.

    `watched` is set as soon as the server sends an answer containing `watch` (before the delay):
    the moment the server has told the client behind the link what the client will act on later.
    """

    def __init__(self, port: int, delay: float, watch: bytes = b"") -> None:
        self._target, self._delay, self._watch = port, delay, watch
        self.watched = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = [self._listener]
        self.port = int(self._listener.getsockname()[1])

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowLink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self._delay), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        # Each chunk leaves `delay` after it arrived (a reader and a writer, so delays never add up).
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def deliver() -> None:
            while True:
                arrived, data = chunks.get()
                time.sleep(max(0.0, arrived + delay - time.monotonic()))
                try:
                    if not data:
                        sink.shutdown(socket.SHUT_WR)
                        return
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=deliver, daemon=True).start()
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if delay and self._watch and self._watch in data:
                self.watched.set()
            chunks.put((time.monotonic(), data))
            if not data:
                return
