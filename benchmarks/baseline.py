"""The baselines: the script a user would write instead of newsbeam, in three variants.

    python -m benchmarks.baseline [--lean] [--processes N] OUTPUT COPY_FOLDER...

(a) no flags: feedparser with its defaults, seeded langdetect `detect_langs` on title plus text
    (HTML tags stripped), one process, one `pyarrow.parquet.write_table` at the end: what users
    write first.
(b) `--lean`: the same script with newsbeam's parser and detector settings, three changed lines:
    feedparser without sanitizing and relative-URI rewriting, langdetect with 3 trials on at most
    1,000 characters of title plus text (`configs/local.yaml`: `language.n_trial`, `max_chars`).
(c) `--lean --processes N`: (b) on a `multiprocessing.Pool` of N processes, the inputs split into
    N shards of about equal bytes (largest first onto the lightest shard), each process writing its
    own Parquet file: what a careful engineer writes in 40 lines.

Only the published libraries (feedparser, langdetect, pyarrow), none of newsbeam's code. OUTPUT is a
file for one process and a folder of `part-<n>.parquet` files for several.
"""

from __future__ import annotations

import argparse
import html
import multiprocessing
import re
import sys
import time
from pathlib import Path
from typing import Any

import feedparser
import pyarrow as pa
import pyarrow.parquet as pq
from langdetect import DetectorFactory, detect_langs
from langdetect.detector_factory import PROFILES_DIRECTORY
from langdetect.detector_factory import DetectorFactory as Factory
from langdetect.lang_detect_exception import LangDetectException

from benchmarks.corpus import list_inputs
from benchmarks.measure import report

_TAG = re.compile(r"<[^>]+>")
LEAN_PARSER = {"sanitize_html": False, "resolve_relative_uris": False}
LEAN_TRIALS = 3
LEAN_MAX_CHARS = 1000


def plain(value: str) -> str:
    return html.unescape(_TAG.sub(" ", value))


class Languages:
    """langdetect, seeded: with its defaults, or lean (3 trials, at most 1,000 characters)."""

    def __init__(self, lean: bool) -> None:
        self.lean = lean
        DetectorFactory.seed = 0
        if lean:
            self._factory = Factory()
            self._factory.load_profile(PROFILES_DIRECTORY)
            self._factory.set_seed(0)

    def __call__(self, text: str) -> tuple[str, float]:
        try:
            if not self.lean:
                best = detect_langs(text)[0]
            else:
                detector = self._factory.create()
                detector.n_trial = LEAN_TRIALS
                detector.set_max_text_length(LEAN_MAX_CHARS)
                detector.append(text[:LEAN_MAX_CHARS])
                best = detector.get_probabilities()[0]
        except (LangDetectException, IndexError):
            return "und", 0.0
        return best.lang, best.prob


def read_rows(inputs: list[tuple[Path, bool]], lean: bool) -> list[dict[str, Any]]:
    language = Languages(lean)
    options = LEAN_PARSER if lean else {}
    rows: list[dict[str, Any]] = []
    for path, is_seed in inputs:
        if is_seed:
            title, _, body = path.read_text(encoding="utf-8").partition("\n")
            entries = [{"title": title.strip(), "text": body.strip(), "link": None}]
        else:
            parsed = feedparser.parse(str(path), **options)
            entries = []
            for entry in parsed.entries:
                content = entry.get("content")
                text = content[0].get("value", "") if content else entry.get("summary", "")
                entries.append(
                    {"title": entry.get("title", ""), "text": plain(text), "link": entry.get("link")}
                )
        for entry in entries:
            lang, confidence = language(f"{entry['title']}\n{entry['text']}")
            rows.append(
                {
                    "source": str(path),
                    "url": entry["link"],
                    "title": entry["title"],
                    "text": entry["text"],
                    "language": lang,
                    "confidence": confidence,
                }
            )
    return rows


def run_shard(job: tuple[list[tuple[Path, bool]], bool, str]) -> int:
    """One process's share: read, detect, write its own Parquet file."""
    inputs, lean, output = job
    rows = read_rows(inputs, lean)
    pq.write_table(pa.Table.from_pylist(rows), output)
    return len(rows)


def shards(inputs: list[tuple[Path, bool]], count: int) -> list[list[tuple[Path, bool]]]:
    """`count` shards of about equal bytes: each input, largest first, onto the lightest shard."""
    parts: list[list[tuple[Path, bool]]] = [[] for _ in range(count)]
    weights = [0] * count
    for item in sorted(inputs, key=lambda i: i[0].stat().st_size, reverse=True):
        lightest = weights.index(min(weights))
        parts[lightest].append(item)
        weights[lightest] += item[0].stat().st_size
    return parts


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    parser.add_argument("--lean", action="store_true", help="newsbeam's parser and detector settings")
    parser.add_argument("--processes", type=int, default=1, help="a multiprocessing.Pool of this many")
    parser.add_argument("output")
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    inputs = list_inputs(args.folders)
    output = Path(args.output)
    if args.processes == 1:
        output.parent.mkdir(parents=True, exist_ok=True)
        articles = run_shard((inputs, args.lean, str(output)))
    else:
        output.mkdir(parents=True, exist_ok=True)
        jobs = [
            (part, args.lean, str(output / f"part-{n}.parquet"))
            for n, part in enumerate(shards(inputs, args.processes))
        ]
        with multiprocessing.Pool(args.processes) as pool:
            articles = sum(pool.map(run_shard, jobs))
    report({"articles": articles, "seconds": time.perf_counter() - started, "processes": args.processes})


if __name__ == "__main__":
    main(sys.argv[1:])
