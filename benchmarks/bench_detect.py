"""Language detection's cost per article: langdetect's own `Detector` against `FastDetector`.

    python -m benchmarks.bench_detect [--rounds 3] COPY_FOLDER...

The detection texts (title plus text, at most 1,000 characters) of every article of the copies,
detected in turn by `LanguageDetector` over langdetect's own `Detector` and over
`FastDetector` (transforms/ngrams.py), rounds interleaved so that the machine's load falls on
both alike. Prints CPU ms per article of each, and checks that every answer is the same.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from langdetect.detector import Detector

import transforms.language
from benchmarks.corpus import list_inputs
from transforms.language import LanguageDetector, LanguageSettings
from transforms.ngrams import FastDetector
from transforms.normalize import normalize_entry
from transforms.parse import parse_input, parse_seed_file


def detection_inputs(folders: list[str]) -> list[tuple[Any, Any, Any]]:
    now = datetime.now(UTC)
    found = []
    for path, is_seed in list_inputs(folders):
        body = path.read_bytes()
        parsed = parse_seed_file(body, str(path)) if is_seed else parse_input(body, str(path))
        for entry in parsed.entries:
            try:
                article = normalize_entry(entry, now)
            except ValueError:
                continue
            found.append((article.get("title"), article.get("text"), article.get("language_declared_raw")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_detect")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args()
    inputs = detection_inputs(args.folders)
    detector = LanguageDetector(LanguageSettings(cache_size=0))
    spent: dict[str, list[float]] = {"langdetect": [], "fast_ngrams": []}
    answers: dict[str, list[Any]] = {}
    for _ in range(args.rounds):
        for name, kind in (("langdetect", Detector), ("fast_ngrams", FastDetector)):
            transforms.language.FastDetector = kind  # the class `probabilities` builds
            start = time.process_time()
            answers[name] = [detector.detect(*values) for values in inputs]
            spent[name].append(1000 * (time.process_time() - start) / len(inputs))
    transforms.language.FastDetector = FastDetector
    same = sum(a == b for a, b in zip(answers["langdetect"], answers["fast_ngrams"], strict=True))
    print(json.dumps({"articles": len(inputs), "cpu_ms_per_article": spent, "same_answers": same}, indent=2))


if __name__ == "__main__":
    main()
