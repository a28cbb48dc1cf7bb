"""Beam PROCESS-environment command that hands the SDK worker to its TaskManager's worker pool.

Why: Beam's EXTERNAL environment names one worker-pool address for the whole pipeline, and on a real
cluster `localhost:50000` is a different pool on every TaskManager host (the pool is a sidecar of each
TaskManager). On one machine every TaskManager would reach the same pool. So each TaskManager is
started with `NEWSBEAM_WORKER_POOL=host:port` naming its own pool, and the pipeline's environment is
PROCESS with this script as its command: the TaskManager runs it with `--id` and `--provision_endpoint`
(Beam's process-environment contract), it asks the provision service for the control and logging
endpoints, and asks its TaskManager's pool (`apache_beam.runners.worker.worker_pool_main`) to start the
SDK worker, exactly as an EXTERNAL environment would. It then waits; when the TaskManager closes the
environment (SIGTERM) it asks the pool to stop the worker.

The pool (deploy/flink/worker_pool.py) answers once the worker is connected, or with an error when the
worker could not start; then, and when the pool cannot be reached, this command exits non-zero with the
reason, which Flink reports as the job's failure (while this command runs, the TaskManager waits).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

import grpc
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
    endpoints_pb2,
)

POOL_ENV = "NEWSBEAM_WORKER_POOL"
POOL_CONNECT_TIMEOUT_S = 10
# The pool answers StartWorker once the worker is connected (it gives a worker 120 s).
START_TIMEOUT_S = 150


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    args, _ = parser.parse_known_args(argv)
    pool = os.environ.get(POOL_ENV)
    if not pool:
        print(f"sdk_worker_via_pool: {POOL_ENV} is not set for this TaskManager", file=sys.stderr)
        return 2

    metadata = [("worker_id", args.id)]
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=metadata, timeout=60)
            .info
        )
    request = beam_fn_api_pb2.StartWorkerRequest(
        worker_id=args.id,
        control_endpoint=info.control_endpoint,
        logging_endpoint=info.logging_endpoint,
        artifact_endpoint=info.artifact_endpoint,
        provision_endpoint=endpoints_pb2.ApiServiceDescriptor(url=args.provision_endpoint),
    )
    pool_channel = grpc.insecure_channel(pool)
    try:
        grpc.channel_ready_future(pool_channel).result(timeout=POOL_CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        print(
            f"sdk_worker_via_pool: no worker pool answers at {pool} ({POOL_ENV}); is it running?",
            file=sys.stderr,
        )
        return 1
    stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(pool_channel)
    response = stub.StartWorker(request, timeout=START_TIMEOUT_S)
    if response.error:
        print(
            f"sdk_worker_via_pool: pool {pool} could not start the worker:\n{response.error}", file=sys.stderr
        )
        return 1
    print(f"sdk_worker_via_pool: worker {args.id} started by pool {pool}", file=sys.stderr, flush=True)

    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    with contextlib.suppress(grpc.RpcError):  # a pool that is gone has stopped its workers
        stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=args.id), timeout=30)
    pool_channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
