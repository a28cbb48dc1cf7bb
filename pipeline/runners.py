"""Choose the Beam runner explicitly, so that a local run never waits on a runner download.

Beam's `DirectRunner` may try to download the Prism runner binary first; newsbeam's `direct`
means Beam's in-process `FnApiRunner`, which runs batch pipelines with no download, in one process
or, with `--direct_running_mode=multi_processing --direct_num_workers=N`, in N worker processes.
`prism` uses a Prism binary built locally from Beam's Go module (`make prism`). Any other name is
handed to Beam as it is (FlinkRunner, SparkRunner, DataflowRunner, ...).

The streaming job does not let Beam's `PrismRunner` start Prism: that starts it as a child in the
launcher's process group, so a Ctrl-C in a terminal (SIGINT to the whole group) kills Prism before
the job has drained. `PrismServer` starts Prism in a session of its own (and, on Linux, tied to
the launcher's life, so a kill -9 of the launcher takes it along); the job is submitted to it with
Beam's PortableRunner and `--job_endpoint`, and Prism is stopped after the job has finished.

`flink` runs on the Flink cluster that `make cluster-up` starts (deploy/flink/cluster.py): Beam's
PortableRunner on its job server, with a PROCESS environment whose command hands each SDK worker to
the worker pool of the TaskManager that asked (one pool per TaskManager). Before a job is built, the
cluster's state file is checked against the machine: a file left by a cluster that is gone fails at once
("run make cluster-up") instead of after the job server's gRPC timeout. `dataflow` is Beam's
DataflowRunner; `newsbeam launch` fills in its options from configs/dataflow.yaml.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner

from pipeline.resources import checkout_path

LOCAL_ALIASES = frozenset({"direct", "directrunner", "fnapirunner", "local"})
PRISM_ALIASES = frozenset({"prism", "prismrunner"})
PRISM_ENV = "NEWSBEAM_PRISM"
PRISM_DEFAULT = ".prism/bin/prism"  # in the checkout (see resources.checkout_path)
FLINK_ALIASES = frozenset({"flink", "flink-cluster"})
FLINK_ENV = "NEWSBEAM_FLINK_CLUSTER"
FLINK_DEFAULT = ".cluster/flink/cluster.json"
# How long a TaskManager keeps a job's SDK worker once no task uses it. Beam's default, 0, stops it at
# the end of every task: a batch job on Flink runs its ~20 Python stages one after another, and each
# TaskManager then started (and stopped) a Python worker per stage, 5-20 s each on 2 busy cores. Kept for
# a minute, one worker per TaskManager serves every stage of the job; it ends a minute after the job.
FLINK_ENVIRONMENT_CACHE_MS = 60_000
DATAFLOW_ALIASES = frozenset({"dataflow", "dataflowrunner"})
CLUSTER_UP = "run `make cluster-up` (or set NEWSBEAM_FLINK_CLUSTER to a running cluster's cluster.json)"
PORT_CHECK_TIMEOUT_S = 2.0


class RunnerError(ValueError):
    pass


def prism_binary() -> Path:
    given = os.environ.get(PRISM_ENV)
    path = Path(given) if given else checkout_path(PRISM_DEFAULT)
    if not path.is_file():
        raise RunnerError(
            f"runner: the Prism binary {path} does not exist; build it with `make prism` or set {PRISM_ENV}"
        )
    return path


def make_runner(name: str) -> PipelineRunner | str:
    """A runner instance (local ones) or the name Beam resolves itself."""
    key = name.strip().lower()
    if key in LOCAL_ALIASES:
        return FnApiRunner()
    if key in PRISM_ALIASES:
        from apache_beam.runners.portability.prism_runner import PrismRunner

        return PrismRunner()
    if key in FLINK_ALIASES:
        return "PortableRunner"
    if key in DATAFLOW_ALIASES:
        return "DataflowRunner"
    return name


def runner_options(name: str) -> list[str]:
    """Extra pipeline flags a runner needs here (Prism's local binary: never a download)."""
    if name.strip().lower() in PRISM_ALIASES:
        # LOOPBACK: the SDK workers run in the launching process; Prism's default would be Docker.
        return [f"--prism_location={prism_binary().resolve()}", "--environment_type=LOOPBACK"]
    if name.strip().lower() in FLINK_ALIASES:
        return flink_options(flink_cluster())
    return []


def flink_state_path() -> Path:
    given = os.environ.get(FLINK_ENV)
    return Path(given) if given else checkout_path(FLINK_DEFAULT)


def flink_cluster() -> dict[str, object]:
    """The state file `make cluster-up` writes: ports, pids, the job endpoint and the worker command."""
    path = flink_state_path()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunnerError(
            f"runner: no Flink cluster state at {path}; start one with `make cluster-up` or set {FLINK_ENV}"
        ) from None
    except (OSError, ValueError) as error:
        raise RunnerError(f"runner: cannot read the Flink cluster state {path}: {error}") from None
    if not isinstance(state, dict) or not {"job_endpoint", "worker_command"} <= state.keys():
        raise RunnerError(f"runner: {path} is not a cluster state file written by deploy/flink/cluster.py")
    down = cluster_down_reasons(state)
    if down:
        raise RunnerError(f"runner: Flink cluster not running ({path}: {'; '.join(down)}); {CLUSTER_UP}")
    return state


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PORT_CHECK_TIMEOUT_S):
            return True
    except OSError:
        return False


