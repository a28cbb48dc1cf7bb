"""Start and stop a real Flink 1.19 cluster on 127.0.0.1 for newsbeam: `make cluster-up`, `cluster-down`.

    python deploy/flink/cluster.py up   [--state .cluster/flink] [--free-ports]
    python deploy/flink/cluster.py down [--state .cluster/flink]
    python deploy/flink/cluster.py status [--state .cluster/flink]

What runs (each its own process group, pids and ports in <state>/cluster.json, logs in <state>/log/):
  - a Flink JobManager and two TaskManagers (one slot each), from the Flink distribution that PyPI's
    `apache-flink-libraries` + `apache-flink` 1.19.3 carry, installed in .cluster/flink-venv (PyFlink pins
    an older Beam, so never into the project's .venv; only its jars and bin/ scripts are used);
  - Beam's Flink job server (`FlinkJobServerDriver`, Beam 2.62.0 = the Python SDK's version) run from
    the classpath Maven resolves for deploy/flink/pom.xml;
  - one Python worker pool (`apache_beam.runners.worker.worker_pool_main`, the project's .venv) per
    TaskManager; each TaskManager finds its own pool through NEWSBEAM_WORKER_POOL, see
    deploy/flink/sdk_worker_via_pool.py.

`newsbeam run --runner flink` reads <state>/cluster.json (see pipeline/runners.py) for the job endpoint and
the worker command. Installing is idempotent: a second `up` reuses the distribution and the classpath.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "flink"
CLUSTER_ROOT = ROOT / ".cluster"
FLINK_VENV = CLUSTER_ROOT / "flink-venv"
FLINK_VERSION = "1.19.3"
FLINK_PACKAGES = (f"apache-flink-libraries=={FLINK_VERSION}", f"apache-flink=={FLINK_VERSION}")
CLASSPATH_FILE = CLUSTER_ROOT / "flink-job-server.classpath"
# Spark reads the output back (deploy/spark/read_output.py); the 3.5 line is the one Beam's Spark runner
# (beam-runners-spark-3) is built for.
SPARK_VENV = CLUSTER_ROOT / "spark-venv"
SPARK_PACKAGE = "pyspark==3.5.7"
# A local S3-compatible server for the s3:// tests (tests/cluster/test_object_stores.py); its many
# dependencies stay out of the project's .venv.
MOTO_VENV = CLUSTER_ROOT / "moto-venv"
MOTO_PACKAGE = "moto[server]==5.2.5"
# A local GCS emulator for the gs:// commit-lock tests (tests/cluster/test_object_lock.py), built from its Go
# module (Go is already needed for Prism); it honours `ifGenerationMatch`, which the lock relies on.
FAKE_GCS_DIR = CLUSTER_ROOT / "fake-gcs"
FAKE_GCS_MODULE = "github.com/fsouza/fake-gcs-server@v1.56.1"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
TASK_MANAGERS = 2
FIXED_PORTS = {
    "jobmanager_rpc": 6123,
    "rest": 8081,
    "job": 8099,
    "artifact": 8098,
    "pool_0": 50000,
    "pool_1": 50001,
}
JAVA_OPENS = ("--add-opens=java.base/java.util=ALL-UNNAMED", "--add-opens=java.base/java.lang=ALL-UNNAMED")
STARTUP_TIMEOUT_S = 180.0


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def flink_home() -> Path:
    return FLINK_VENV / "lib" / "python3.11" / "site-packages" / "pyflink"


def install_flink() -> Path:
    """The Flink distribution from PyPI, in an environment of its own (idempotent)."""
    home = flink_home()
    marker = FLINK_VENV / f".installed-{FLINK_VERSION}"
    if marker.exists() and (home / "bin" / "jobmanager.sh").exists():
        return home
    log(f"installing Flink {FLINK_VERSION} from PyPI into {FLINK_VENV}")
    if not (FLINK_VENV / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLINK_VENV)], check=True)
    pip = [str(FLINK_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, FLINK_PACKAGES[0]], check=True)
    # PyFlink's Python dependencies (an older Beam among them) are not needed: only bin/ and conf/.
    subprocess.run([*pip, "--no-deps", FLINK_PACKAGES[1]], check=True)
    for script in (home / "bin").glob("*.sh"):
        script.chmod(0o755)
    marker.touch()
    return home


def install_venv(venv: Path, package: str) -> Path:
    """`package` in an environment of its own (idempotent); returns the environment's bin/ folder."""
    marker = venv / f".installed-{package}"
    if not marker.exists():
        log(f"installing {package} into {venv}")
        if not (venv / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        # Each helper environment's whole tree is pinned, as the project's own is by constraints.txt.
        constraints = ROOT / "deploy" / "constraints" / f"{venv.name}.txt"
        subprocess.run([*pip, "-c", str(constraints), package], check=True)
        marker.touch()
    return venv / "bin"


def install_go_binary(folder: Path, module: str) -> Path:
    """`go install module@version` into folder/bin (idempotent); returns the binary."""
    binary = folder / "bin" / module.split("@")[0].rsplit("/", 1)[-1]
    marker = folder / f".installed-{module.replace('/', '_')}"
    if marker.exists() and binary.exists():
        return binary
    if shutil.which("go") is None:
        raise SystemExit(f"cluster: Go is needed to build {module} (https://go.dev/dl/)")
    log(f"building {module} into {binary.parent}")
    go_flags = f"{os.environ.get('GOFLAGS', '')} -mod=mod".strip()
    env = os.environ | {"GOBIN": str(binary.parent), "GOFLAGS": go_flags}
    subprocess.run(["go", "install", module], check=True, env=env)
    marker.touch()
    return binary


def job_server_classpath() -> str:
    """Beam's Flink job server classpath, resolved by Maven once per pom change."""
    pom = DEPLOY / "pom.xml"
    if not CLASSPATH_FILE.exists() or CLASSPATH_FILE.stat().st_mtime < pom.stat().st_mtime:
        log("resolving Beam's Flink job server with Maven")
        CLUSTER_ROOT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mvn", "-B", "-q", "-f", str(pom), "dependency:build-classpath",
             f"-Dmdep.outputFile={CLASSPATH_FILE}"],
            check=True,
        )  # fmt: skip
    return CLASSPATH_FILE.read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def write_conf(home: Path, state: Path, ports: dict[str, int]) -> Path:
    conf_dir = state / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties"):
        shutil.copy(home / "conf" / name, conf_dir / name)
    conf = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    conf["jobmanager"]["rpc"]["port"] = ports["jobmanager_rpc"]
    conf["rest"]["port"] = ports["rest"]
    conf["io"] = {"tmp": {"dirs": str(state / "tmp")}}
    (state / "tmp").mkdir(exist_ok=True)
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return conf_dir


