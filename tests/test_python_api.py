"""The Python API as a notebook uses it: `from pipeline import run_batch`, then the Parquet with DuckDB.

The script runs in a subprocess from a folder of its own (as a notebook would, away from the
checkout): settings built in Python, a run on the seed feeds the golden files describe, the typed
result read, the articles read back with DuckDB; then a config path with overrides, and the same
run id again, which commits nothing twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT, SEEDS

NOTEBOOK = """
import json, sys
import duckdb
from pipeline import ConfigError, Settings, run_batch

feeds, output, config = sys.argv[1:3], sys.argv[3], sys.argv[4]
result = run_batch(Settings(inputs=feeds, output=output))
files = result.article_files
titles = duckdb.sql(f"SELECT title FROM read_parquet({files!r}) ORDER BY title").fetchall()
again = run_batch(config, {"inputs": feeds[:1], "output": output + "-2"}, run_id="notebook-1")
repeated = run_batch(config, {"inputs": feeds[:1], "output": output + "-2"}, run_id="notebook-1")
try:
    run_batch(Settings(output=output))
    refused = None
except ConfigError as error:
    refused = str(error)
print(json.dumps({
    "counts": result.counts._asdict(),
    "titles": [title for (title,) in titles],
    "status": result.manifest["status"],
    "again": [again.counts.articles, again.already_committed, repeated.already_committed],
    "same_manifest": repeated.manifest["run_id"] == again.manifest["run_id"] == "notebook-1",
    "refused": refused,
}))
"""


def golden_titles(name: str) -> list[str]:
    articles = json.loads((PROJECT / "tests" / "data" / "normalized" / f"{name}.json").read_text("utf-8"))
    return [article["title"] for article in articles]


def test_a_notebook_runs_a_batch_and_reads_the_articles_back(tmp_path: Path) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK, encoding="utf-8")
    feeds = [str(SEEDS / "feeds" / "atom_de.xml"), str(SEEDS / "feeds" / "rss2_en.xml")]
    completed = subprocess.run(
        [sys.executable, str(script), *feeds, str(tmp_path / "out"), str(PROJECT / "configs" / "local.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    # rss2_en.xml lists one story twice under one guid: a run stores only its later text.
    expected = sorted({*golden_titles("atom_de.xml"), *golden_titles("rss2_en.xml")[1:]})
    assert seen["titles"] == expected
    assert seen["status"] == "committed"
    counts = seen["counts"]
    assert (counts["inputs"], counts["failed_inputs"], counts["articles"]) == (2, 0, len(expected))
    assert counts["entries"] == counts["articles"] + counts["duplicates"] + counts["dead_letters"]
    assert seen["again"] == [3, False, True] and seen["same_manifest"]
    assert seen["refused"] == "settings: inputs: no inputs; give --input or list them in the config"
