"""Near-duplicate stories on the labelled syndication set: precision, recall, ARI and cost.

    python -m benchmarks.bench_stories                # the set of benchmarks/syndication_set.py, seed fixed
    python -m benchmarks.bench_stories --threshold 0.45

For the canonical arrival order and three shuffled ones, the set is assigned to stories (transforms/
stories.py) in one commit, in ten commits and as a stream of small commits with a restart (the index
written to bytes and read back) in the middle; the clusters must be identical across the three for one
arrival order. Reported: pairwise precision and recall and the adjusted Rand index of the clusters
against the labels, per kind of item (copies, teasers, hard negatives), and the CPU cost per article,
for the fingerprint and for main's earlier datasketch one (benchmarks/stories_baseline.py) on the same
items in the same run. Then the lookup table: a MemoryStoryIndex of synthetic prints at 10k, 100k and
1M articles, the time per article of a 1k-article commit of edited copies to look up and to assign.
Goal (issue 18): precision at least 0.98, recall at least 0.90.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import resource
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from math import comb
from pathlib import Path

import numpy as np

from benchmarks import stories_baseline
from benchmarks.syndication_set import CORPUS, SEED, Item, build_set, shuffled
from transforms.stories import (
    BODY_PERMUTATIONS,
    DEFAULT_THRESHOLD,
    LEAD_PERMUTATIONS,
    TITLE_PERMUTATIONS,
    Fingerprint,
    IndexedArticle,
    MemoryStoryIndex,
    NewArticle,
    StoryAssignment,
    assign_stories,
    band_codes,
    fingerprint,
)

CACHE = Path.home() / ".cache" / "newsbeam-bench"


def cached_set(seed: int) -> list[Item]:
    """The set, built once per seed and corpus (its generation takes minutes: it extracts pages)."""
    listing = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file())
    key = hashlib.sha256(
        f"{seed}\n{listing}".encode() + Path(__file__).with_name("syndication_set.py").read_bytes()
    )
    path = CACHE / f"syndication-{key.hexdigest()[:16]}.pickle"
    if path.exists():
        items: list[Item] = pickle.loads(path.read_bytes())
        return items
    items = build_set(seed=seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(items))
    return items


def pair_scores(labels: dict[str, str], predicted: dict[str, str]) -> tuple[float, float, float]:
    """Pairwise precision and recall, and the adjusted Rand index, of `predicted` against `labels`."""
    cells = Counter((predicted[i], labels[i]) for i in labels)
    rows = Counter(predicted[i] for i in labels)
    columns = Counter(labels.values())
    together = sum(comb(n, 2) for n in cells.values())
    predicted_pairs = sum(comb(n, 2) for n in rows.values())
    true_pairs = sum(comb(n, 2) for n in columns.values())
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    expected = predicted_pairs * true_pairs / comb(len(labels), 2)
    maximum = (predicted_pairs + true_pairs) / 2
    ari = (together - expected) / (maximum - expected) if maximum != expected else 1.0
    return precision, recall, ari


def assign_in_commits(
    articles: Sequence[NewArticle], commits: int, threshold: float, restart_at: int | None = None
) -> dict[str, StoryAssignment]:
    index = MemoryStoryIndex()
    size = max(1, -(-len(articles) // commits))
    result: dict[str, StoryAssignment] = {}
    for number, start in enumerate(range(0, len(articles), size)):
        if restart_at is not None and number == restart_at:
            index = reloaded(index, {i: a.filed_codes for i, a in result.items()})
        for assignment in assign_stories(articles[start : start + size], index, threshold, timedelta(days=7)):
            result[assignment.article_id] = assignment
    return result


def reloaded(index: MemoryStoryIndex, filed: dict[str, tuple[int, ...]]) -> MemoryStoryIndex:
    """The index through bytes and back, as a restart reads it from the store: each article under the
    band keys it was `filed` under (`stories.filed_codes`)."""
    articles = index.articles.values()
    blob = [(a.article_id, a.story_id, a.published_at, a.fingerprint.to_bytes()) for a in articles]
    fresh = MemoryStoryIndex()
    for article_id, story_id, published_at, data in pickle.loads(pickle.dumps(blob)):
        article = IndexedArticle(article_id, story_id, published_at, Fingerprint.from_bytes(data))
        fresh.add(article, filed.get(article_id, ()))
    return fresh


def synthetic_prints(rng: np.random.Generator, count: int) -> list[Fingerprint]:
    """Random signatures with an article's sizes: each its own story, as an index mostly holds."""
    body = rng.integers(0, 2**32, size=(count, BODY_PERMUTATIONS), dtype=np.uint32)
    lead = rng.integers(0, 2**32, size=(count, LEAD_PERMUTATIONS), dtype=np.uint32)
    title = rng.integers(0, 2**32, size=(count, TITLE_PERMUTATIONS), dtype=np.uint32)
    return [Fingerprint(400, 60, body[i], lead[i], title[i]) for i in range(count)]


