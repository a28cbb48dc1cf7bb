"""Language: declared tags, langdetect codes, detection on real sentences, fusion with the declaration."""

from __future__ import annotations

import copy
from typing import cast

import pytest

from transforms.language import (
    UNDETERMINED,
    LanguageDetector,
    LanguageResult,
    LanguageSettings,
    apply_language,
    declared_language,
    detection_text,
    detector_code,
)
from transforms.schema import CheckedArticle


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(LanguageSettings())


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("en", ("en", None)),
        ("en-US", ("en", None)),
        ("en-us", ("en", None)),
        ("EN_gb", ("en", None)),
        (" fr ", ("fr", None)),
        ("pt-BR", ("pt", None)),
        ("de-DE-1996", ("de", None)),
        ("zh", ("zh", None)),
        ("zh-TW", ("zh", "Hant")),
        ("zh-HK", ("zh", "Hant")),
        ("zh-Hant", ("zh", "Hant")),
        ("zh-CN", ("zh", "Hans")),
        ("zh-Hans-CN", ("zh", "Hans")),
        ("nb", ("no", None)),
        ("nn-NO", ("no", None)),
        ("iw", ("he", None)),
        ("in", ("id", None)),
        ("ger", ("de", None)),
        ("fra", ("fr", None)),
        ("English", ("en", None)),
        ("Deutsch", ("de", None)),
        ("français", ("fr", None)),
        ("garbage", (None, None)),
        ("x-klingon", (None, None)),
        ("123", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_declared_language(tag: str | None, expected: tuple[str | None, str | None]) -> None:
    assert declared_language(tag) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [("zh-cn", ("zh", "Hans")), ("zh-tw", ("zh", "Hant")), ("en", ("en", None)), ("pt", ("pt", None))],
)
def test_detector_code(code: str, expected: tuple[str, str | None]) -> None:
    assert detector_code(code) == expected


def test_detection_text_is_bounded() -> None:
    assert detection_text("Title", "Body " * 1000, 50) == ("Title\n" + "Body " * 1000)[:50]
    assert detection_text(None, None, 50) == ""
    assert detection_text("  T ", None, 50) == "T"


SENTENCES = {
    "en": "The city council approved the new budget after a long debate on Tuesday evening.",
    "de": "Der Stadtrat hat am Dienstagabend nach langer Debatte den neuen Haushalt beschlossen.",
    "fr": "Le conseil municipal a approuvé le nouveau budget mardi soir après un long débat.",
    "es": "El ayuntamiento aprobó el nuevo presupuesto el martes por la noche tras un largo debate.",
    "it": "Il consiglio comunale ha approvato il nuovo bilancio martedì sera dopo un lungo dibattito.",
    "pt": "A câmara municipal aprovou o novo orçamento na terça-feira à noite após um longo debate.",
    "nl": "De gemeenteraad heeft dinsdagavond na een lang debat de nieuwe begroting goedgekeurd.",
    "ru": "Городской совет утвердил новый бюджет во вторник вечером после долгих дебатов.",
    "ja": "市議会は火曜日の夜、長い議論の末に新しい予算を承認した。",
    "ar": "وافق مجلس المدينة على الميزانية الجديدة مساء الثلاثاء بعد نقاش طويل.",
    "pl": "Rada miasta zatwierdziła nowy budżet we wtorek wieczorem po długiej debacie.",
    "tr": "Belediye meclisi uzun bir tartışmanın ardından salı akşamı yeni bütçeyi onayladı.",
}


