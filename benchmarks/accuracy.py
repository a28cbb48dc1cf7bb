"""Language-detection accuracy: plain langdetect against newsbeam's settings, and declared-language fusion.

    python -m benchmarks.accuracy [--sentences N] [--articles N]

- Labelled sentences of `lingua-testdata/sentences/` in the 51 languages langdetect knows (Norwegian
  Bokmål `nb` scored as langdetect's `no`; Chinese as `zh` whichever script langdetect names), as
  headlines (the first 5 to 10 words of a sentence; 10 to 20 characters for Chinese and Japanese,
  written without spaces), as whole sentences and as article-length texts (25 sentences, about
  2,500 characters, longer than `max_chars` so that truncation shows).
- Configurations, so that each speed trick shows its cost: `langdetect` (its defaults: 7 trials, up
  to 10,000 characters, `Detector.detect`), `trials3` (3 trials, 10,000 characters), `newsbeam_2000`
  (`LanguageDetector` reading at most 2,000 characters) and `newsbeam` (`LanguageDetector` with the
  default `LanguageSettings`: 3 trials, 1,000 characters, `und` below 3 letters).
- Fusion: the headlines again, each with a declared language that is right for 80% of items and a
  uniformly drawn wrong language for 20%, scored with and without the declaration.
- Real feeds (`real-feeds.tsv`, languages checked by reading them): per feed, how often the declared,
  the detected and the chosen language are the true one.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from langdetect.detector_factory import DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from benchmarks.corpus import SENTENCES_SUBDIR, corpus_root, require, sentences
from benchmarks.measure import report
from transforms.language import (
    LanguageDetector,
    LanguageSettings,
    declared_language,
    detector_code,
    load_detector_factory,
)
from transforms.normalize import normalize_entry
from transforms.parse import parse_input

# lingua file name -> the language as newsbeam names it (ISO 639-1, as langdetect's codes map to it)
_LINGUA_TO_LANGDETECT = {"nb": "no"}
WRONG_SHARE = 0.2
ARTICLE_SENTENCES = 25
FORMS = ("headline", "sentence", "article")
CONFIGS = ("langdetect", "trials3", "newsbeam_2000", "newsbeam")


def known_languages(factory: DetectorFactory) -> list[str]:
    """lingua's languages that langdetect has a profile for (as lingua file names)."""
    ours = {detector_code(code)[0] for code in factory.langlist}
    folder = require(corpus_root() / SENTENCES_SUBDIR, "lingua sentences")
    names = sorted(p.stem for p in folder.glob("*.txt"))
    return [name for name in names if _LINGUA_TO_LANGDETECT.get(name, name) in ours]


