"""transforms/ngrams.py: langdetect's detector, faster, with langdetect's own answers.

`FastDetector` replaces langdetect's text preparation, n-gram listing and trials; these tests hold
each step to langdetect's own on edge cases, real feed entries and the lingua sentences: the same
text, the same n-gram lists (hence the same random draws) and the same probabilities to the last bit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from langdetect.detector import Detector

from transforms.language import LanguageDetector, LanguageSettings, detection_text, load_detector_factory
from transforms.ngrams import FastDetector, NgramTable, table_for
from transforms.normalize import normalize_entry
from transforms.parse import parse_input

FACTORY = load_detector_factory(0)
TABLE = table_for(FACTORY)
NOW = datetime(2026, 12, 2, tzinfo=UTC)
EDGE_CASES = [
    "",
    " ",
    "  a  b ",
    "ABcD McDonald NASA iPhone eBay USA-based",
    "A",
    "AB",
    "ABC def",
    "Ünïcode ÄÖÜ ß straße",
    "中文测试 日本語のテキスト",
    "한국어 텍스트",
    "العربية نص عربي",
    "Tiếng Việt có dấu",
    "ș ț Ș Ț",
    "a\tb\nc\r\nd",
    "end with a space ",
    "  leading spaces",
    "...!!! ??? ---",
    "ΑΘΗΝΑ Αθήνα ΑθΗΝΑ",
    "ПРИВЕТ мир Мир",
    "ℂℍℕ math ℝeal",  # capitals without a lowercase form
    "x" * 3000,
    # Mostly U+1Exx: langdetect counts these as non-Latin (its block test never matches), so the
    # Latin letters go.
    "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ ab cd",
    "\ud800 lone surrogate \udfff",
    "https://example.com/a?b=c mail me@example.com then   words",
    "Ａｂｃ ＡＢＣ full width",
]


def prepared(text: str, max_chars: int = 1000) -> Detector:
    detector = FACTORY.create()
    detector.set_max_text_length(max_chars)
    detector.append(text)
    detector.cleaning_text()
    return detector


def fast_prepared(text: str, max_chars: int = 1000) -> FastDetector:
    detector = FastDetector(FACTORY)
    detector.set_max_text_length(max_chars)
    detector.append(text)
    detector.cleaning_text()
    return detector


def assert_same_ngrams(texts: list[str]) -> None:
    different = []
    for text in texts:
        detector = prepared(text)
        if TABLE.ngrams(detector.text) != detector._extract_ngrams():
            different.append(text[:60])
    assert not different, f"{len(different)} of {len(texts)} texts differ, e.g. {different[:3]}"


def assert_same_text(texts: list[str]) -> None:
    different = [text[:60] for text in texts if fast_prepared(text).text != prepared(text).text]
    assert not different, f"{len(different)} of {len(texts)} texts differ, e.g. {different[:3]}"


def test_the_same_ngrams_as_langdetect_on_edge_cases() -> None:
    assert_same_ngrams(EDGE_CASES)
    detector = prepared("NASA and the BBC")
    assert "NASA" not in " ".join(TABLE.ngrams(detector.text))  # capitals skipped


def test_the_same_prepared_text_as_langdetect_on_edge_cases() -> None:
    """`append` (URLs, e-mail addresses, the cut, runs of spaces) and `cleaning_text` as langdetect's."""
    assert_same_text(EDGE_CASES)
    assert_same_text([text + "  " + text[::-1] for text in EDGE_CASES])
    assert (
        fast_prepared("ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợ ab").text == "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợ "
    )


def test_the_table_holds_langdetects_probabilities_bit_for_bit() -> None:
    table = NgramTable(FACTORY.word_lang_prob_map)
    assert len(table.grams) == len(FACTORY.word_lang_prob_map)
    for row, gram in enumerate(table.grams[::97]):
        assert table.probabilities[row * 97].tolist() == FACTORY.word_lang_prob_map[gram]
    assert table_for(FACTORY) is TABLE  # built once per factory


@pytest.fixture(scope="module")
def texts(corpus: Path) -> list[str]:
    """Detection texts of real feed entries, and lingua sentences, headlines and articles."""
    feeds = sorted((corpus / "fastfeedparser" / "benchmark_data").iterdir())[:40]
    texts = []
    for path in feeds:
        for entry in parse_input(path.read_bytes(), str(path)).entries:
            try:
                article = normalize_entry(entry, NOW)
            except ValueError:
                continue
            texts.append(detection_text(article.get("title"), article.get("text"), 1000))
    sentences = corpus / "lingua-testdata" / "sentences"
    for language in sorted(sentences.iterdir()):
        lines = language.read_text(encoding="utf-8").splitlines()[:25]
        texts += lines  # sentences
        texts += [" ".join(line.split()[:6]) for line in lines[:20]]  # headlines
        texts.append(" ".join(lines))  # an article-length text
    return texts


def test_the_same_ngrams_as_langdetect_on_feeds_and_sentences(texts: list[str]) -> None:
    assert len(texts) > 3000
    assert_same_ngrams(texts)


def test_the_same_prepared_text_as_langdetect_on_feeds_and_sentences(texts: list[str]) -> None:
    assert_same_text(texts)


@pytest.mark.parametrize("prior", [None, "de"])
def test_the_same_probabilities_as_langdetect(texts: list[str], prior: str | None) -> None:
    """The whole detection, trials and priors included, gives langdetect's own numbers."""
    ours = LanguageDetector(LanguageSettings(cache_size=0), FACTORY)
    prior_map = ours._prior([prior]) if prior else None
    for text in [*EDGE_CASES, *texts[::5]]:
        stock = FACTORY.create()
        stock.n_trial = 3
        stock.set_max_text_length(1000)
        if prior_map:
            stock.set_prior_map(prior_map)
        stock.append(text)
        fast = FastDetector(FACTORY)
        fast.n_trial = 3
        fast.set_max_text_length(1000)
        if prior_map:
            fast.set_prior_map(prior_map)
        fast.append(text)
        try:
            expected = [(p.lang, p.prob) for p in stock.get_probabilities()]
        except Exception as error:  # no features: both must refuse alike
            with pytest.raises(type(error)):
                fast.get_probabilities()
            continue
        assert [(p.lang, p.prob) for p in fast.get_probabilities()] == expected, text[:80]
