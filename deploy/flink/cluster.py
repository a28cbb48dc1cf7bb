"""Start and stop a real Flink 1.19 cluster on 127.0.0.1 for newsbeam: `make cluster-up`, `cluster-down`.

    python deploy/flink/cluster.py up     [--state .cluster/flink] [--standard-ports]
    python deploy/flink/cluster.py down   [--state .cluster/flink]
    python deploy/flink/cluster.py status [--state .cluster/flink]   # health, web UI, job endpoint
    python deploy/flink/cluster.py install                           # what `up` needs, into .cluster/

`--state` is the folder of one cluster (its cluster.json, conf/, lib/, log/, tmp/): several clusters can
run side by side, each in its own folder. Ports are free ones the OS picks (the default, so that clusters
and other programs never collide; `up` and `status` print the web UI's address); `--standard-ports` asks
for Flink's and Beam's usual ones instead (web UI 8081, job server 8099, ...) and fails at once, naming
each, when one is taken. (`--free-ports`, the old flag for the default, is still accepted.)

What runs (each its own process group, pids and ports in <state>/cluster.json, logs in <state>/log/):
  - a Flink JobManager and two TaskManagers (one slot each), from the Flink distribution that PyPI's
    `apache-flink-libraries` + `apache-flink` 1.19.3 carry, installed in .cluster/flink-venv (PyFlink pins
    an older Beam, so never into the project's .venv; only its jars and bin/ scripts are used);
  - Beam's Flink job server (`FlinkJobServerDriver`, Beam 2.62.0 = the Python SDK's version) run from
    the classpath Maven resolves for deploy/flink/pom.xml;
  - one Python worker pool (deploy/flink/worker_pool.py, run by the project's .venv Python, which also
    runs every SDK worker it starts) per TaskManager; each TaskManager finds its own pool through
    NEWSBEAM_WORKER_POOL, see deploy/flink/sdk_worker_via_pool.py.

The runner's jars (the job server's classpath, less the Flink jars the distribution has and the job
server's own SLF4J binding) are put on the cluster's classpath, in <state>/lib/ (FLINK_LIB_DIR) beside the
distribution's own: a job then ships no jars (deploy/flink/java/.../ClusterProvidedResources.java, selected
by the `pipeline_options` cluster.json lists), where Beam's default would upload the whole 158 MB classpath
with every job and every TaskManager would keep a copy of it per job.

`newsbeam run --runner flink` reads <state>/cluster.json (see pipeline/runners.py) for the job endpoint and
the worker command. Installing is idempotent: a second `up` reuses the distribution and the classpath.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "flink"
CLUSTER_ROOT = ROOT / ".cluster"
FLINK_VENV = CLUSTER_ROOT / "flink-venv"
FLINK_VERSION = "1.19.3"
FLINK_PACKAGES = (f"apache-flink-libraries=={FLINK_VERSION}", f"apache-flink=={FLINK_VERSION}")
POM = DEPLOY / "pom.xml"
JAVA_SOURCES = DEPLOY / "java"
# Tells the job server to stage no jars: the cluster has the runner on its classpath (see the docstring).
RESOURCES_FACTORY = "io.newsbeam.flink.ClusterProvidedResources"
# Jars of the job server's classpath the cluster's lib/ must not get twice (by Maven repository folder):
# Flink's own (flink-dist has them all) and SLF4J (Flink's lib/ has the API and its log4j binding).
PROVIDED_BY_FLINK = ("/org/apache/flink/", "/org/slf4j/")
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
STANDARD_PORTS = {
    "jobmanager_rpc": 6123,
    "rest": 8081,
    "job": 8099,
    "artifact": 8098,
    "pool_0": 50000,
    "pool_1": 50001,
}
JAVA_OPENS = ("--add-opens=java.base/java.util=ALL-UNNAMED", "--add-opens=java.base/java.lang=ALL-UNNAMED")
# slf4j-simple (the job server's binding, deploy/flink/pom.xml): INFO and up, with times, to stderr.
JOB_SERVER_LOGGING = (
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
    # One line per configuration key and per Beam type, for every job: noise.
    "-Dorg.slf4j.simpleLogger.log.org.apache.flink.configuration.GlobalConfiguration=warn",
    "-Dorg.slf4j.simpleLogger.log.org.apache.flink.api.java.typeutils.TypeExtractor=warn",
)
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


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return sha.hexdigest()[:12]


def _publish(temporary: Path, final: Path) -> None:
    """Atomically: several checkouts may share .cluster/ and install at the same time."""
    os.replace(temporary, final)


def job_server_classpath() -> str:
    """Beam's Flink job server classpath, resolved by Maven once per pom content (not its mtime)."""
    path = CLUSTER_ROOT / f"flink-job-server-{_digest(POM)}.classpath"
    if not path.exists():
        log("resolving Beam's Flink job server with Maven")
        CLUSTER_ROOT.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["mvn", "-B", "-q", "-f", str(POM), "dependency:build-classpath",
             f"-Dmdep.outputFile={partial}"],
            check=True,
        )  # fmt: skip
        _publish(partial, path)
    return path.read_text().strip()