def edited(print_: Fingerprint, rng: np.random.Generator, share: float) -> Fingerprint:
    """A copy of a print whose body keeps `share` of its slots (Jaccard about `share`), a new lead."""
    body = print_.body.copy()
    changed = rng.random(len(body)) >= share
    body[changed] = rng.integers(0, 2**32, size=int(changed.sum()), dtype=np.uint32)
    lead = rng.integers(0, 2**32, size=len(print_.lead), dtype=np.uint32)
    return Fingerprint(print_.words, print_.lead_words, body, lead, print_.title)


def lookup_table(sizes: Sequence[int], commit: int = 1000) -> None:
    """MemoryStoryIndex at growing sizes: per article of a 1k-article commit of edited copies, the time
    to look candidates up and to assign (look up, score, file), and whether each copy found its story."""
    rng = np.random.default_rng(SEED)
    index = MemoryStoryIndex()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    indexed: list[IndexedArticle] = []
    header = ("indexed", "build s", "lookup ms", "assign ms", "found", "peak RSS MB")
    print("{:>9} {:>8} {:>10} {:>10} {:>6} {:>14}".format(*header))
    for size in sizes:
        started = time.process_time()
        while len(index) < size:
            block = synthetic_prints(rng, min(10_000, size - len(index)))
            for print_ in block:
                number = len(index)
                article = IndexedArticle(f"x{number:07d}", f"x{number:07d}", at, print_)
                index.add(article, band_codes(print_))
                indexed.append(article)
        build = time.process_time() - started
        picks = rng.choice(len(indexed), size=commit, replace=False)
        copies = [
            NewArticle(f"q{size}-{n}", at, edited(indexed[i].fingerprint, rng, 0.6))
            for n, i in enumerate(picks.tolist())
        ]
        keys = [band_codes(c.fingerprint) for c in copies]
        started = time.process_time()
        for k in keys:
            list(index.candidates(k))
        lookup_ms = (time.process_time() - started) * 1000 / commit
        started = time.process_time()
        assigned = assign_stories(copies, index, DEFAULT_THRESHOLD, timedelta(days=7))
        assign_ms = (time.process_time() - started) * 1000 / commit
        by_id = {a.article_id: a for a in assigned}
        found = sum(
            by_id[c.article_id].story_id == indexed[i].story_id
            for c, i in zip(copies, picks.tolist(), strict=True)
        )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures = f"{lookup_ms:10.3f} {assign_ms:10.3f} {found / commit:6.3f} {peak_mb:14.0f}"
        print(f"{size:>9,} {build:8.1f} {figures}")