def headline(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    if len(words) < 4:  # Chinese, Japanese: no spaces between words
        return sentence[: rng.randint(10, 20)]
    return " ".join(words[: rng.randint(5, 10)])


class PlainLangdetect:
    """langdetect as its README shows it: a seeded factory, `detect()` with every default."""

    def __init__(self, factory: DetectorFactory, n_trial: int = 7) -> None:
        self._factory, self._n_trial = factory, n_trial

    def __call__(self, text: str) -> str:
        detector = self._factory.create()
        detector.n_trial = self._n_trial
        detector.append(text)
        try:
            return detector_code(detector.detect())[0]
        except LangDetectException:
            return "und"


def samples(language: str, per_language: int, articles: int) -> dict[str, list[str]]:
    pool = sentences(language)
    rng = random.Random(f"accuracy-{language}")
    chosen = pool[:per_language]
    groups = [pool[i * ARTICLE_SENTENCES : (i + 1) * ARTICLE_SENTENCES] for i in range(articles)]
    return {
        "headline": [headline(s, rng) for s in chosen],
        "sentence": chosen,
        "article": [" ".join(g) for g in groups if len(g) == ARTICLE_SENTENCES],
    }


def run_accuracy(per_language: int, articles: int) -> dict[str, Any]:
    factory = load_detector_factory(0)
    # No cache: every text is detected, so that the times per text are detection times.
    newsbeam = LanguageDetector(LanguageSettings(cache_size=0), factory)
    reads_2000 = LanguageDetector(LanguageSettings(max_chars=2000, cache_size=0), factory)
    detectors = {
        "langdetect": PlainLangdetect(factory),
        "trials3": PlainLangdetect(factory, n_trial=3),
        "newsbeam_2000": lambda text: reads_2000.detect(None, text).language,
        "newsbeam": lambda text: newsbeam.detect(None, text).language,
    }
    languages = known_languages(factory)
    truth_codes = [_LINGUA_TO_LANGDETECT.get(lang, lang) for lang in languages]
    correct: dict[tuple[str, str, str], int] = defaultdict(int)  # (config, form, language)
    totals: dict[tuple[str, str], int] = defaultdict(int)  # (form, language)
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    fusion = {"without": 0, "with": 0, "declared_only": 0, "items": 0}
    fusion_rng = random.Random("fusion")
    for language, truth in zip(languages, truth_codes, strict=True):
        texts = samples(language, per_language, articles)
        for form in FORMS:
            totals[(form, truth)] += len(texts[form])
            for config, detect in detectors.items():
                started = time.process_time()
                correct[(config, form, truth)] += sum(detect(text) == truth for text in texts[form])
                seconds[(config, form)] += time.process_time() - started
        for text in texts["headline"]:
            if fusion_rng.random() < WRONG_SHARE:
                declared = fusion_rng.choice([c for c in truth_codes if c != truth])
            else:
                declared = truth
            tag = {"no": "nb"}.get(declared, declared)  # feeds declare Bokmål as nb
            fusion["items"] += 1
            fusion["declared_only"] += declared == truth
            fusion["without"] += newsbeam.detect(None, text).language == truth
            fusion["with"] += newsbeam.detect(None, text, tag).language == truth

    overall: dict[str, dict[str, float]] = {}
    per_language: dict[str, dict[str, float]] = {}
    for config in CONFIGS:
        for form in FORMS:
            n = sum(totals[(form, t)] for t in truth_codes)
            overall.setdefault(config, {})[form] = (
                100 * sum(correct[(config, form, t)] for t in truth_codes) / n
            )
            overall[config][f"{form}_ms_per_text"] = 1000 * seconds[(config, form)] / n
        for truth in truth_codes:
            per_language.setdefault(truth, {})[config] = round(
                100
                * sum(correct[(config, f, truth)] for f in ("headline", "sentence"))
                / (totals[("headline", truth)] + totals[("sentence", truth)]),
                2,
            )
    items = fusion["items"]
    return {
        "languages": len(languages),
        "sentences_per_language": per_language_count(totals, truth_codes),
        "overall_percent": overall,
        "per_language_percent_headline_and_sentence": per_language,
        "fusion": {
            "wrong_declared_share": WRONG_SHARE,
            "items": items,
            "declared_only_percent": 100 * fusion["declared_only"] / items,
            "detect_without_declaration_percent": 100 * fusion["without"] / items,
            "detect_with_declaration_percent": 100 * fusion["with"] / items,
        },
        "real_feeds": real_feeds(newsbeam, detectors["langdetect"]),
    }


def per_language_count(totals: dict[tuple[str, str], int], truth_codes: list[str]) -> dict[str, int]:
    return {form: totals[(form, truth_codes[0])] for form in FORMS}


def real_feeds(newsbeam: LanguageDetector, plain: Any) -> list[dict[str, Any]]:
    """Declared vs detected vs chosen language on the real news feeds whose language was checked."""
    listing = require(corpus_root() / "real-feeds.tsv", "real-feeds.tsv")
    now = datetime.now(UTC)
    rows = []
    with listing.open(encoding="utf-8") as stream:
        for feed in csv.DictReader(stream, delimiter="\t"):
            path = require(corpus_root() / feed["path"], f"real feed {feed['path']}")
            parsed = parse_input(path.read_bytes(), str(path))
            truth = feed["language"]
            counts = {
                "items": 0,
                "declared": 0,
                "detected": 0,
                "chosen": 0,
                "langdetect": 0,
                "declared_tags": set(),
            }
            for entry in parsed.entries:
                try:
                    article = normalize_entry(entry, now)
                except ValueError:
                    continue
                tag = article.get("language_declared_raw")
                result = newsbeam.detect(article.get("title"), article.get("text"), tag)
                counts["items"] += 1
                counts["declared_tags"].add(tag or "-")
                counts["declared"] += declared_language(tag)[0] == truth
                counts["detected"] += result.detected == truth
                counts["chosen"] += result.language == truth
                text = f"{article.get('title') or ''}\n{article.get('text') or ''}"
                counts["langdetect"] += plain(text) == truth
            items = max(counts["items"], 1)
            rows.append(
                {
                    "outlet": feed["outlet"],
                    "language": truth,
                    "declared_tags": ",".join(sorted(counts.pop("declared_tags"))),
                    "items": counts["items"],
                    **{
                        f"{k}_percent": round(100 * counts[k] / items, 1)
                        for k in ("declared", "detected", "chosen", "langdetect")
                    },
                }
            )
    return rows


def main(argv: list[str]) -> None:
    per_language, articles = 300, 40
    args = iter(argv)
    for arg in args:
        if arg == "--sentences":
            per_language = int(next(args))
        elif arg == "--articles":
            articles = int(next(args))
    started = time.perf_counter()
    result = run_accuracy(per_language, articles)
    result["seconds"] = time.perf_counter() - started
    report(result)


if __name__ == "__main__":
    main(sys.argv[1:])
