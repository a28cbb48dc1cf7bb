"""A Python worker pool beside a TaskManager: Beam's worker-pool service, starting newsbeam's SDK worker.

    python deploy/flink/worker_pool.py --service_port=50000

It answers Beam's `BeamFnExternalWorkerPool` service (StartWorker, StopWorker) as Beam's
`apache_beam.runners.worker.worker_pool_main` does, with two differences that keep a job from hanging:
  - each worker runs this pool's own interpreter (`sys.executable`, deploy/flink/sdk_harness.py), never
    whatever `python` comes first on PATH;
  - StartWorker answers only once the worker says it is connected (sdk_harness.py prints READY); a worker
    that exits before that is returned as an error with the end of its stderr, so the TaskManager's
    environment command (deploy/flink/sdk_worker_via_pool.py) exits and Flink fails the job at once.
The workers' stderr (their warnings and newsbeam's INFO lines) is copied into this pool's log.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

HARNESS = Path(__file__).resolve().parent / "sdk_harness.py"
READY_TIMEOUT_S = 120.0  # the harness waits up to 60 s for the control channel, then gives up
STOP_TIMEOUT_S = 10.0
STDERR_TAIL_LINES = 30
log = logging.getLogger("newsbeam.worker_pool")


class Worker:
    """One SDK worker process; its stdout says when it is ready, its stderr goes to the pool's log."""

    def __init__(self, worker_id: str, command: list[str]) -> None:
        self.worker_id = worker_id
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.ready = threading.Event()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "READY":
                self.ready.set()
            else:  # drained, so that a chatty worker never blocks on a full pipe
                sys.stderr.write(f"[worker {self.worker_id} stdout] {line}")

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_tail.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()

    def wait_ready(self, timeout: float) -> str | None:
        """None once the worker is ready; otherwise why it is not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return None
            if self.process.poll() is not None:
                for reader in self._readers:
                    reader.join(timeout=2)  # the rest of its stderr
                tail = "".join(self.stderr_tail).strip() or "(no output)"
                return f"exited with status {self.process.returncode} before it started:\n{tail}"
        return f"did not connect within {timeout:.0f}s"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WorkerPool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
    def __init__(self, python: str = sys.executable, ready_timeout: float = READY_TIMEOUT_S) -> None:
        self.python = python
        self.ready_timeout = ready_timeout
        self.workers: dict[str, Worker] = {}
        self._lock = threading.Lock()

    def command(self, request: beam_fn_api_pb2.StartWorkerRequest) -> list[str]:
        return [
            self.python,
            str(HARNESS),
            f"--id={request.worker_id}",
            f"--control_endpoint={request.control_endpoint.url}",
            f"--logging_endpoint={request.logging_endpoint.url}",
            f"--provision_endpoint={request.provision_endpoint.url}",
        ]

    def StartWorker(  # the gRPC method's name
        self, request: beam_fn_api_pb2.StartWorkerRequest, context: object
    ) -> beam_fn_api_pb2.StartWorkerResponse:
        try:
            worker = Worker(request.worker_id, self.command(request))
        except OSError as error:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"cannot run {self.python}: {error}")
        with self._lock:
            self.workers[request.worker_id] = worker
        log.info("worker %s: started with %s (pid %d)", request.worker_id, self.python, worker.process.pid)
        problem = worker.wait_ready(self.ready_timeout)
        if problem is None:
            log.info("worker %s: connected", request.worker_id)
            return beam_fn_api_pb2.StartWorkerResponse()
        worker.stop()
        with self._lock:
            self.workers.pop(request.worker_id, None)
        message = f"worker {request.worker_id} ({self.python} {HARNESS.name}) {problem}"
        log.error("%s", message)
        return beam_fn_api_pb2.StartWorkerResponse(error=message)

    def StopWorker(  # the gRPC method's name
        self, request: beam_fn_api_pb2.StopWorkerRequest, context: object
    ) -> beam_fn_api_pb2.StopWorkerResponse:
        with self._lock:
            worker = self.workers.pop(request.worker_id, None)
        if worker is not None:
            log.info("worker %s: stopping", request.worker_id)
            worker.stop()
        return beam_fn_api_pb2.StopWorkerResponse()

    def stop_all(self) -> None:
        with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for worker in workers:
            worker.stop()


def serve(port: int, pool: WorkerPool) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--service_port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    pool = WorkerPool()
    server, port = serve(args.service_port, pool)
    log.info("listening on 127.0.0.1:%d; workers run %s %s", port, pool.python, HARNESS)
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    server.stop(grace=2)
    with contextlib.suppress(Exception):
        pool.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