def timed_prints(
    items: Sequence[Item],
) -> tuple[dict[str, Fingerprint], dict[str, Fingerprint], float, float]:
    """Both fingerprints of every item, timed in alternating blocks so that load hits both alike."""
    prints: dict[str, Fingerprint] = {}
    baseline: dict[str, Fingerprint] = {}
    spent = {"new": 0.0, "baseline": 0.0}
    for start in range(0, len(items), 100):
        block = items[start : start + 100]
        for kind, function, into in (
            ("baseline", stories_baseline.fingerprint, baseline),
            ("new", fingerprint, prints),
        ):
            started = time.process_time()
            for item in block:
                into[item.item_id] = function(item.title, item.text, item.language)
            spent[kind] += time.process_time() - started
    return prints, baseline, spent["new"] * 1000 / len(items), spent["baseline"] * 1000 / len(items)


def errors_by_kind(items: Sequence[Item], predicted: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """Items split from (some of) their story, and items joined to (some of) another, by kind."""
    by_label: dict[str, list[Item]] = {}
    by_story: dict[str, list[Item]] = {}
    for item in items:
        by_label.setdefault(item.story, []).append(item)
        by_story.setdefault(predicted[item.item_id], []).append(item)
    misses: Counter[str] = Counter()
    false_joins: Counter[str] = Counter()
    for item in items:
        if any(predicted[o.item_id] != predicted[item.item_id] for o in by_label[item.story]):
            misses[item.kind] += 1
        if any(o.story != item.story for o in by_story[predicted[item.item_id]]):
            false_joins[item.kind] += 1
    return misses, false_joins


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument(
        "--orders", type=int, default=3, help="shuffled arrival orders besides the canonical one"
    )
    parser.add_argument(
        "--lookup-sizes",
        default="10000,100000,1000000",
        help="sizes of the synthetic index for the lookup table (comma-separated; empty: none)",
    )
    args = parser.parse_args(argv)
    items = cached_set(args.seed)
    prints, baseline_prints, fingerprint_ms, baseline_ms = timed_prints(items)
    size = len(next(iter(prints.values())).to_bytes())
    print(
        f"{len(items)} items; fingerprint {fingerprint_ms:.3f} ms CPU per article, baseline (main's "
        f"datasketch code) {baseline_ms:.3f}: {baseline_ms / fingerprint_ms:.1f}x less; "
        f"{size} bytes per article"
    )
    labels = {item.item_id: item.story for item in items}
    print(f"{'order':<10} {'prints':<9} {'commits':<8} {'precision':>9} {'recall':>7} {'ARI':>6}   identical")
    for order_number in range(args.orders + 1):
        ordered = items if order_number == 0 else shuffled(items, args.seed + order_number)
        name = "canonical" if order_number == 0 else f"shuffle{order_number}"
        for kind, chosen in (("baseline", baseline_prints), ("new", prints)):
            articles = [NewArticle(i.item_id, i.published_at, chosen[i.item_id]) for i in ordered]
            articles.sort(key=lambda a: (a.published_at, a.article_id))
            started = time.process_time()
            runs = {"one": assign_in_commits(articles, 1, args.threshold)}
            if kind == "new":
                runs["ten"] = assign_in_commits(articles, 10, args.threshold)
                runs["stream"] = assign_in_commits(articles, 200, args.threshold, restart_at=100)
            assign_ms = (time.process_time() - started) * 1000 / (len(runs) * len(articles))
            stories = {commits: {k: v.story_id for k, v in run.items()} for commits, run in runs.items()}
            same = all(predicted == stories["one"] for predicted in stories.values())
            for commits, predicted in stories.items():
                p, r, ari = pair_scores(labels, predicted)
                print(f"{name:<10} {kind:<9} {commits:<8} {p:9.4f} {r:7.4f} {ari:6.4f}   {same}")
            misses, false_joins = errors_by_kind(items, stories["one"])
            print(
                f"  {kind}: assign {assign_ms:.3f} ms CPU per article; items split from their story, by kind:"
            )
            print(f"    {dict(misses)}; items joined to another story, by kind: {dict(false_joins)}")

    sizes = [int(size) for size in args.lookup_sizes.split(",") if size]
    if sizes:
        lookup_table(sizes)


if __name__ == "__main__":
    main()
