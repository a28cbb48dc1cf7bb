"""langdetect's detector with its n-gram step made about 2x faster, every answer the same.

Language detection is most of newsbeam's CPU per article (benchmarks/RESULTS.md), and more than
half of langdetect's time on a 1,000-character text goes to `Detector._extract_ngrams`, which
builds the list of every known 1- to 3-gram of the text character by character (a method call, a
Unicode-block look-up by bisection and string concatenations per character), although the trials
then draw only about 150 of them. `extract_ngrams` builds the same list: each character is
normalized once per process by a `str.translate` table that asks langdetect's own `NGram.normalize`
(so the rules stay langdetect's), and the n-grams are sliced per word instead of being shifted
through a buffer. `FastDetector` is langdetect's `Detector` with only that step replaced: the
random draws, the trials, the priors and the probabilities are langdetect's own code, so every
answer is the same to the last bit (tests/test_ngrams.py compares both on feed entries, the lingua
sentences and edge cases).
"""

from __future__ import annotations

from collections.abc import Container

from langdetect.detector import Detector
from langdetect.utils.ngram import NGram


class _NormalizedCharacters(dict[int, str]):
    """`str.translate` table: code point -> `NGram.normalize` of the character, filled as met."""

    def __missing__(self, code: int) -> str:
        normalized: str = NGram.normalize(chr(code))
        self[code] = normalized
        return normalized


_NORMALIZED = _NormalizedCharacters()


def extract_ngrams(text: str, known: Container[str]) -> list[str]:
    """The n-grams of `text` that are in `known`, exactly as `Detector._extract_ngrams` lists them.

    langdetect's buffer starts again after every space, so each word is seen as " word" plus the
    space that ends it (none after the last word); at each character it lists the known 1-, 2- and
    3-grams ending there (never the lone space), unless the word is in capitals so far (two
    capitals in a row, until a character that is not one). Several spaces in a row give nothing.
    """
    result: list[str] = []
    append = result.append
    words = text.translate(_NORMALIZED).split(" ")
    last = len(words) - 1
    for position, word in enumerate(words):
        if not word:
            continue
        padded = " " + word + " " if position < last else " " + word
        capitals = False
        previous = " "
        for end in range(1, len(padded)):
            character = padded[end]
            if character.isupper():
                if previous.isupper():
                    capitals = True
            else:
                capitals = False
            previous = character
            if capitals:
                continue
            if character != " " and character in known:
                append(character)
            gram = padded[end - 1 : end + 1]
            if gram in known:
                append(gram)
            if end >= 2:
                gram = padded[end - 2 : end + 1]
                if gram in known:
                    append(gram)
    return result


class FastDetector(Detector):
    """langdetect's `Detector` with `extract_ngrams` for its n-gram step, all else langdetect's own.

    Made from a factory (`FastDetector(factory)`) as `DetectorFactory.create` makes a `Detector`.
    (List comprehensions for the update and the normalization of each draw were tried: the same
    bits, but slower than langdetect's indexed loops over 55 languages.)
    """

    def _extract_ngrams(self) -> list[str]:
        return extract_ngrams(self.text, self.word_lang_prob_map)
