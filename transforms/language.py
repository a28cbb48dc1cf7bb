"""DetectLanguage: the language of every article, with its provenance.

langdetect runs on every article (title plus text, bounded in length), seeded so that the same
text always gives the same answer. Its profiles are loaded once per worker in `DoFn.setup()`,
into a factory of our own rather than langdetect's module-level one, so that the seed and the
profiles also reach the worker processes of a multi-process or remote runner.

The declared language (feed `<language>`, `xml:lang`, JSON Feed `language`) informs the answer
but never replaces detection: when the detector is sure, it wins; when it is unsure and disagrees
with the declaration, the declaration becomes a prior and the detector runs again.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from transforms.ngrams import FastDetector
from transforms.outputs import ArticleOutputs, apply_with_dead_letters
from transforms.schema import DEAD_LETTERS, CheckedArticle, DetectedArticle, Record, Stage, failed_article

UNDETERMINED = "und"

# langdetect's own codes that are not plain ISO 639-1: the script goes to its own field.
_DETECTOR_CODES = {"zh-cn": ("zh", "Hans"), "zh-tw": ("zh", "Hant")}
# Deprecated, macro-language or ISO 639-2 codes that feeds declare, to ISO 639-1 as langdetect knows it.
_DECLARED_ALIASES = {
    "iw": "he",
    "in": "id",
    "ji": "yi",
    "nb": "no",
    "nn": "no",
    "jw": "jv",
    "eng": "en",
    "deu": "de",
    "ger": "de",
    "fra": "fr",
    "fre": "fr",
    "spa": "es",
    "ita": "it",
    "por": "pt",
    "nld": "nl",
    "dut": "nl",
    "rus": "ru",
    "zho": "zh",
    "chi": "zh",
    "jpn": "ja",
    "kor": "ko",
    "ara": "ar",
    "pol": "pl",
    "tur": "tr",
    "ukr": "uk",
    "swe": "sv",
    "english": "en",
    "german": "de",
    "deutsch": "de",
    "french": "fr",
    "français": "fr",
    "spanish": "es",
    "español": "es",
    "italian": "it",
    "portuguese": "pt",
    "dutch": "nl",
    "russian": "ru",
    "chinese": "zh",
    "japanese": "ja",
}
_SCRIPT_SUBTAGS = {
    "hans": "Hans",
    "hant": "Hant",
    "cn": "Hans",
    "sg": "Hans",
    "tw": "Hant",
    "hk": "Hant",
    "mo": "Hant",
}
_LETTER = re.compile(r"[^\W\d_]")
# Thai, Lao, kana, CJK ideographs and Hangul syllables.
_DENSE_SCRIPT = re.compile(
    r"[\u0e00-\u0eff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff]")


@dataclass(frozen=True)
class LanguageSettings:
    max_chars: int = 1000  # text beyond this adds cost, not accuracy (see benchmarks/RESULTS.md)
    n_trial: int = 3  # langdetect's default is 7; 3 halves the cost at equal accuracy
    seed: int = 0
    min_letters: int = 3  # fewer letters than this give `und`
    sure_confidence: float = 0.9  # a detection at least this sure overrides the declaration...
    min_letters_to_override: int = 12  # below this, a declared language is never overridden
    declared_prior: float = 0.5  # prior mass given to the declared language when unsure
    cache_size: int = 10_000  # results remembered per worker (a stream sees an entry on every poll)


@dataclass(frozen=True)
class LanguageResult:
    language: str
    script: str | None
    confidence: float
    detected: str
    declared: str | None
    source: str  # detected, declared, agreed or none


def declared_language(value: str | None) -> tuple[str | None, str | None]:
    """(ISO 639-1 code, script) of a declared language tag such as `en-US`, `zh-Hant`, `ger`."""
    if not value:
        return None, None
    tag = value.strip().lower().replace("_", "-")
    primary, _, rest = tag.partition("-")
    primary = _DECLARED_ALIASES.get(primary, primary)
    if not (len(primary) == 2 and primary.isascii() and primary.isalpha()):
        return None, None
    script = None
    if primary == "zh":
        script = next((_SCRIPT_SUBTAGS[s] for s in rest.split("-") if s in _SCRIPT_SUBTAGS), None)
    return primary, script


def detector_code(code: str) -> tuple[str, str | None]:
    """langdetect's code as (ISO 639-1, script)."""
    return _DETECTOR_CODES.get(code, (code, None))


def load_detector_factory(seed: int) -> DetectorFactory:
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(seed)
    return factory


def detection_text(title: str | None, text: str | None, max_chars: int) -> str:
    return f"{title or ''}\n{text or ''}".strip()[:max_chars]