@pytest.mark.parametrize(("language", "sentence"), sorted(SENTENCES.items()), ids=sorted(SENTENCES))
def test_real_sentences(detector: LanguageDetector, language: str, sentence: str) -> None:
    result = detector.detect(sentence, None)
    assert result.language == language
    assert result.detected == language
    assert result.source == "detected"
    assert result.declared is None
    assert result.confidence > 0.9


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("市议会在星期二晚上经过长时间辩论后批准了新的预算。", "Hans"),
        ("我爱北京天安门", "Hans"),
        # langdetect alone says Korean at 0.99999 for these (Mimino666/langdetect#51)
        ("市議會在星期二晚上經過長時間辯論後批准了新的預算。", "Hant"),
        ("香港特區政府今日公布新一份財政預算案，當中包括多項紓困措施。", "Hant"),
    ],
)
def test_chinese_is_not_korean(detector: LanguageDetector, text: str, script: str) -> None:
    result = detector.detect(text, None)
    assert (result.language, result.script, result.detected) == ("zh", script, "zh")


def test_korean_in_hangul_is_still_korean(detector: LanguageDetector) -> None:
    result = detector.detect("서울시는 화요일 저녁 긴 논의 끝에 새 예산을 승인했다.", None)
    assert (result.language, result.source) == ("ko", "detected")
    assert result.confidence > 0.9


def test_title_and_body_are_read_together(detector: LanguageDetector) -> None:
    result = detector.detect("Bundestag", SENTENCES["de"])
    assert result.language == "de"


@pytest.mark.parametrize("text", ["", "   ", "12345 678 90", "!!! ??? ... —", "ab", "2024-03-04 12:30"])
def test_undetermined(detector: LanguageDetector, text: str) -> None:
    result = detector.detect(text, None)
    assert result == LanguageResult(UNDETERMINED, None, 0.0, UNDETERMINED, None, "none")


def test_no_letters_with_a_declaration_falls_back_to_it(detector: LanguageDetector) -> None:
    result = detector.detect("2024", None, "de-AT")
    assert result == LanguageResult("de", None, 0.0, UNDETERMINED, "de", "declared")


def test_a_long_text_without_letters_is_undetermined(detector: LanguageDetector) -> None:
    assert detector.detect("1234567890 " * 50, None).language == UNDETERMINED


def test_determinism(detector: LanguageDetector) -> None:
    # Short, ambiguous texts are where an unseeded langdetect gives a different answer each time.
    texts = ["New bridge opens", "Ny regering", "Nyheter", "Mercado", "Nova lei", "Stadt plant Bad"]
    first = [detector.detect(t, None) for t in texts]
    again = [detector.detect(t, None) for t in texts]
    fresh_detector = LanguageDetector(LanguageSettings())  # as a new worker would build it
    fresh = [fresh_detector.detect(t, None) for t in texts]
    assert first == again == fresh


def test_a_sure_detection_overrides_a_wrong_declaration(detector: LanguageDetector) -> None:
    result = detector.detect(SENTENCES["en"], None, "de")
    assert result.language == "en"
    assert result.source == "detected"
    assert result.declared == "de"
    assert result.confidence >= 0.9


@pytest.mark.parametrize(("word", "declared"), [("Politik", "de"), ("Example", "en"), ("Ny regering", "da")])
def test_a_single_word_never_overrides_the_declaration(
    detector: LanguageDetector, word: str, declared: str
) -> None:
    # langdetect is often fully sure, and wrong, on one or two words ("Politik" -> et at 1.0).
    result = detector.detect(word, None, declared)
    assert result.language == declared
    assert result.source in ("declared", "agreed")


def test_agreement(detector: LanguageDetector) -> None:
    result = detector.detect(SENTENCES["fr"], None, "fr-CA")
    assert (result.language, result.source, result.declared, result.detected) == ("fr", "agreed", "fr", "fr")


def test_agreement_keeps_the_declared_script(detector: LanguageDetector) -> None:
    result = detector.detect("市议会在星期二晚上经过长时间辩论后批准了新的预算。", None, "zh-CN")
    assert (result.language, result.script, result.source) == ("zh", "Hans", "agreed")


