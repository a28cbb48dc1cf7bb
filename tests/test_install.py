"""`pip install` of the project gives a `newsbeam` that works from any directory.

The wheel is built from a copy of the source (offline: `--no-build-isolation`, the `wheel` package
of the test extra) and installed without dependencies into a fresh virtualenv whose `.pth` file
points at this environment's site-packages (so Beam is not installed again). `newsbeam run` then
runs from a folder outside the checkout with no flags: the default config and the seeds must come
from the installed package, and the datasets go where the report says.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import PROJECT, require, sql

SOURCE = ("pyproject.toml", "setup.py", "README.md", "pipeline", "transforms", "configs", "seeds")


def _run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    assert completed.returncode == 0, f"{command}\n{completed.stdout}\n{completed.stderr}"
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the newsbeam wheel installed; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    for name in SOURCE:
        origin = PROJECT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / name)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        root / "dist",
        source,
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("newsbeam-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root
        ).stdout.strip()
    )
    # Beam and the other dependencies from this environment, after the new one's own packages.
    (site / "shared-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=root,
    )
    return venv / "bin"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_installed_command_runs_from_any_directory(installed: Path, tmp_path: Path) -> None:
    where = _run(
        installed / "python", "-c", "import pipeline; print(pipeline.__file__)", cwd=tmp_path, env=clean_env()
    )
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # the wheel's copy, not the checkout
    version = _run(installed / "newsbeam", "--version", cwd=tmp_path, env=clean_env())
    assert version.stdout.startswith("newsbeam 0.1.0 (Apache Beam 2.62.0")

    run = _run(installed / "newsbeam", "run", cwd=tmp_path, env=clean_env())
    output = tmp_path / "output"
    assert f"writing into {output}" in run.stderr  # it says where it writes, before it writes
    assert re.search(rf"^  output: +{output}/articles, ", run.stdout, re.M), run.stdout
    articles = sql(
        f"SELECT source FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    sources = {Path(source) for (source,) in articles}
    shipped_seeds = installed.parent / "lib"
    assert len(articles) == 22 and all(shipped_seeds in s.parents for s in sources), sources
    assert {s.name for s in sources} >= {"000_c847d24acf547d54.txt", "rss2_en.xml", "rss2_ru_cp1251.xml"}


def test_the_installed_command_builds_the_dataflow_job(installed: Path, tmp_path: Path) -> None:
    """An installed copy has no setup.py to stage: its workers' image (deploy/dataflow) carries newsbeam."""
    try:
        from pipeline.launch import require_gcp_extra

        require_gcp_extra()
        has_gcp = True
    except Exception:
        has_gcp = False
    require(has_gcp, "Beam's gcp extra (make cluster-deps)")
    dry = _run(installed / "newsbeam", "launch", "--dry-run", cwd=tmp_path, env=clean_env())
    assert re.search(r"^  SDK image: +europe-west1-docker\.pkg\.dev/.+/worker:0\.1\.0$", dry.stdout, re.M)
    assert re.search(r"^  steps: +\d+ transforms$", dry.stdout, re.M), dry.stdout