def newsbeam_flink_jar(classpath: str) -> Path:
    """deploy/flink/java compiled against the job server's classpath, as a jar (once per source)."""
    sources = sorted(JAVA_SOURCES.rglob("*.java"))
    jar = CLUSTER_ROOT / f"newsbeam-flink-{_digest(POM, *sources)}.jar"
    if jar.exists():
        return jar
    if shutil.which("javac") is None:
        raise SystemExit("cluster: javac (a JDK 17) is needed to build deploy/flink/java")
    log(f"compiling {len(sources)} Java source(s) into {jar.name}")
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run(
            ["javac", "--release", "17", "-cp", classpath, "-d", classes, *map(str, sources)], check=True
        )
        partial = jar.with_suffix(f".{os.getpid()}.tmp")
        with zipfile.ZipFile(partial, "w") as archive:
            for compiled in sorted(Path(classes).rglob("*.class")):
                archive.write(compiled, compiled.relative_to(classes).as_posix())
    _publish(partial, jar)
    return jar


def cluster_lib(home: Path, state: Path, classpath: str, newsbeam_jar: Path) -> Path:
    """<state>/lib: the distribution's lib/ plus the runner's jars it lacks (links, not copies)."""
    lib = state / "lib"
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir(parents=True)
    jars = [*sorted((home / "lib").glob("*.jar")), newsbeam_jar]
    entries = classpath.split(os.pathsep)
    jars += [Path(entry) for entry in entries if not any(folder in entry for folder in PROVIDED_BY_FLINK)]
    for jar in jars:
        link = lib / jar.name
        if not link.exists():
            link.symlink_to(jar)
    return lib


def beam_version() -> str:
    """The Beam version of the job server (deploy/flink/pom.xml), which the workers' SDK must equal."""
    found = re.search(r"<beam.version>([^<]+)</beam.version>", POM.read_text())
    if found is None:
        raise SystemExit(f"cluster: no <beam.version> in {POM}")
    return found.group(1)


