"""langdetect's detector, about 4x faster, every answer the same to the last bit.

Language detection is the largest part of newsbeam's CPU per article (benchmarks/RESULTS.md).
`FastDetector` is langdetect's `Detector` with its per-character and per-language Python loops
replaced by array operations that compute the same numbers in the same order:

- `NgramTable` holds langdetect's profiles as one float64 array (a row of 55 probabilities per
  n-gram, the numbers of `word_lang_prob_map`), built once per process and factory, and looks up
  the n-grams of a text by a 63-bit key (21 bits per character) with one `searchsorted`;
- the n-grams of a text are listed as langdetect's `NGram` buffer lists them (its rules are
  written out in `NgramTable.rows`), with each character normalized once per process by
  langdetect's own `NGram.normalize`;
- the trials draw from langdetect's own seeded `random.Random` with the same calls in the same
  order (`gauss`, then `choice` over the n-gram list), so the same n-grams are drawn; each draw
  multiplies the 55 probabilities by `weight + row` as langdetect's loop does (numpy's float64
  `+`, `*` and `/` per element are the same IEEE operations as Python's), and the sum of the
  normalization is Python's own `sum` over the same values, in the same order.

tests/test_ngrams.py holds it to langdetect's own `Detector` on edge cases, real feed entries and
the lingua sentences: the same n-gram lists and the same probabilities, compared with `==`.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from langdetect.detector import Detector
from langdetect.detector_factory import DetectorFactory
from langdetect.lang_detect_exception import ErrorCode, LangDetectException
from langdetect.utils.ngram import NGram

_BITS = 21  # one more than the largest code point (0x10FFFF + 1 < 2**21): a character never keys as 0
_SPACE = ord(" ") + 1
_SPACES = re.compile(" {2,}")
_LATIN = re.compile("[A-z]")  # langdetect's 'A' <= ch <= 'z', the six signs between Z and a included
_NON_LATIN = re.compile("[\u0300-\U0010ffff]")


class _NormalizedCharacters(dict[int, str]):
    """`str.translate` table: code point -> `NGram.normalize` of the character, filled as met."""

    def __missing__(self, code: int) -> str:
        normalized: str = NGram.normalize(chr(code))
        self[code] = normalized
        return normalized


class _UpperCharacters(dict[int, str]):
    """`str.translate` table: code point -> "\\x01" when the character `isupper()`, else "\\x00"."""

    def __missing__(self, code: int) -> str:
        flag = "\x01" if chr(code).isupper() else "\x00"
        self[code] = flag
        return flag


_NORMALIZED = _NormalizedCharacters()
_UPPER = _UpperCharacters()


def gram_key(gram: str) -> int:
    """The n-gram (1 to 3 characters) as one integer: each code point + 1 in 21 bits, last lowest."""
    key = 0
    for character in gram:
        key = (key << _BITS) | (ord(character) + 1)
    return key


class NgramTable:
    """langdetect's n-gram probabilities as arrays, and the known n-grams of a text as their rows."""

    def __init__(self, word_lang_prob_map: Mapping[str, Sequence[float]]) -> None:
        self.grams = list(word_lang_prob_map)
        # Row r: the probabilities of grams[r] in langdetect's language order, the same floats.
        self.probabilities: npt.NDArray[np.float64] = np.array(
            [word_lang_prob_map[gram] for gram in self.grams], dtype=np.float64
        )
        keys = np.array([gram_key(gram) for gram in self.grams], dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._rows = order.astype(np.int64)

    def rows(self, text: str) -> npt.NDArray[np.int64]:
        """The row of every known n-gram of `text`, in the order `Detector._extract_ngrams` lists them.

        langdetect feeds each normalized character to an `NGram` buffer that starts again after a
        space, so the stream is " " + the normalized text with runs of spaces made one (a space
        after a space adds nothing). At each character e it lists the known 1-, 2- and 3-grams
        ending there, as long as the buffer (which starts at the last space before e) holds them,
        never the lone space, and nothing while the word is in capitals (e and the character
        before it both upper case).
        """
        stream = _SPACES.sub(" ", " " + text.translate(_NORMALIZED))
        if len(stream) < 2:
            return np.empty(0, dtype=np.int64)
        codes = (
            np.frombuffer(stream.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64) + 1
        )
        upper = np.frombuffer(stream.translate(_UPPER).encode("latin-1"), dtype=np.uint8).astype(bool)
        size = len(codes)
        space = codes == _SPACE
        positions = np.arange(size)
        last_space = np.maximum.accumulate(np.where(space, positions, 0))  # at or before each position
        ends = positions[1:]
        held = np.minimum(ends - last_space[:-1] + 1, 3)  # the buffer's length after the character
        allowed = ~(upper[1:] & upper[:-1])
        keys = np.full((size - 1, 3), -1, dtype=np.int64)
        keys[:, 0] = np.where(allowed & ~space[1:], codes[1:], -1)
        keys[:, 1] = np.where(allowed & (held >= 2), (codes[:-1] << _BITS) | codes[1:], -1)
        if size > 2:
            three = (codes[:-2] << (2 * _BITS)) | (codes[1:-1] << _BITS) | codes[2:]
            keys[1:, 2] = np.where(allowed[1:] & (held[1:] >= 3), three, -1)
        every = keys.ravel()
        wanted = every[every > 0]
        found = np.searchsorted(self._keys, wanted)
        found[found == len(self._keys)] = 0
        rows: npt.NDArray[np.int64] = self._rows[found[self._keys[found] == wanted]]
        return rows

    def ngrams(self, text: str) -> list[str]:
        """The known n-grams of `text` as strings (what `Detector._extract_ngrams` returns)."""
        return [self.grams[row] for row in self.rows(text).tolist()]


_TABLES: weakref.WeakKeyDictionary[DetectorFactory, NgramTable] = weakref.WeakKeyDictionary()


def table_for(factory: DetectorFactory) -> NgramTable:
    """The factory's `NgramTable`, built on first use (about a second) and kept while the factory lives."""
    table = _TABLES.get(factory)
    if table is None:
        table = _TABLES[factory] = NgramTable(factory.word_lang_prob_map)
    return table


class FastDetector(Detector):
    """langdetect's `Detector` computing the same probabilities with array operations.

    Made from a factory (`FastDetector(factory)`) as `DetectorFactory.create` makes a `Detector`;
    priors, the text length limit, the random seed and the result's sorting are langdetect's own.
    """

    text: str  # set by langdetect's `__init__`

    def __init__(self, factory: DetectorFactory) -> None:
        super().__init__(factory)
        self._table = table_for(factory)

    def append(self, text: str) -> None:
        """langdetect's `append`: URLs and e-mail addresses out, cut to the limit, runs of spaces one."""
        text = self.URL_RE.sub(" ", text)
        text = self.MAIL_RE.sub(" ", text)
        text = NGram.normalize_vi(text)
        # langdetect keeps a space only after a character that is not one, counting in the cut text.
        self.text += _SPACES.sub(" ", text[: self.max_text_length])

    def cleaning_text(self) -> None:
        """langdetect's `cleaning_text`: mostly non-Latin text loses its Latin letters.

        langdetect counts a character from U+0300 up as non-Latin unless its block "is" Latin
        Extended Additional, a comparison of the block's number with a name that is never equal:
        so every character from U+0300 counts.
        """
        text = self.text
        if len(_LATIN.findall(text)) * 2 < len(_NON_LATIN.findall(text)):
            self.text = _LATIN.sub("", text)

    def _extract_ngrams(self) -> list[str]:
        text = self.text
        return self._table.ngrams(text)

    def _detect_block(self) -> None:
        self.cleaning_text()
        text = self.text
        rows = self._table.rows(text).tolist()
        if not rows:
            raise LangDetectException(ErrorCode.CantDetectError, "No features in text.")
        table = self._table.probabilities
        width = len(self.langlist)
        langprob = np.zeros(width)
        self.random.seed(self.seed)
        # `Random.choice(rows)` is `rows[Random._randbelow(len(rows))]`: called directly, the same
        # draws with one call less each (the tests compare every answer with langdetect's).
        below = self.random._randbelow
        count = len(rows)
        gauss = self.random.gauss
        for _ in range(self.n_trial):
            prob = np.array(self._init_probability(), dtype=np.float64)
            alpha = self.alpha + gauss(0.0, 1.0) * self.ALPHA_WIDTH
            weight = alpha / self.BASE_FREQ
            i = 0
            while True:
                # Draws i .. the next multiple of 5, where langdetect normalizes and checks.
                last = i + (5 - i % 5) % 5
                drawn = table[[rows[below(count)] for _ in range(last - i + 1)]]
                drawn += weight
                for factors in drawn:
                    prob *= factors
                values = prob.tolist()
                total = sum(values)  # Python's own sum, as langdetect's `_normalize_prob`
                if total == 0.0:
                    raise ZeroDivisionError("float division by zero")
                prob /= total
                # Division by a positive number keeps the order: the largest quotient is the
                # quotient of the largest value, as langdetect's running maximum finds it.
                if max(values) / total > self.CONV_THRESHOLD or last >= self.ITERATION_LIMIT:
                    break
                i = last + 1
            langprob += prob / self.n_trial
        self.langprob = langprob.tolist()
