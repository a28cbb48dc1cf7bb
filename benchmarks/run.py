"""The benchmark suite: newsbeam against three baselines, stage costs, scaling, memory and accuracy.

    make bench                                        # python -m benchmarks.run: >= 50,000 articles
    python -m benchmarks.run --copies 2               # a smaller corpus while developing
    python -m benchmarks.run --only e2e,pool --copies 8   # some of: PARTS below
    python -m benchmarks.run --only scaling --scales 10000,100000,1000000
    python -m benchmarks.run ... --record             # keep the JSON (benchmarks/recorded/), new RESULTS.md
    python -m benchmarks.run --render                 # RESULTS.md again from the recorded JSON files

Parts, all on the same copies of the corpus in one run, so that their ratios are fair:
- `baseline` (a): the script users write first (feedparser and langdetect defaults, one process);
- `lean` (b): that script with newsbeam's parser and detector settings;
- `pool` (c): (b) on a `multiprocessing.Pool` of as many processes as newsbeam's workers (the headline);
- `e2e`: newsbeam (`run_batch`) with 1 and 2 workers, and its start-up cost (a run over one file);
- `stages`: newsbeam's stage functions in a plain loop over the same copies (Beam's overhead, like
  with like: the 1-worker pipeline's time less its start-up, against the loop);
- `scaling`: newsbeam with 2 workers at each of `--scales` articles, and (c) at those up to 100,000;
  copies beyond the work folder's are made in a temporary folder and removed after;
- `accuracy`: language accuracy on the lingua sentences.

Every measured step runs in a subprocess of its own (benchmarks/measure.py): wall and CPU time, and
peak memory as summed PSS of its process tree. Prints a table and writes everything as JSON to
`benchmarks/results/` (git-ignored). With `--record` the JSON is also kept in `benchmarks/recorded/`
(tracked) and `RESULTS.md`'s generated part is rewritten from every recorded JSON (benchmarks/results_md.py).
Exits non-zero, saying why, when the shared corpus is missing. Absolute times drift on a shared
machine (the load average is recorded per step); ratios within one run are the figures to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks import corpus
from benchmarks.measure import measured_commit, run_step
from benchmarks.results_md import RECORDED, render_text, write_results_md
from transforms.language import detector_code

RESULTS = corpus.REPO / "benchmarks" / "results"
ARTICLES_PER_COPY = 6_550  # written articles per copy of the corpus (200 feeds + 100 seed files)
DEFAULT_COPIES = 8  # 8 x 6,550 = 52,400 articles: at least 50,000
WORK_COPIES = 16  # copies kept in benchmarks/work/corpus; larger scales use a temporary folder
BASELINE_MAX_SCALE = 100_000  # the baselines run at scale points up to here (the 1M run is newsbeam's)
PARTS = ("baseline", "lean", "pool", "e2e", "stages", "scaling", "accuracy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=DEFAULT_COPIES, help="copies of the 200 feeds")
    parser.add_argument("--workers", type=int, default=2, help="newsbeam's workers = the pool's processes")
    parser.add_argument("--full", action="store_true", help="all scale points and all 1,000 sentences")
    parser.add_argument("--scales", default=None, help="comma-separated article counts for scaling")
    parser.add_argument("--sentences", type=int, default=None, help="lingua sentences per language")
    parser.add_argument("--only", default=None, help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--profile", action="store_true", help="profile the stage loop with pyinstrument")
    parser.add_argument("--record", action="store_true", help="keep the JSON and rewrite RESULTS.md")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite RESULTS.md from the recorded JSON"
    )
    parser.add_argument("--note", default="", help="a line saying what this run is for (kept in the JSON)")
    return parser


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


# --- agreement ----------------------------------------------------------------------------------


def agreement(baseline_files: list[Path], output: Path) -> dict[str, Any]:
    """Same language as the baseline where the baseline is more than 0.9 sure (joined on url)."""
    base = [
        row
        for path in baseline_files
        for row in pq.read_table(path, columns=["url", "language", "confidence"]).to_pylist()
    ]
    ours = (
        ds.dataset(output / "articles", format="parquet", partitioning="hive")
        .to_table(columns=["url", "language", "language_detected"])
        .to_pylist()
    )

    def unique_by_url(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        seen: dict[str, dict[str, Any] | None] = {}
        for row in rows:
            if row["url"]:
                seen[row["url"]] = None if row["url"] in seen else row
        return {url: row for url, row in seen.items() if row is not None}

    base_by_url, ours_by_url = unique_by_url(base), unique_by_url(ours)
    joined = [(b, ours_by_url[url]) for url, b in base_by_url.items() if url in ours_by_url]
    sure = [(b, o) for b, o in joined if b["confidence"] > 0.9]
    same = sum(detector_code(b["language"])[0] == o["language"] for b, o in sure)
    same_detected = sum(detector_code(b["language"])[0] == o["language_detected"] for b, o in sure)
    return {
        "baseline_articles": len(base),
        "joined_on_url": len(joined),
        "baseline_sure": len(sure),
        "same_language_percent": 100 * same / max(len(sure), 1),
        "same_detected_percent": 100 * same_detected / max(len(sure), 1),
    }


def parquet_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


# --- the run ------------------------------------------------------------------------------------


def per_second(step: dict[str, Any], key: str = "wall_seconds") -> float:
    return float(step["articles"]) / float(step[key]) if step.get(key) else 0.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        print(f"RESULTS.md rewritten from {len(write_results_md())} recorded runs")
        return 0
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        print(f"benchmark: unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.scales:
        scales = [int(s) for s in args.scales.split(",")]
    else:
        scales = [10_000, 50_000, 100_000] if args.full else [10_000, 100_000]
    scale_copies = {s: math.ceil(s / ARTICLES_PER_COPY) for s in scales}
    sentences = args.sentences or (1000 if args.full else 200)
    workers = args.workers
    work = corpus.WORK
    logs = work / "logs"
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "measured": measured_commit(),
        "machine": machine(),
        "copies": args.copies,
        "workers": workers,
    }

    try:
        in_work = [c for c in scale_copies.values() if c <= WORK_COPIES] if "scaling" in parts else []
        needed = max([args.copies, *in_work])
        clock = time.perf_counter()
        built = corpus.build(needed)
        print(f"corpus: {needed} copies in {built.root} ({time.perf_counter() - clock:.1f}s)", flush=True)
        if "accuracy" in parts:
            corpus.require(corpus.corpus_root() / corpus.SENTENCES_SUBDIR, "lingua sentences")
    except corpus.CorpusMissingError as error:
        print(error.code, file=sys.stderr)
        return 1
    inputs = built.inputs(args.copies)

    def step(name: str, module_args: list[str]) -> dict[str, Any]:
        print(f"running {name} ...", flush=True)
        result = run_step(module_args, logs / f"{name}.log")
        print(
            f"  {name}: {result.get('articles', '')} articles in {result['wall_seconds']:.1f}s "
            f"(load {result['load_average']['mean']:.1f})",
            flush=True,
        )
        return result

    baselines = {
        "baseline": ("baseline", [], work / "baseline.parquet"),
        "lean": ("baseline_lean", ["--lean"], work / "baseline-lean.parquet"),
        "pool": (f"baseline_pool_{workers}", ["--lean", "--processes", str(workers)], work / "baseline-pool"),
    }
    for part, (name, flags, out) in baselines.items():
        if part in parts:
            shutil.rmtree(out, ignore_errors=True)
            out.unlink(missing_ok=True)
            results[part] = step(name, ["benchmarks.baseline", *flags, str(out), *inputs])
    if "e2e" in parts:
        one_file = sorted((Path(inputs[0]) / "seeds").iterdir())[:1]
        for count in sorted({1, workers}):
            results[f"startup_w{count}"] = step(
                f"startup_w{count}",
                ["benchmarks.e2e", str(work / "out-startup"), str(count), str(one_file[0])],
            )
            out = work / f"out-w{count}"
            results[f"newsbeam_w{count}"] = step(
                f"newsbeam_w{count}", ["benchmarks.e2e", str(out), str(count), *inputs]
            )
        results["agreement"] = {
            part: agreement(parquet_files(baselines[part][2]), work / f"out-w{workers}")
            for part in ("baseline", "lean", "pool")
            if part in results
        }
    if "stages" in parts:
        profile = ["--profile", str(work / "profile.txt")] if args.profile else []
        results["stages"] = step("stages", ["benchmarks.stages", *profile, *inputs])
    if "scaling" in parts:
        results["scaling"] = scaling(scale_copies, built, args.copies, workers, results, step)
    if "accuracy" in parts:
        results["accuracy"] = step(
            "accuracy", ["benchmarks.accuracy", "--sentences", str(sentences), "--articles", "40"]
        )

    results["ratios"] = ratios(results)
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    text = json.dumps(results, indent=2, default=str)
    for path in (RESULTS / name, RESULTS / "latest.json"):
        path.write_text(text)
    if args.record:
        RECORDED.mkdir(parents=True, exist_ok=True)
        (RECORDED / name).write_text(text)
        write_results_md()
    print(render_text(results))
    print(f"\nresults: {RESULTS / name}" + (f" (recorded: {RECORDED / name})" if args.record else ""))
    return 0


def scaling(
    scale_copies: dict[int, int],
    built: corpus.Corpus,
    copies: int,
    workers: int,
    results: dict[str, Any],
    step: Any,
) -> list[dict[str, Any]]:
    """newsbeam at each scale point, and the pool baseline up to `BASELINE_MAX_SCALE` articles."""
    points = []
    for scale, count in scale_copies.items():
        point: dict[str, Any] = {"target": scale, "copies": count}
        temporary = None
        if count > WORK_COPIES:  # never into the repository: a temporary folder, removed after
            temporary = Path(tempfile.mkdtemp(prefix=f"newsbeam-scale-{scale}-"))
            clock = time.perf_counter()
            folders = corpus.build(count, temporary).inputs(count)
            point["corpus_seconds"] = time.perf_counter() - clock
            out_root = temporary
        else:
            folders, out_root = built.inputs(count), corpus.WORK
        try:
            if count == copies and f"newsbeam_w{workers}" in results:
                point["newsbeam"] = results[f"newsbeam_w{workers}"]
            else:
                point["newsbeam"] = step(
                    f"scale_{scale}",
                    ["benchmarks.e2e", str(out_root / f"out-scale-{scale}"), str(workers), *folders],
                )
            if scale <= BASELINE_MAX_SCALE:
                if count == copies and "pool" in results:
                    point["pool"] = results["pool"]
                else:
                    out = out_root / f"baseline-pool-scale-{scale}"
                    shutil.rmtree(out, ignore_errors=True)
                    point["pool"] = step(
                        f"scale_{scale}_pool",
                        ["benchmarks.baseline", "--lean", "--processes", str(workers), str(out), *folders],
                    )
        finally:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
        points.append(point)
    return points


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """newsbeam over each baseline (articles/s, CPU per article, memory); Beam overhead; memory growth."""
    out: dict[str, Any] = {}
    workers = results.get("workers", 2)
    for count in sorted({1, workers}):
        ours = results.get(f"newsbeam_w{count}")
        for part in ("baseline", "lean", "pool"):
            base = results.get(part)
            if not (base and ours):
                continue
            key = f"w{count}_over_{part}"
            out[key] = {
                "articles_per_second": per_second(ours) / per_second(base),
                "articles_per_second_inside": per_second(ours, "seconds") / per_second(base, "seconds"),
                "cpu_per_article": (base["cpu_seconds"] / base["articles"])
                / (ours["cpu_seconds"] / ours["articles"]),
                "peak_memory": ours["peak_tree_pss"] / base["peak_tree_pss"],
            }
    if f"w{workers}_over_pool" in out:
        out["headline_speed_over_pool"] = out[f"w{workers}_over_pool"]["articles_per_second"]
    stages, pipeline, startup = results.get("stages"), results.get("newsbeam_w1"), results.get("startup_w1")
    if stages and pipeline and startup:
        # Like with like: the same copies; the pipeline's fixed start-up (a run over one file) apart.
        loop_wall = stages["wall_seconds_inside"] / stages["articles"]
        loop_cpu = stages["cpu_seconds"] / stages["articles"]
        out["startup_seconds_w1"] = startup["seconds"]
        out["startup_cpu_seconds_w1"] = startup["cpu_seconds"]
        out["beam_overhead_wall_percent"] = 100 * (
            ((pipeline["seconds"] - startup["seconds"]) / pipeline["articles"]) / loop_wall - 1
        )
        out["beam_overhead_cpu_percent"] = 100 * (
            ((pipeline["cpu_seconds"] - startup["cpu_seconds"]) / pipeline["articles"]) / loop_cpu - 1
        )
    # A run that lost entries says nothing about memory per article.
    points = [s for s in results.get("scaling") or [] if not s["newsbeam"].get("unaccounted_entries")]
    if len(points) >= 2:
        first = points[0]["newsbeam"]
        growth = {}
        for point in points[1:]:
            run = point["newsbeam"]
            growth[str(point["target"])] = {
                "peak_over_first": run["peak_tree_pss"] / first["peak_tree_pss"],
                "kb_per_article": (run["peak_tree_pss"] - first["peak_tree_pss"])
                / max(run["articles"] - first["articles"], 1)
                / 1024,
            }
        out["memory_growth_from_first_scale"] = growth
    return out


if __name__ == "__main__":
    sys.exit(main())
