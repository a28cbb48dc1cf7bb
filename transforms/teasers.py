"""Whether a feed's text is a teaser: the `auto` rule of `fulltext.mode` (pure, no Beam).

`needs_full_text` says why an article's page should be fetched: the feed's text is short, or it ends
as a teaser does ("Read more", "[...]", a trailing ellipsis, in about twenty languages).
"""

from __future__ import annotations

import re

from transforms.enrich import word_tokens

# What feeds append to a teaser, by language; matched at the end of the text only.
TRUNCATION_MARKERS: tuple[str, ...] = (
    "read more",
    "read the full story",
    "read the full article",
    "read full article",
    "continue reading",
    "keep reading",
    "full story",
    "appeared first on",
    "weiterlesen",
    "mehr lesen",
    "lesen sie mehr",
    "zum artikel",
    "lire la suite",
    "lire plus",
    "en savoir plus",
    "leer más",
    "seguir leyendo",
    "sigue leyendo",
    "leia mais",
    "continue lendo",
    "continuar lendo",
    "leggi tutto",
    "continua a leggere",
    "leggi di più",
    "lees meer",
    "verder lezen",
    "czytaj dalej",
    "czytaj więcej",
    "läs mer",
    "les mer",
    "læs mere",
    "lue lisää",
    "tovább",
    "devamını oku",
    "devamı",
    "читать далее",
    "читать дальше",
    "подробнее",
    "續きを読む",
    "続きを読む",
    "阅读全文",
    "閱讀全文",
    "더보기",
    "اقرأ المزيد",
    "अधिक पढ़ें",
    "और पढ़ें",
)
_TRAILING_JUNK = " \t\n\r.:!»«›‹>→…-–—|[]()\"'"
_ELLIPSIS_END = re.compile(r"(?:\.\.\.|…)\s*[\]\)]?\s*$|\[\s*(?:\.\.\.|…)\s*\]\s*$|\[\s*(?:\.\.\.|…)\s*\]")
_WORDS_AFTER_MARKER = 12  # "The post X appeared first on Y.": the marker may have a few words after it


def looks_truncated(text: str | None) -> bool:
    """Whether a feed's text ends as a teaser does: "Read more", "[...]", a trailing ellipsis."""
    if not text:
        return False
    stripped = text.strip()
    if _ELLIPSIS_END.search(stripped[-200:]):
        return True
    tail = stripped[-160:].casefold().rstrip(_TRAILING_JUNK)
    for marker in TRUNCATION_MARKERS:
        at = tail.rfind(marker)
        if at >= 0 and (at == 0 or not tail[at - 1].isalnum()):
            after = tail[at + len(marker) :]
            if not after.strip(_TRAILING_JUNK) or (
                marker == "appeared first on" and len(after.split()) <= _WORDS_AFTER_MARKER
            ):
                return True
    return False


def needs_full_text(feed_text: str | None, min_words: int) -> str | None:
    """The `auto` rule: why the page should be fetched (`short`, `truncated`), or None to keep the feed's."""
    if len(word_tokens(feed_text or "")) < min_words:
        return "short"
    if looks_truncated(feed_text):
        return "truncated"
    return None
