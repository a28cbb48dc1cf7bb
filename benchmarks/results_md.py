"""The tables of `benchmarks/RESULTS.md`, written from the JSON that `benchmarks/run.py` records.

    python -m benchmarks.run ... --record      # keeps benchmarks/recorded/bench-<time>.json, new tables
    python -m benchmarks.run --render          # the tables again from every recorded JSON

Figures in RESULTS.md are never copied by hand: the part between the two markers below is made here,
newest run first, each with the command, the commit it measured, the machine's load and every
baseline. Text outside the markers (what each attempt changed, the history) is written by people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.corpus import REPO

RECORDED = REPO / "benchmarks" / "recorded"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- begin: written by benchmarks/run.py from benchmarks/recorded/*.json; do not edit by hand -->"
END = "<!-- end of the part written by benchmarks/run.py -->"
MB = 1024 * 1024
SPEED_TARGET = 1.3  # newsbeam's workers over the pool baseline (c), articles/s
MEMORY_TARGET = 1.1  # peak PSS at 100k over the peak at 10k
AGREEMENT_TARGET = 99.0  # percent, where the lean baseline (b) is over 0.9 sure

LABELS = {
    "baseline": "(a) baseline: defaults, 1 process",
    "lean": "(b) lean: newsbeam's settings, 1 process",
    "pool": "(c) pool: (b) on {workers} processes",
}


def _per_second(step: dict[str, Any], key: str = "wall_seconds") -> float:
    return float(step["articles"]) / float(step[key]) if step.get(key) else 0.0


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    workers = results.get("workers", 2)
    rows = [
        (LABELS[p].format(workers=workers), results[p]) for p in ("baseline", "lean", "pool") if p in results
    ]
    for count in sorted({1, workers}):
        if f"newsbeam_w{count}" in results:
            rows.append(
                (f"newsbeam, {count} worker{'s' if count > 1 else ''}", results[f"newsbeam_w{count}"])
            )
    return rows


def _mark(met: bool) -> str:
    return "**met**" if met else "**not met**"


def _short(commit: dict[str, Any]) -> str:
    text = f"`{commit.get('commit', '?')[:10]}` ({commit.get('branch', '?')}: {commit.get('subject', '')})"
    changes = commit.get("uncommitted_changes") or []
    if changes:
        text += f", with uncommitted changes to {', '.join(c[3:] for c in changes)}"
    return text


def _commit(step: dict[str, Any] | None) -> str:
    """The commit a newsbeam step ran (recorded by the step itself); `-` for the baselines."""
    measured = (step or {}).get("measured")
    if not measured:
        return "-"
    return f"`{measured['commit'][:7]}`" + ("+changes" if measured.get("uncommitted_changes") else "")


def _load(step: dict[str, Any]) -> str:
    load = step.get("load_average")
    return f"{load['mean']:.1f}" if load else "-"


def render_markdown(results: dict[str, Any], name: str) -> str:
    """One recorded run as Markdown: command, commit, load, end-to-end, ratios, stages, scaling, accuracy."""
    workers = results.get("workers", 2)
    machine = results["machine"]
    lines = [
        f"### Run of {results['started_at'][:16].replace('T', ' ')} UTC: `{results['command']}`",
        "",
        f"JSON: `benchmarks/recorded/{name}`. Commit measured: {_short(results.get('measured', {}))}.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_mb']:,} MB; load average "
        f"{machine['load_average_at_start'][0]:.1f} at the start, "
        f"{results.get('load_average_at_end', [0])[0]:.1f} at the end "
        "(per step below: the mean of its samples).",
    ]
    if results.get("note"):
        lines.append(f"Note: {results['note']}")
    rows = _rows(results)
    if rows:
        lines += [
            "",
            f"End to end on the same {results['copies']} copies (wall time of the whole command; "
            "CPU of every process; peak memory = summed PSS of the process tree):",
            "",
            "| run | articles | wall s | articles/s | CPU s | CPU ms/article | peak PSS MB | load | commit |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in rows:
            lines.append(
                f"| {label} | {r['articles']:,} | {r['wall_seconds']:.1f} | {_per_second(r):.1f} | "
                f"{r['cpu_seconds']:.1f} | {1000 * r['cpu_seconds'] / r['articles']:.2f} | "
                f"{r['peak_tree_pss'] / MB:,.0f} | {_load(r)} | {_commit(r)} |"
            )
    ratios = results.get("ratios", {})
    pairs = [(k, v) for k, v in ratios.items() if k.startswith("w") and "_over_" in k]
    if pairs:
        lines += [
            "",
            "newsbeam over each baseline (higher is better for newsbeam, except memory):",
            "",
            "| newsbeam | over | articles/s | articles/s, run only (start-up excluded) "
            "| CPU per article | memory |",
            "|---|---|---|---|---|---|",
        ]
        for key, v in pairs:
            count, part = key[1:].split("_over_")
            lines.append(
                f"| {count} worker{'s' if count != '1' else ''} | {LABELS[part].format(workers=workers)} | "
                f"{v['articles_per_second']:.2f}x | {v['articles_per_second_inside']:.2f}x | "
                f"{v['cpu_per_article']:.2f}x less | {v['peak_memory']:.2f}x |"
            )
    if "headline_speed_over_pool" in ratios:
        headline = ratios["headline_speed_over_pool"]
        lines += [
            "",
            f"**Headline: newsbeam with {workers} workers runs {headline:.2f}x the articles/s of (c)** "
            f"(target {SPEED_TARGET}x: {_mark(headline >= SPEED_TARGET)}).",
        ]
    if "beam_overhead_wall_percent" in ratios:
        lines.append(
            f"Start-up of a 1-worker run (one seed file, launch to committed manifest): "
            f"{ratios['startup_seconds_w1']:.1f} s wall, {ratios['startup_cpu_seconds_w1']:.1f} s CPU. "
            "Beam overhead, "
            f"start-up excluded, against the plain stage loop on the same copies: "
            f"{ratios['beam_overhead_wall_percent']:.1f}% wall, "
            f"{ratios['beam_overhead_cpu_percent']:.1f}% CPU."
        )
    for count in sorted({1, workers}):
        start = results.get(f"startup_w{count}")
        if start and count != 1:
            lines.append(
                f"Start-up with {count} workers: {start['seconds']:.1f} s wall, "
                f"{start['cpu_seconds']:.1f} s CPU."
            )
    for part, agree in (results.get("agreement") or {}).items():
        target = (
            f" (target {AGREEMENT_TARGET:.0f}%: {_mark(agree['same_language_percent'] >= AGREEMENT_TARGET)})"
        )
        lines.append(
            f"Same language as {LABELS[part].format(workers=workers)} where it is over 0.9 sure: "
            f"{agree['same_language_percent']:.2f}% of {agree['baseline_sure']:,} articles"
            f" (joined on url: {agree['joined_on_url']:,}){target if part == 'lean' else ''}."
        )
    stages = results.get("stages")
    if stages:
        per = {k: 1000 * v / stages["articles"] for k, v in stages["stages"].items()}
        lines += [
            "",
            f"Stage costs, plain loop over the same {stages['articles']:,} articles "
            "(CPU ms per article, one process):",
            "",
            "| " + " | ".join(per) + " | total |",
            "|" + "---|" * (len(per) + 1),
            "| "
            + " | ".join(f"{v:.3f}" for v in per.values())
            + f" | {1000 * stages['seconds'] / stages['articles']:.3f} |",
        ]
    points = results.get("scaling")
    if points:
        lines += [
            "",
            f"Scaling, newsbeam with {workers} workers (and (c) up to 100,000 articles); books: "
            "entries that are neither written, duplicates nor dead letters:",
            "",
            "| target | copies | articles | wall s | articles/s | CPU ms/article | peak PSS MB "
            "| launcher's peak MB | x peak at first | books | (c) articles/s | (c) peak PSS MB | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        first = points[0]["newsbeam"]
        for point in points:
            run, pool = point["newsbeam"], point.get("pool")
            books = (
                "balance" if not run.get("unaccounted_entries") else f"{run['unaccounted_entries']:,} lost"
            )
            lines.append(
                f"| {point['target']:,} | {point['copies']} | {run['articles']:,} | "
                f"{run['wall_seconds']:.1f} | "
                f"{_per_second(run):.1f} | {1000 * run['cpu_seconds'] / run['articles']:.2f} | "
                f"{run['peak_tree_pss'] / MB:,.0f} | {run.get('peak_launcher_pss', 0) / MB:,.0f} | "
                f"{run['peak_tree_pss'] / first['peak_tree_pss']:.2f} | {books} | "
                + (f"{_per_second(pool):.1f} | {pool['peak_tree_pss'] / MB:,.0f}" if pool else "- | -")
                + f" | {_load(run)} | {_commit(run)} |"
            )
        by_target = {p["target"]: p["newsbeam"] for p in points}
        if 10_000 in by_target and 100_000 in by_target:
            ratio = by_target[100_000]["peak_tree_pss"] / by_target[10_000]["peak_tree_pss"]
            lines.append(
                f"\nPeak at 100,000 over peak at 10,000: {ratio:.2f}x (target {MEMORY_TARGET}x: "
                f"{_mark(ratio <= MEMORY_TARGET)})."
            )
        if 1_000_000 in by_target:
            run = by_target[1_000_000]
            flat = run["peak_tree_pss"] / first["peak_tree_pss"]
            lines.append(
                f"1,000,000: {run['articles']:,} articles, status {run.get('status')}, books "
                f"{'balance' if not run.get('unaccounted_entries') else 'do not balance'}, peak "
                f"{run['peak_tree_pss'] / MB:,.0f} MB = {flat:.2f}x the peak at {points[0]['target']:,}."
            )
    accuracy = results.get("accuracy")
    if accuracy:
        lines += ["", f"Language accuracy on lingua sentences, {accuracy['languages']} languages:", ""]
        lines += ["| config | headline | sentence | article |", "|---|---|---|---|"]
        for config, v in accuracy["overall_percent"].items():
            lines.append(f"| {config} | {v['headline']:.2f}% | {v['sentence']:.2f}% | {v['article']:.2f}% |")
    return "\n".join(lines)


def recorded_runs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, results) of every recorded run, newest first."""
    if not RECORDED.exists():
        return []
    files = sorted(RECORDED.glob("bench-*.json"), reverse=True)
    return [(path.name, json.loads(path.read_text())) for path in files]


def write_results_md(path: Path = RESULTS_MD) -> list[str]:
    """Rewrite the generated part of RESULTS.md from the recorded runs; returns their file names."""
    runs = recorded_runs()
    block = "\n\n".join(render_markdown(results, name) for name, results in runs)
    text = path.read_text() if path.exists() else "# newsbeam benchmark results\n"
    generated = f"{BEGIN}\n## Recorded runs (newest first)\n\n{block}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{generated}\n{body}"
    path.write_text(text)
    return [name for name, _ in runs]


def render_text(results: dict[str, Any]) -> str:
    """The console summary of one run (the same figures as the Markdown)."""
    return render_markdown(results, "(not recorded)")