@pytest.mark.parametrize(
    ("headline", "declared", "wrong"),
    [
        # Real cases where langdetect alone is wrong and unsure, and the feed's declaration fixes it.
        ("New bridge opens", "en", "nl"),
        ("Ny regering", "da", "no"),
        ("Nye regler", "no", "hu"),
    ],
)
def test_a_short_headline_takes_the_declared_language(
    detector: LanguageDetector, headline: str, declared: str, wrong: str
) -> None:
    plain = detector.detect(headline, None)
    assert plain.language == wrong
    assert plain.confidence < 0.9
    fused = detector.detect(headline, None, declared)
    assert fused.language == declared
    assert fused.source == "declared"
    assert fused.detected == wrong  # what the detector said on its own is kept
    assert fused.declared == declared


def test_a_declared_language_without_a_profile_is_trusted_when_unsure(detector: LanguageDetector) -> None:
    # langdetect has no Basque profile: it cannot confirm the declaration, only be unsure.
    result = detector.detect("Kaixo mundua", None, "eu")
    assert result.confidence < 0.9
    assert (result.language, result.source, result.declared) == ("eu", "declared", "eu")
    assert result.detected != "eu"


def test_apply_language() -> None:
    article = cast(CheckedArticle, {"title": "x", "language_declared_raw": "en-US"})
    result = LanguageResult("en", None, 0.987654321, "en", "en", "agreed")
    assert dict(apply_language(article, result)) == {
        "title": "x",
        "language": "en",
        "language_script": None,
        "language_confidence": 0.9877,
        "language_detected": "en",
        "language_declared": "en",
        "language_source": "agreed",
    }


def test_apply_language_leaves_its_input_unchanged() -> None:
    """Beam forbids a DoFn to change its input: the record detect was given must stay as it was."""
    article = cast(CheckedArticle, {"title": "x", "article_id": "a", "language_declared_raw": "de"})
    given = copy.deepcopy(article)
    detected = apply_language(article, LanguageResult("de", None, 0.99, "de", "de", "agreed"))
    assert article == given
    assert detected is not article
    assert (detected["language"], "language_declared_raw" in detected) == ("de", False)


def test_answers_are_remembered_per_sample_and_declaration() -> None:
    detector = LanguageDetector(LanguageSettings(cache_size=2))
    first = detector.detect(
        "Der Bundestag", "Die Abgeordneten haben heute über das neue Gesetz beraten.", "de"
    )
    assert detector.cache_hits == 0
    again = detector.detect(
        "Der Bundestag", "Die Abgeordneten haben heute über das neue Gesetz beraten.", "de"
    )
    assert again == first and detector.cache_hits == 1
    # Another declaration is another question.
    detector.detect("Der Bundestag", "Die Abgeordneten haben heute über das neue Gesetz beraten.", None)
    assert detector.cache_hits == 1
    # Bounded: a third answer pushes out the least recently used one, the declared `de` question.
    detector.detect("Le Parlement", "Les députés ont débattu aujourd'hui de la nouvelle loi.", None)
    detector.detect("Der Bundestag", "Die Abgeordneten haben heute über das neue Gesetz beraten.", "de")
    assert detector.cache_hits == 1
    detector.detect("Le Parlement", "Les députés ont débattu aujourd'hui de la nouvelle loi.", None)
    assert detector.cache_hits == 2


def test_the_cache_remembers_a_digest_of_each_sample_not_the_text() -> None:
    """A full cache (10,000 answers) must not hold 10,000 texts of up to `max_chars` characters."""
    detector = LanguageDetector(LanguageSettings())
    body = "Die Abgeordneten haben heute über das neue Gesetz beraten. " * 20
    first = detector.detect("Der Bundestag", body, "de")
    assert detector.detect("Der Bundestag", body, "de") == first and detector.cache_hits == 1
    assert [(len(sample), declared) for sample, declared in detector._cache] == [(16, "de")]
    assert all(isinstance(sample, bytes) for sample, _ in detector._cache)


def test_a_cache_of_size_zero_remembers_nothing() -> None:
    detector = LanguageDetector(LanguageSettings(cache_size=0))
    for _ in range(3):
        assert (
            detector.detect("Headline", "The committee met on Tuesday to discuss the budget.").language
            == "en"
        )
    assert detector.cache_hits == 0