class LanguageDetector:
    """langdetect with bounded input, fewer trials and declared-language fusion."""

    def __init__(self, settings: LanguageSettings, factory: DetectorFactory | None = None) -> None:
        self.settings = settings
        self._factory = factory or load_detector_factory(settings.seed)
        self._known = set(self._factory.langlist)
        # langdetect's Korean profile is full of Hanja n-grams, so Chinese (Traditional above all)
        # comes out as Korean at 0.99999 (Mimino666/langdetect#51). Korean is written in Hangul: a
        # text without one Hangul letter is not Korean. Built once, used for most texts.
        self._without_korean = dict.fromkeys(self._known, 1.0) | ({"ko": 0.0} if "ko" in self._known else {})
        # Keyed by a digest of the sample, not the sample (up to `max_chars` characters): a full cache
        # holds about 1 MB, not 10,000 texts, so a worker's memory does not grow until it is full.
        self._cache: OrderedDict[tuple[bytes, str | None], LanguageResult] = OrderedDict()
        self.cache_hits = 0

    def probabilities(self, text: str, prior: dict[str, float] | None = None) -> list[tuple[str, float]]:
        """[(langdetect code, probability)], most likely first; empty when undetectable."""
        # langdetect's Detector, faster, with the same answers (transforms/ngrams.py).
        detector = FastDetector(self._factory)
        detector.n_trial = self.settings.n_trial
        detector.set_max_text_length(self.settings.max_chars)
        if "ko" in self._known and not _HANGUL.search(text):
            prior = {**prior, "ko": 0.0} if prior else self._without_korean
        if prior:
            detector.set_prior_map(prior)
        detector.append(text)
        try:
            return [(p.lang, p.prob) for p in detector.get_probabilities()]
        except LangDetectException:
            return []

    def detect(self, title: str | None, text: str | None, declared_tag: str | None = None) -> LanguageResult:
        """The language of title + text (at most `max_chars`), given what the input declares.

        The answer depends only on the sample read and the declaration (langdetect is seeded for
        every text), so the last `cache_size` answers are remembered: a streaming job detects an
        entry once, not on every poll that sees it again.
        """
        sample = detection_text(title, text, self.settings.max_chars)
        key = (
            hashlib.blake2b(sample.encode("utf-8", "surrogatepass"), digest_size=16).digest(),
            declared_tag,
        )
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return cached
        result = self._detect(sample, declared_tag)
        if self.settings.cache_size > 0:
            self._cache[key] = result
            if len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return result

    def _detect(self, sample: str, declared_tag: str | None) -> LanguageResult:
        declared, declared_script = declared_language(declared_tag)
        head = sample[:200]
        # A CJK or Thai character carries about as much as a word: count it as three letters.
        letters = len(_LETTER.findall(head)) + 2 * len(_DENSE_SCRIPT.findall(head))
        ranked = self.probabilities(sample) if letters >= self.settings.min_letters else []
        if not ranked:
            if declared:
                return LanguageResult(declared, declared_script, 0.0, UNDETERMINED, declared, "declared")
            return LanguageResult(UNDETERMINED, None, 0.0, UNDETERMINED, None, "none")

        top_code, top_prob = ranked[0]
        detected, detected_script = detector_code(top_code)
        if declared is None:
            return LanguageResult(detected, detected_script, top_prob, detected, None, "detected")
        if detected == declared:
            return LanguageResult(
                detected, detected_script or declared_script, top_prob, detected, declared, "agreed"
            )
        if letters < self.settings.min_letters_to_override:
            # Too little text to contradict the input's own word; the detector's doubt is kept.
            confidence = dict(ranked).get(
                next((c for c in self._known if detector_code(c)[0] == declared), ""), 0.0
            )
            return LanguageResult(declared, declared_script, confidence, detected, declared, "declared")
        if top_prob >= self.settings.sure_confidence:
            return LanguageResult(detected, detected_script, top_prob, detected, declared, "detected")

        declared_codes = [c for c in self._known if detector_code(c)[0] == declared]
        if not declared_codes:  # a language the detector has no profile for
            return LanguageResult(declared, declared_script, top_prob, detected, declared, "declared")
        prior = self._prior(declared_codes)
        code, prob = self.probabilities(sample, prior)[0]
        chosen, script = detector_code(code)
        source = "declared" if chosen == declared else "detected"
        return LanguageResult(chosen, script or declared_script, prob, detected, declared, source)

    def _prior(self, declared_codes: list[str]) -> dict[str, float]:
        others = len(self._known) - len(declared_codes)
        rest = (1.0 - self.settings.declared_prior) / max(others, 1)
        prior = dict.fromkeys(self._known, rest)
        for code in declared_codes:
            prior[code] = self.settings.declared_prior / len(declared_codes)
        return prior


def apply_language(article: CheckedArticle, result: LanguageResult) -> DetectedArticle:
    """A new record: the article with its language columns, the raw declaration it carried removed."""
    # With or without the full-text stage's columns before it (ProcessArticles' slot may be empty).
    detected = cast(
        DetectedArticle,
        {
            **article,
            "language": result.language,
            "language_script": result.script,
            "language_confidence": round(result.confidence, 4),
            "language_detected": result.detected,
            "language_declared": result.declared,
            "language_source": result.source,
        },
    )
    detected.pop("language_declared_raw", None)  # read: not a column
    return detected


class _DetectLanguageFn(beam.DoFn):
    def __init__(self, settings: LanguageSettings) -> None:
        self._settings = settings
        self._detector: LanguageDetector | None = None
        self._failed = Metrics.counter("detect_language", "dead_letters")
        self._cache_hits = Metrics.counter("detect_language", "cache_hits")
        self._chosen = {
            source: Metrics.counter("detect_language", f"source_{source}")
            for source in ("detected", "declared", "agreed", "none")
        }

    def setup(self) -> None:
        self._detector = LanguageDetector(self._settings)

    def process(self, article: Record) -> Iterator[Any]:
        assert self._detector is not None
        hits = self._detector.cache_hits
        try:
            result = self._detector.detect(
                article.get("title"), article.get("text"), article.get("language_declared_raw")
            )
        except Exception as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, failed_article(Stage.DETECT_LANGUAGE, error, article)
            )
            return
        self._chosen[result.source].inc()
        if self._detector.cache_hits != hits:
            self._cache_hits.inc()
        yield apply_language(cast(CheckedArticle, article), result)


class DetectLanguage(beam.PTransform[Any, Any]):
    """Normalized articles -> (articles with language columns, dead letters)."""

    def __init__(self, settings: LanguageSettings | None = None) -> None:
        super().__init__()
        self._settings = settings or LanguageSettings()

    def expand(self, articles: PCollection[Any]) -> ArticleOutputs:
        return apply_with_dead_letters(articles, "Detect", _DetectLanguageFn(self._settings))