def worker_command(state: Path) -> Path:
    """The PROCESS-environment command: the project's Python running sdk_worker_via_pool.py."""
    command = state / "sdk_worker"
    command.write_text(
        f'#!/bin/sh\nexec "{PROJECT_PYTHON}" "{DEPLOY / "sdk_worker_via_pool.py"}" "$@"\n', encoding="utf-8"
    )
    command.chmod(0o755)
    return command


def _spawn(name: str, argv: list[str], state: Path, env: dict[str, str]) -> int:
    out = open(state / "log" / f"{name}.out", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
    )
    out.close()
    return process.pid


def read_state(state: Path) -> dict[str, Any]:
    path = state / "cluster.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, exited (a zombie still answers kill 0)
    except ChildProcessError:
        pass  # not our child: started by an earlier `up`
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _taskmanagers(rest_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/taskmanagers", timeout=2) as response:
            return len(json.load(response)["taskmanagers"])
    except OSError:
        return -1


def healthy(info: dict[str, Any]) -> list[str]:
    """What is not up yet (empty when the cluster is healthy)."""
    missing = [name for name, pid in info["pids"].items() if not _alive(pid)]
    ports = info["ports"]
    missing += [f"port {name}" for name in ("job", "pool_0", "pool_1") if not port_open(ports[name])]
    if _taskmanagers(ports["rest"]) != TASK_MANAGERS:
        missing.append(f"{TASK_MANAGERS} registered TaskManagers")
    return missing


def up(state: Path, free_ports: bool) -> dict[str, Any]:
    existing = read_state(state)
    if existing and not healthy(existing):
        log(f"already running: {state / 'cluster.json'}")
        return existing
    if existing:
        down(state)
    home = install_flink()
    classpath = job_server_classpath()
    ports = {name: free_port() for name in FIXED_PORTS} if free_ports else dict(FIXED_PORTS)
    busy = [f"{name}={port}" for name, port in ports.items() if port_open(port)]
    if busy:
        raise SystemExit(f"cluster: ports already in use: {', '.join(busy)} (try --free-ports)")
    state.mkdir(parents=True, exist_ok=True)
    (state / "log").mkdir(exist_ok=True)
    conf_dir = write_conf(home, state, ports)
    base_env = {
        **os.environ,
        "FLINK_CONF_DIR": str(conf_dir),
        "FLINK_LOG_DIR": str(state / "log"),
        # The pools start SDK workers as `python -c ...`: the project's interpreter must come first.
        "PATH": f"{PROJECT_PYTHON.parent}:{os.environ.get('PATH', '')}",
    }
    pids: dict[str, int] = {}
    info: dict[str, Any] = {"state": str(state), "ports": ports, "pids": pids}
    try:
        pids["jobmanager"] = _spawn(
            "jobmanager", [str(home / "bin" / "jobmanager.sh"), "start-foreground"], state,
            {**base_env, "FLINK_IDENT_STRING": "newsbeam"},
        )  # fmt: skip
        for index in range(TASK_MANAGERS):
            pool = f"localhost:{ports[f'pool_{index}']}"
            pids[f"pool_{index}"] = _spawn(
                f"pool_{index}",
                [str(PROJECT_PYTHON), "-m", "apache_beam.runners.worker.worker_pool_main",
                 f"--service_port={ports[f'pool_{index}']}"],
                state, base_env,
            )  # fmt: skip
            pids[f"taskmanager_{index}"] = _spawn(
                f"taskmanager_{index}",
                [str(home / "bin" / "taskmanager.sh"), "start-foreground"],
                state,
                {**base_env, "FLINK_IDENT_STRING": f"newsbeam-tm{index}", "NEWSBEAM_WORKER_POOL": pool},
            )
        pids["job_server"] = _spawn(
            "job_server",
            ["java", *JAVA_OPENS, "-cp", classpath, "org.apache.beam.runners.flink.FlinkJobServerDriver",
             f"--flink-master=127.0.0.1:{ports['rest']}", f"--flink-conf-dir={conf_dir}",
             f"--job-port={ports['job']}", f"--artifact-port={ports['artifact']}", "--expansion-port=0"],
            state, base_env,
        )  # fmt: skip
        info["job_endpoint"] = f"localhost:{ports['job']}"
        info["worker_command"] = str(worker_command(state))
        info["parallelism"] = TASK_MANAGERS
        (state / "cluster.json").write_text(json.dumps(info, indent=2))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while missing := healthy(info):
            if time.monotonic() > deadline:
                raise SystemExit(f"cluster: not healthy after {STARTUP_TIMEOUT_S:.0f}s: {', '.join(missing)}")
            dead = [name for name, pid in pids.items() if not _alive(pid)]
            if dead:
                raise SystemExit(f"cluster: {', '.join(dead)} exited; see {state / 'log'}")
            time.sleep(1)
    except BaseException:
        down(state)
        raise
    log(f"up: Flink REST http://127.0.0.1:{ports['rest']}, job endpoint {info['job_endpoint']}")
    return info


def down(state: Path) -> None:
    info = read_state(state)
    pids: dict[str, int] = info.get("pids", {})
    # Each component leads its own process group (start_new_session): the group holds what it started
    # (a pool's SDK workers, the JVM a Flink script execs).
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.3)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (state / "cluster.json").unlink(missing_ok=True)
    if pids:
        log(f"down: stopped {len(pids)} processes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("up", "down", "status", "install"))
    parser.add_argument("--state", type=Path, default=CLUSTER_ROOT / "flink")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    args = parser.parse_args(argv)
    state = args.state.resolve()
    if args.command == "install":
        install_flink()
        job_server_classpath()
        install_venv(SPARK_VENV, SPARK_PACKAGE)
        install_venv(MOTO_VENV, MOTO_PACKAGE)
        install_go_binary(FAKE_GCS_DIR, FAKE_GCS_MODULE)
    elif args.command == "up":
        up(state, args.free_ports)
    elif args.command == "down":
        down(state)
    else:
        info = read_state(state)
        if not info:
            print("down")
            return 1
        missing = healthy(info)
        print("healthy" if not missing else f"unhealthy: {', '.join(missing)}")
        return 1 if missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