def check_project_python() -> None:
    """The pools and their workers run PROJECT_PYTHON: it must import Beam at the job server's version."""
    want = beam_version()
    done = subprocess.run(
        [str(PROJECT_PYTHON), "-c", "import apache_beam; print(apache_beam.__version__)"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    have = done.stdout.strip()
    if done.returncode != 0 or have != want:
        reason = done.stderr.strip().splitlines()[-1:] if done.returncode else [f"it has Beam {have}"]
        raise SystemExit(
            f"cluster: the worker pools run {PROJECT_PYTHON}, which must have Apache Beam {want} "
            f"(the job server's); {' '.join(reason)} (make venv)"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def choose_ports(standard: bool) -> dict[str, int]:
    """Free ports the OS picks (the default), or Flink's and Beam's usual ones."""
    if standard:
        return dict(STANDARD_PORTS)
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(STANDARD_PORTS):  # never the same port twice
        ports = {name: free_port() for name in STANDARD_PORTS}
    return ports


def taken_ports(ports: dict[str, int]) -> list[str]:
    """The ports among `ports` that something already listens on, as `name=port`."""
    return [f"{name}={port}" for name, port in ports.items() if port_open(port)]


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


def pool_argv(port: int) -> list[str]:
    """A TaskManager's worker pool: the project's Python, by its path (see deploy/flink/worker_pool.py)."""
    return [str(PROJECT_PYTHON), str(DEPLOY / "worker_pool.py"), f"--service_port={port}"]


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


def web_ui(info: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{info['ports']['rest']}"


def up(state: Path, standard_ports: bool = False) -> dict[str, Any]:
    existing = read_state(state)
    if existing and not healthy(existing):
        log(f"already running: {state / 'cluster.json'}; web UI {web_ui(existing)}")
        return existing
    if existing:
        down(state)
    ports = choose_ports(standard_ports)
    busy = taken_ports(ports)
    if busy:
        raise SystemExit(
            f"cluster: ports already in use: {', '.join(busy)}; another cluster or program listens there "
            "(stop it, e.g. `make cluster-down`, or start without --standard-ports to use free ports)"
        )
    check_project_python()
    home = install_flink()
    classpath = job_server_classpath()
    newsbeam_jar = newsbeam_flink_jar(classpath)
    state.mkdir(parents=True, exist_ok=True)
    (state / "log").mkdir(exist_ok=True)
    conf_dir = write_conf(home, state, ports)
    lib = cluster_lib(home, state, classpath, newsbeam_jar)
    base_env = {
        **os.environ,
        "FLINK_CONF_DIR": str(conf_dir),
        "FLINK_LOG_DIR": str(state / "log"),
        "FLINK_LIB_DIR": str(lib),
        # The pools run PROJECT_PYTHON by its path and their workers run the pool's interpreter; this is
        # for anything else a component starts by name.
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
            pool = f"127.0.0.1:{ports[f'pool_{index}']}"
            pids[f"pool_{index}"] = _spawn(
                f"pool_{index}", pool_argv(ports[f"pool_{index}"]), state, base_env
            )
            pids[f"taskmanager_{index}"] = _spawn(
                f"taskmanager_{index}",
                [str(home / "bin" / "taskmanager.sh"), "start-foreground"],
                state,
                {**base_env, "FLINK_IDENT_STRING": f"newsbeam-tm{index}", "NEWSBEAM_WORKER_POOL": pool},
            )
        pids["job_server"] = _spawn(
            "job_server",
            ["java", *JAVA_OPENS, *JOB_SERVER_LOGGING, "-cp", f"{classpath}{os.pathsep}{newsbeam_jar}",
             "org.apache.beam.runners.flink.FlinkJobServerDriver",
             f"--flink-master=127.0.0.1:{ports['rest']}", f"--flink-conf-dir={conf_dir}",
             f"--job-port={ports['job']}", f"--artifact-port={ports['artifact']}", "--expansion-port=0"],
            state, base_env,
        )  # fmt: skip
        info["job_endpoint"] = f"localhost:{ports['job']}"
        info["worker_command"] = str(worker_command(state))
        info["parallelism"] = TASK_MANAGERS
        info["web_ui"] = web_ui(info)
        # Flags every job on this cluster needs (pipeline/runners.py adds them): ship no jars.
        info["pipeline_options"] = [f"--pipeline_resources_detector_factory_class={RESOURCES_FACTORY}"]
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
    log(f"up: Flink web UI {info['web_ui']}, job endpoint {info['job_endpoint']}, state {state}")
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
    parser.add_argument(
        "--standard-ports", action="store_true",
        help=f"Flink's and Beam's usual ports ({', '.join(f'{k}={v}' for k, v in STANDARD_PORTS.items())}) "
        "instead of free ones; fails when one is taken",
    )  # fmt: skip
    parser.add_argument(
        "--free-ports", action="store_true", help="free ports (the default; kept for scripts)"
    )
    args = parser.parse_args(argv)
    state = args.state.resolve()
    if args.command == "install":
        install_flink()
        newsbeam_flink_jar(job_server_classpath())
        install_venv(SPARK_VENV, SPARK_PACKAGE)
        install_venv(MOTO_VENV, MOTO_PACKAGE)
        install_go_binary(FAKE_GCS_DIR, FAKE_GCS_MODULE)
    elif args.command == "up":
        if args.standard_ports and args.free_ports:
            parser.error("--standard-ports and --free-ports exclude each other")
        up(state, standard_ports=args.standard_ports)
    elif args.command == "down":
        down(state)
    else:
        info = read_state(state)
        if not info:
            print("down")
            return 1
        missing = healthy(info)
        print("healthy" if not missing else f"unhealthy: {', '.join(missing)}")
        print(f"web UI:       {web_ui(info)}")
        print(f"job endpoint: {info['job_endpoint']}")
        print(f"logs:         {state / 'log'}")
        return 1 if missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
