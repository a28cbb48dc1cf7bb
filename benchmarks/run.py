"""The benchmark suite: newsbeam against the baseline script, stage costs, scaling and accuracy.

    make bench                                   # python -m benchmarks.run: >= 50,000 articles
    python -m benchmarks.run --copies 2          # a smaller corpus while developing
    python -m benchmarks.run --full              # all scale points (10k, 50k, 100k) and 1,000 sentences
    python -m benchmarks.run --only accuracy     # some of: baseline e2e stages scaling accuracy

Every measured step runs in a subprocess of its own, so that its peak memory (the sum over the
process and its workers) is its own. Prints a table and writes everything as JSON to
`benchmarks/results/` (git-ignored). Exits non-zero, saying why, when the shared corpus is missing.
Absolute times drift on a shared machine; the ratios to the baseline, measured side by side in the
same run, are the figures to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks import corpus
from benchmarks.measure import run_step
from transforms.language import detector_code

RESULTS = corpus.REPO / "benchmarks" / "results"
ARTICLES_PER_COPY = 6_550  # written articles per copy of the corpus (200 feeds + 100 seed files)
DEFAULT_COPIES = 8  # 8 x 6,550 = 52,400 articles: at least 50,000
PARTS = ("baseline", "e2e", "stages", "scaling", "accuracy")
MB = 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=DEFAULT_COPIES, help="copies of the 200 feeds")
    parser.add_argument("--full", action="store_true", help="all scale points and all 1,000 sentences")
    parser.add_argument("--scales", default=None, help="comma-separated article counts for scaling")
    parser.add_argument("--stage-copies", type=int, default=1, help="copies the plain stage loop reads")
    parser.add_argument("--sentences", type=int, default=None, help="lingua sentences per language")
    parser.add_argument("--only", default=None, help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--profile", action="store_true", help="profile the stage loop with pyinstrument")
    return parser


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


# --- agreement ----------------------------------------------------------------------------------


def agreement(baseline_file: Path, output: Path) -> dict[str, Any]:
    """Same language as the baseline where the baseline is more than 0.9 sure (joined on url)."""
    base = pq.read_table(baseline_file, columns=["url", "language", "confidence"]).to_pylist()
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


# --- the run ------------------------------------------------------------------------------------


def per_second(step: dict[str, Any], key: str = "wall_seconds") -> float:
    return float(step["articles"]) / float(step[key]) if step.get(key) else 0.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        print(f"benchmark: unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.scales:
        scales = [int(s) for s in args.scales.split(",")]
    else:
        scales = [10_000, 50_000, 100_000] if args.full else [10_000, 50_000]
    scale_copies = {s: math.ceil(s / ARTICLES_PER_COPY) for s in scales}
    sentences = args.sentences or (1000 if args.full else 200)
    work = corpus.WORK
    logs = work / "logs"
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "copies": args.copies,
    }

    try:
        needed = max([args.copies, args.stage_copies, *(scale_copies.values() if "scaling" in parts else [])])
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
        print(f"  {name}: {result.get('articles', '')} articles in {result['wall_seconds']:.1f}s", flush=True)
        return result

    if "baseline" in parts:
        results["baseline"] = step(
            "baseline", ["benchmarks.baseline", str(work / "baseline.parquet"), *inputs]
        )
    if "e2e" in parts:
        for workers in (1, 2):
            out = work / f"out-w{workers}"
            results[f"newsbeam_w{workers}"] = step(
                f"newsbeam_w{workers}", ["benchmarks.e2e", str(out), str(workers), *inputs]
            )
        if (work / "baseline.parquet").exists():
            results["agreement"] = agreement(work / "baseline.parquet", work / "out-w2")
    if "stages" in parts:
        profile = ["--profile", str(work / "profile.txt")] if args.profile else []
        results["stages"] = step("stages", ["benchmarks.stages", *profile, *built.inputs(args.stage_copies)])
    if "scaling" in parts:
        scaling = []
        for scale, copies in scale_copies.items():
            if copies == args.copies and "newsbeam_w2" in results:
                run = results["newsbeam_w2"]
            else:
                out = work / f"out-scale-{scale}"
                run = step(f"scale_{scale}", ["benchmarks.e2e", str(out), "2", *built.inputs(copies)])
            scaling.append({"target": scale, "copies": copies, **run})
        results["scaling"] = scaling
    if "accuracy" in parts:
        results["accuracy"] = step(
            "accuracy", ["benchmarks.accuracy", "--sentences", str(sentences), "--articles", "40"]
        )

    results["ratios"] = ratios(results)
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["load_average_at_end"] = __import__("os").getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    for path in (RESULTS / name, RESULTS / "latest.json"):
        path.write_text(json.dumps(results, indent=2, default=str))
    print(render(results))
    print(f"\nresults: {RESULTS / name}")
    return 0


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = results.get("baseline")
    for workers in (1, 2):
        ours = results.get(f"newsbeam_w{workers}")
        if base and ours:
            out[f"speed_w{workers}"] = per_second(ours) / per_second(base)
            out[f"speed_w{workers}_inside"] = per_second(ours, "seconds") / per_second(base, "seconds")
            out[f"cpu_per_article_w{workers}"] = (ours["cpu_seconds"] / ours["articles"]) / (
                base["cpu_seconds"] / base["articles"]
            )
            out[f"peak_memory_w{workers}"] = ours["peak_tree_rss"] / base["peak_tree_rss"]
    stages, pipeline = results.get("stages"), results.get("newsbeam_w1")
    if stages and pipeline:
        loop_wall = stages["wall_seconds_inside"] / stages["articles"]
        loop_cpu = stages["cpu_seconds"] / stages["articles"]
        out["beam_overhead_wall_percent"] = 100 * (
            (pipeline["seconds"] / pipeline["articles"]) / loop_wall - 1
        )
        out["beam_overhead_cpu_percent"] = 100 * (
            (pipeline["cpu_seconds"] / pipeline["articles"]) / loop_cpu - 1
        )
    # A run that lost entries says nothing about memory per article.
    scaling = [s for s in results.get("scaling") or [] if not s.get("unaccounted_entries")]
    if len(scaling) >= 2:
        first, last = scaling[0], scaling[-1]
        growth = (last["peak_tree_rss"] - first["peak_tree_rss"]) / max(
            last["articles"] - first["articles"], 1
        )
        out["peak_memory_growth_kb_per_article"] = growth / 1024
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        f"newsbeam benchmark, {results['started_at']}  ({results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores)",
        "",
    ]
    header = (
        f"{'run':<22}{'articles':>10}{'wall s':>9}{'art/s':>9}{'cpu s':>9}{'cpu ms/art':>11}"
        f"{'peak MB':>9}{'x base':>8}{'x base cpu':>11}{'mem x':>7}"
    )
    lines += [header, "-" * len(header)]
    base = results.get("baseline")
    rows = [("baseline (1 process)", base)]
    rows += [(f"newsbeam {w} worker{'s' if w > 1 else ''}", results.get(f"newsbeam_w{w}")) for w in (1, 2)]
    rows += [(f"scale {s['target']:,} (2 w)", s) for s in results.get("scaling") or []]
    for label, r in rows:
        if not r:
            continue
        cpu_ms = 1000 * r["cpu_seconds"] / r["articles"]
        ratio = f"{per_second(r) / per_second(base):.2f}" if base else "-"
        cpu_ratio = f"{1000 * base['cpu_seconds'] / base['articles'] / cpu_ms:.2f}" if base else "-"
        memory = f"{r['peak_tree_rss'] / base['peak_tree_rss']:.2f}" if base else "-"
        lines.append(
            f"{label:<22}{r['articles']:>10,}{r['wall_seconds']:>9.1f}{per_second(r):>9.1f}"
            f"{r['cpu_seconds']:>9.1f}{cpu_ms:>11.2f}{r['peak_tree_rss'] / MB:>9.0f}{ratio:>8}{cpu_ratio:>11}"
            f"{memory:>7}"
        )
    lines.append(
        "(x base: articles/s over the baseline's, wall clock of the whole command; x base cpu: the"
        "\n baseline's CPU time per article over this run's, all processes; mem x: peak RSS of all"
        "\n processes over the baseline's)"
    )
    for label, r in rows:
        if r and r.get("unaccounted_entries"):
            lines.append(
                f"WARNING {label}: {r['unaccounted_entries']:,} of {r['entries']:,} entries are neither "
                "written, duplicates nor dead letters\n  (feed_fetches: entries != articles_written"
                " + duplicates + dead_letters)"
            )
    agree = results.get("agreement")
    if agree:
        lines.append(
            "\nlanguage agreement with the baseline where it is > 0.9 sure: "
            f"{agree['same_language_percent']:.2f}% of {agree['baseline_sure']:,} articles "
            f"(joined on url: {agree['joined_on_url']:,})"
        )
    stages = results.get("stages")
    if stages:
        lines.append(f"\nstage costs, plain loop over {stages['articles']:,} articles (CPU ms per article):")
        lines.append(
            "  "
            + "  ".join(f"{k} {1000 * v / stages['articles']:.3f}" for k, v in stages["stages"].items())
            + f"  total {1000 * stages['seconds'] / stages['articles']:.3f}"
        )
    r = results.get("ratios", {})
    if "beam_overhead_wall_percent" in r:
        lines.append(
            f"beam overhead (1 worker vs plain loop): {r['beam_overhead_wall_percent']:.1f}% wall, "
            f"{r['beam_overhead_cpu_percent']:.1f}% CPU (target < 15%)"
        )
    if "peak_memory_growth_kb_per_article" in r:
        lines.append(f"peak memory growth: {r['peak_memory_growth_kb_per_article']:.2f} KB per article")
    accuracy = results.get("accuracy")
    if accuracy:
        lines.append(
            f"\nlanguage accuracy on lingua sentences, {accuracy['languages']} languages "
            f"({accuracy['sentences_per_language']}) per language:"
        )
        lines.append(f"  {'config':<15}{'headline':>10}{'sentence':>10}{'article':>10}   ms/text h/s/a")
        for config, v in accuracy["overall_percent"].items():
            lines.append(
                f"  {config:<15}{v['headline']:>9.2f}%{v['sentence']:>9.2f}%{v['article']:>9.2f}%   "
                f"{v['headline_ms_per_text']:.2f}/{v['sentence_ms_per_text']:.2f}/{v['article_ms_per_text']:.2f}"
            )
        f = accuracy["fusion"]
        lines.append(
            f"  fusion on headlines, declared language wrong for {100 * f['wrong_declared_share']:.0f}%: "
            f"without {f['detect_without_declaration_percent']:.2f}%, "
            f"with {f['detect_with_declaration_percent']:.2f}%"
            f" (declared alone {f['declared_only_percent']:.2f}%)"
        )
        lines.append(
            "  real feeds (declared / detected / chosen / plain langdetect = true language, % of items):"
        )
        for feed in accuracy["real_feeds"]:
            lines.append(
                f"    {feed['outlet'][:30]:<31}{feed['language']:<4}{feed['items']:>4}  "
                f"{feed['declared_percent']:>5.1f} {feed['detected_percent']:>5.1f} "
                f"{feed['chosen_percent']:>5.1f} "
                f"{feed['langdetect_percent']:>5.1f}  declared {feed['declared_tags']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