def cluster_down_reasons(state: dict[str, Any]) -> list[str]:
    """Why the cluster a state file describes is not running (empty when its parts answer).

    The job endpoint must accept connections; the processes it records (on this machine) must exist.
    """
    reasons = []
    host, _, port = str(state["job_endpoint"]).rpartition(":")
    if not port.isdigit() or not _port_open(host or "localhost", int(port)):
        reasons.append(f"nothing listens on the job endpoint {state['job_endpoint']}")
    pids = state.get("pids", {})
    if isinstance(pids, dict):
        gone = sorted(name for name, pid in pids.items() if isinstance(pid, int) and not _pid_alive(pid))
        if gone:
            reasons.append(f"processes gone: {', '.join(gone)}")
    return reasons


class FlinkClusterOptions(PipelineOptions):
    """Java pipeline options newsbeam's Flink cluster sets, which Beam's Python SDK does not define.

    Defined here so the portable runner sends them to the job server with the others (it drops options
    it does not know); cluster.json lists their values (`pipeline_options`).
    """

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--pipeline_resources_detector_factory_class",
            default=None,
            help="Java: the factory of the detector of the jars a job stages (deploy/flink/cluster.py)",
        )
        parser.add_argument(
            "--max_bundle_time_mills",
            type=int,
            default=None,
            help="Java (FlinkPipelineOptions.maxBundleTimeMills, default 1000): the longest a bundle stays "
            "open; each stage of a streaming job waits up to this for its bundle to end",
        )


def flink_options(state: dict[str, object]) -> list[str]:
    """Pipeline flags for the local Flink cluster: its job server and the per-TaskManager worker pools.

    Parallelism equals the number of TaskManagers (one slot each), so every stage has a subtask, and
    so an SDK worker, on each TaskManager; that worker is kept for all the job's stages
    (`FLINK_ENVIRONMENT_CACHE_MS`). The state's `pipeline_options` are what every job on that
    cluster needs (there: stage no jars, the runner is on the cluster's classpath). Flags given on the
    command line come later and win.
    """
    command = json.dumps({"command": str(state["worker_command"])})
    cluster_flags = state.get("pipeline_options", [])
    if not isinstance(cluster_flags, list):
        raise RunnerError(
            f"runner: `pipeline_options` of the Flink cluster state is not a list: {cluster_flags!r}"
        )
    return [
        f"--job_endpoint={state['job_endpoint']}",
        "--environment_type=PROCESS",
        f"--environment_config={command}",
        f"--parallelism={state.get('parallelism', 2)}",
        f"--environment_cache_millis={FLINK_ENVIRONMENT_CACHE_MS}",
        *map(str, cluster_flags),
    ]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the launcher dies, however it dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


class PrismServer:
    """Prism as a job server in a session of its own (see the module docstring); a context manager.

    `endpoint` is the job endpoint to submit to, `pid` the Prism process, `log_path` its log.
    """

    def __init__(self, binary: Path, start_timeout: float = 60.0) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self.port = free_port()
        self.endpoint = f"localhost:{self.port}"
        self.log_path = Path(tempfile.gettempdir()) / f"newsbeam-prism-{os.getpid()}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> PrismServer:
        command = [str(self.binary), f"--job_port={self.port}", "--serve_http=false"]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        try:
            self._wait_until_listening(self._process)
        except BaseException:  # a Ctrl-C while waiting too: `__exit__` will not run, so stop it here
            self.stop()
            raise
        return self

    def _wait_until_listening(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RunnerError(f"runner: Prism exited {process.returncode} at start; {self._log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("localhost", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise RunnerError(f"runner: Prism did not listen on {self.endpoint} in {self.start_timeout:.0f}s")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to Prism's own group, SIGKILL after `grace` seconds; then its log is removed."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=grace)
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def _log_tail(self) -> str:
        try:
            return "its log ends: " + self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "it left no log"


def prism_job_options(server: PrismServer) -> list[str]:
    """Pipeline flags that submit to a running `PrismServer`, with the SDK workers in this process."""
    return [f"--job_endpoint={server.endpoint}", "--environment_type=LOOPBACK"]
