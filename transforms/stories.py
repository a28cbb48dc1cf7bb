"""Near-duplicate stories: which articles are the same story, republished by other outlets.

Pure functions, no Beam: the fingerprint of an article (MinHash signatures over shingles of its title
and text, computed with numpy in one pass per text: 4.4x less CPU than datasketch's per-shingle
hashing on the syndication set, benchmarks/RESULTS.md), the LSH band keys an index looks candidates
up by, the similarity of two fingerprints, and the assignment rule. Each article joins the story of
its most similar earlier article above the threshold ("earlier": commit order, then `published_at`,
then `article_id`); stories never merge, so a `story_id` (the `article_id` of its first article) never
changes once given.

Four signatures per article. The **body** signature (126 permutations over word 3-grams, or character
5-grams for scripts written without spaces) finds edited copies: a rewritten headline, dropped or
reordered paragraphs, a byline and a footer keep most 3-grams. Its Jaccard estimate is low for a
40-word teaser of an 800-word article, so a **lead** signature (32 permutations over the first
`LEAD_WORDS` words) scores teasers: when one side is teaser-length, its body is compared with the
other's lead, which is what a feed's teaser usually is. A follow-up that repeats only an opening
paragraph is long on both sides and so is never matched by its lead alone. A **title** signature (16
permutations over the headline's words) lets the lead rule require shared headline words. A
**middle** signature (32 permutations, 16 bits a slot) over the `MIDDLE_WORDS` words after the
opening paragraph, never the closing one, guards matches by containment: a follow-up whose first
paragraph is longer than the lead shares that paragraph and the outlet's footer with its source, and
a channel's post that is mostly its sponsor block is inside every longer post of the channel; neither
shares what follows the opening (benchmarks/RESULTS.md, "Near-duplicate stories", for the attempts).

Shingles are never built as strings: a text's tokens are hashed in one numpy pass, a shingle is a hash
of its tokens' hashes, and each permutation is a multiply-add-shift hash, all as array operations. The
constants come from blake2b of their names, so prints are the same in every process.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

import numpy as np

BODY_PERMUTATIONS = 126
BODY_BANDS = 42  # rows of 3: a pair at Jaccard 0.5 is a candidate with probability 0.996
LEAD_PERMUTATIONS = 32
LEAD_BANDS = 16  # rows of 2
TITLE_PERMUTATIONS = 16
MIDDLE_PERMUTATIONS = 32
MIN_TITLE_SIMILARITY = 0.3
CONTAINMENT_WEIGHT = 0.8  # for a match by the lead alone
LEAD_WORDS = 60
TEASER_WORDS = 90  # of the text, not the headline
OPENING_WORDS = 12  # a shorter first paragraph (a byline, a dateline) is not yet the opening
MIDDLE_WORDS = 120  # right after the opening: a copy's story is there, shared blocks come at the end
MIN_MIDDLE_WORDS = 12  # a smaller middle says too little to judge a match by
MIN_MIDDLE_SHARE = 0.3  # above the noise of one slot in 32 (about 0.24 at the sizes of the set)
WORD_SHINGLE = 3
CHAR_SHINGLE = 5
SEED = 1
DEFAULT_THRESHOLD = 0.5
DEFAULT_WINDOW = timedelta(days=7)
MAX_FILED_MEMBERS = 32  # a story's members among an article's candidates before its bands stop filing more
MAX_FILED_PER_BAND = 32  # in-window articles filed under one band key before it files no more
SPACELESS_LANGUAGES = frozenset({"zh", "zh-cn", "zh-tw", "ja", "th", "lo", "km", "my", "bo"})
SPACELESS = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
TOKEN = re.compile(r"\w+")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
LAYOUT = 2
_HEADER = struct.Struct("<BIIII")
_LAYOUT_1_SIZE = 8 + 4 * (BODY_PERMUTATIONS + LEAD_PERMUTATIONS + TITLE_PERMUTATIONS)
_LAYOUT_2_SIZE = (
    _HEADER.size + 4 * (BODY_PERMUTATIONS + LEAD_PERMUTATIONS + TITLE_PERMUTATIONS) + 2 * MIDDLE_PERMUTATIONS
)


@dataclass(frozen=True)
class Fingerprint:
    """What the index keeps of an article: its sizes in words and its four signatures.

    `words` counts the tokens of title and text (the size of the body's shingle set, for containment),
    `text_words` those of the text alone (a teaser is told by its text, not by its headline).
    The middle signature (16 bits a slot: b-bit MinHash) is of the text between its opening paragraph
    and its closing one; None for a print of layout 1, which had none.
    """

    words: int
    lead_words: int
    body: np.ndarray[Any, Any] = field(compare=False)
    lead: np.ndarray[Any, Any] = field(compare=False)
    title: np.ndarray[Any, Any] = field(compare=False)
    text_words: int | None = None
    middle_words: int = 0
    middle: np.ndarray[Any, Any] | None = field(default=None, compare=False)

    def to_bytes(self) -> bytes:
        """Layout 2: a version byte, four uint32 sizes, the uint32 signatures, the uint16 middle."""
        values = np.concatenate([self.body, self.lead, self.title]).astype("<u4")
        middle = self.middle if self.middle is not None else np.full(MIDDLE_PERMUTATIONS, _EMPTY_16)
        text_words = self.words if self.text_words is None else self.text_words
        header = _HEADER.pack(LAYOUT, self.words, self.lead_words, text_words, self.middle_words)
        data: bytes = header + values.tobytes() + middle.astype("<u2").tobytes()
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        """A print of layout 2, or of layout 1 (committed before the middle signature: read without
        one, so its article is compared as it was). Any other size is an error, never a guess."""
        lead_end = BODY_PERMUTATIONS + LEAD_PERMUTATIONS
        signatures = BODY_PERMUTATIONS + LEAD_PERMUTATIONS + TITLE_PERMUTATIONS

        Signature = np.ndarray[Any, Any]

        def split(values: Signature) -> tuple[Signature, Signature, Signature]:
            return values[:BODY_PERMUTATIONS], values[BODY_PERMUTATIONS:lead_end], values[lead_end:]

        if len(data) == _LAYOUT_1_SIZE:
            words, lead_words = struct.unpack_from("<II", data)
            return cls(
                words, lead_words, *split(np.frombuffer(data, dtype="<u4", offset=8).astype(np.uint32))
            )
        if len(data) != _LAYOUT_2_SIZE or data[0] != LAYOUT:
            raise ValueError(
                f"a story fingerprint of {len(data)} bytes (first byte {data[:1].hex() or 'none'}) is of no "
                f"layout this version reads: layout 1 is {_LAYOUT_1_SIZE} bytes, layout {LAYOUT} "
                f"{_LAYOUT_2_SIZE} bytes starting with {LAYOUT:02x}"
            )
        _, words, lead_words, text_words, middle_words = _HEADER.unpack_from(data)
        values = np.frombuffer(data, dtype="<u4", offset=_HEADER.size, count=signatures).astype(np.uint32)
        middle = np.frombuffer(data, dtype="<u2", offset=_HEADER.size + 4 * signatures).astype(np.uint16)
        return cls(
            words,
            lead_words,
            *split(values),
            text_words,
            middle_words,
            middle,
        )

    @property
    def is_teaser(self) -> bool:
        return (self.words if self.text_words is None else self.text_words) <= TEASER_WORDS

    @property
    def has_middle(self) -> bool:
        return self.middle is not None and self.middle_words >= MIN_MIDDLE_WORDS


def normalized_tokens(text: str) -> list[str]:
    """Casefolded word tokens, width and accents' composition as one form (NFKC).

    Quotes and other punctuation are never part of a token, so outlets' quote styles do not matter.
    """
    return TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def is_spaceless(text: str, language: str | None) -> bool:
    if language and language.casefold() in SPACELESS_LANGUAGES:
        return True
    sample = text[:2000]
    return len(SPACELESS.findall(sample)) > 0.3 * max(1, len(sample.replace(" ", "")))


def shingles(text: str, language: str | None = None) -> list[str]:
    """Word 3-grams, or character 5-grams of the letters for scripts written without spaces."""
    if is_spaceless(text, language):
        letters = "".join(normalized_tokens(text))
        n = CHAR_SHINGLE
        return [letters[i : i + n] for i in range(max(1, len(letters) - n + 1))] if letters else []
    tokens = normalized_tokens(text)
    n = WORD_SHINGLE
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def word_count(text: str, language: str | None = None) -> int:
    """Words, counting two characters of a script without spaces as one."""
    if is_spaceless(text, language):
        return len("".join(normalized_tokens(text))) // 2
    return len(normalized_tokens(text))


def lead_of(text: str, language: str | None = None) -> str:
    if is_spaceless(text, language):
        return text[: LEAD_WORDS * 2]
    return " ".join(text.split()[:LEAD_WORDS])


def _constant(name: str, number: int) -> int:
    """A fixed 64-bit constant, the same in every process (blake2b of its name, never `hash()`)."""
    digest = hashlib.blake2b(f"newsbeam-stories:{SEED}:{name}:{number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


_POLY = np.uint64(_constant("poly", 0) | 1)  # odd, so invertible modulo 2**64
_POLY_INVERSE = np.uint64(pow(int(_POLY), -1, 2**64))
_SHINGLE_WEIGHTS = tuple(np.uint64(_constant("shingle", k) | 1) for k in range(CHAR_SHINGLE))
_BAND_WEIGHTS = tuple(np.uint64(_constant("band", k) | 1) for k in range(8))
_EMPTY = np.uint32(0xFFFFFFFF)
_EMPTY_16 = np.uint16(0xFFFF)


@cache
def _permutations(count: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Multiply-add-shift hash functions h(x) = ((a·x + b) mod 2**64) >> 32 over 32-bit x."""
    a = np.array([_constant(f"a{count}", i) | 1 for i in range(count)], dtype=np.uint64)
    b = np.array([_constant(f"b{count}", i) for i in range(count)], dtype=np.uint64)
    return a[:, None], b[:, None]


def _mix(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """splitmix64's finalizer, element-wise: every output bit depends on every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    result: np.ndarray[Any, Any] = x ^ (x >> np.uint64(31))
    return result


_POWERS: list[np.ndarray[Any, Any]] = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]


def _power_tables(length: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """P^j and P^-j for j = 0..length (kept and grown by doubling: computed once per process)."""
    if len(_POWERS[0]) <= length:
        size = max(length + 1, 2 * len(_POWERS[0]), 4096)
        with np.errstate(over="ignore"):
            for slot, base in enumerate((_POLY, _POLY_INVERSE)):
                table = np.ones(size, dtype=np.uint64)
                table[1:] = np.cumprod(np.full(size - 1, base, dtype=np.uint64))
                _POWERS[slot] = table
    return _POWERS[0], _POWERS[1]


def _codes(text: str) -> np.ndarray[Any, Any]:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def token_hashes(tokens: Sequence[str]) -> np.ndarray[Any, Any]:
    """A 64-bit hash of each token, in one numpy pass over the joined text (no loop per token).

    Polynomial hashes from one prefix sum: token [s, e) is (G[e] - G[s]) · P⁻ˢ modulo 2**64, where
    G[j] = Σ_{i<j} c[i]·P^(i+1); P is odd, so its inverse exists. Equal tokens hash equal anywhere.
    """
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    codes = _codes(" ".join(tokens))
    powers, inverses = _power_tables(len(codes) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
        np.cumsum(codes * powers[1 : len(codes) + 1], out=prefix[1:])
        spaces = np.flatnonzero(codes == 32)
        starts = np.concatenate([[0], spaces + 1])
        ends = np.concatenate([spaces, [len(codes)]])
        return _mix((prefix[ends] - prefix[starts]) * inverses[starts])


def _ngram_hashes(values: np.ndarray[Any, Any], n: int) -> np.ndarray[Any, Any]:
    """One hash per n-gram of consecutive values (all of them as one when there are fewer than n)."""
    if len(values) == 0:
        return values
    n = min(n, len(values))
    count = len(values) - n + 1
    with np.errstate(over="ignore"):
        combined: np.ndarray[Any, Any] = values[:count] * _SHINGLE_WEIGHTS[0]
        for k in range(1, n):
            combined = combined + values[k : k + count] * _SHINGLE_WEIGHTS[k]
        return _mix(combined)


def _minhash(hashes: np.ndarray[Any, Any], permutations: int) -> np.ndarray[Any, Any]:
    """The MinHash signature (uint32 per permutation) of a set given by its 64-bit element hashes."""
    if len(hashes) == 0:
        return np.full(permutations, _EMPTY, dtype=np.uint32)
    a, b = _permutations(permutations)
    with np.errstate(over="ignore"):
        values = a * (hashes >> np.uint64(32))[None, :]
        values += b
    result: np.ndarray[Any, Any] = (values.min(axis=1) >> np.uint64(32)).astype(np.uint32)
    return result


def _shingle_hashes(tokens: Sequence[str], spaceless: bool) -> np.ndarray[Any, Any]:
    if spaceless:
        return _ngram_hashes(_mix(_codes("".join(tokens))), CHAR_SHINGLE)
    return _ngram_hashes(token_hashes(tokens), WORD_SHINGLE)


def _middle_span(
    paragraphs: Sequence[Sequence[str]], size: Callable[[Sequence[str]], int]
) -> tuple[int, int]:
    """The token range [start, end) of the text's middle: after its opening paragraph (with the short
    ones before it: a byline, a dateline) and before its closing one (a footer, a sign-off).

    A follow-up repeats the opening and an outlet's footer closes all its articles; what a copy shares
    with its source beyond those two is the story itself.
    """
    opening = next((n for n, p in enumerate(paragraphs) if size(p) >= OPENING_WORDS), None)
    if opening is None or opening + 2 > len(paragraphs) - 1:  # no paragraph between opening and closing
        return 0, 0
    start = sum(len(p) for p in paragraphs[: opening + 1])
    return start, start + sum(len(p) for p in paragraphs[opening + 1 : -1])


def fingerprint(title: str | None, text: str | None, language: str | None = None) -> Fingerprint:
    """The article's fingerprint from its title and text (the normalized record's fields).

    Each paragraph is tokenized once and the tokens hashed in one numpy pass; shingles are hashes of
    consecutive token hashes, never strings (see `shingles` for what they stand for), and the lead and
    the middle are slices of the same hashes.
    """
    title_tokens = normalized_tokens(title or "")
    paragraphs = [tokens for part in PARAGRAPH_BREAK.split(text or "") if (tokens := normalized_tokens(part))]
    text_tokens = [token for paragraph in paragraphs for token in paragraph]
    spaceless = is_spaceless(" ".join(part for part in (title, text) if part), language)
    body_tokens = title_tokens + text_tokens
    if spaceless:
        letters = "".join(text_tokens or title_tokens)
        lead_letters = letters[: LEAD_WORDS * 2]
        words = len("".join(body_tokens)) // 2
        lead_words, text_words = len(lead_letters) // 2, len("".join(text_tokens)) // 2
        start, end = _middle_span(paragraphs, lambda p: len("".join(p)) // 2)
        middle_letters = "".join(text_tokens[start:end])[: 2 * MIDDLE_WORDS]
        middle_words = len(middle_letters) // 2
        body_hashes = _ngram_hashes(_mix(_codes("".join(body_tokens))), CHAR_SHINGLE)
        lead_hashes = _ngram_hashes(_mix(_codes(lead_letters)), CHAR_SHINGLE)
        middle_hashes = _ngram_hashes(_mix(_codes(middle_letters)), CHAR_SHINGLE)
        title_hashes = _ngram_hashes(_mix(_codes("".join(title_tokens))), 2)
    else:
        hashes = token_hashes(body_tokens)  # equal tokens hash equal anywhere: slices are the parts'
        lead_start = len(title_tokens) if text_tokens else 0  # the text's opening, or the title's
        start, end = _middle_span(paragraphs, len)
        end = min(end, start + MIDDLE_WORDS)
        words, text_words, middle_words = len(body_tokens), len(text_tokens), end - start
        lead_words = min(LEAD_WORDS, len(text_tokens)) if text_tokens else min(LEAD_WORDS, len(title_tokens))
        body_hashes = _ngram_hashes(hashes, WORD_SHINGLE)
        lead_hashes = _ngram_hashes(hashes[lead_start : lead_start + LEAD_WORDS], WORD_SHINGLE)
        offset = len(title_tokens)
        middle_hashes = _ngram_hashes(hashes[offset + start : offset + end], WORD_SHINGLE)
        title_hashes = hashes[: len(title_tokens)]
    return Fingerprint(
        words,
        lead_words,
        _minhash(body_hashes, BODY_PERMUTATIONS),
        _minhash(lead_hashes, LEAD_PERMUTATIONS),
        _minhash(title_hashes, TITLE_PERMUTATIONS),
        text_words,
        middle_words,
        (_minhash(middle_hashes, MIDDLE_PERMUTATIONS) >> np.uint32(16)).astype(np.uint16),
    )


def title_words(title: str, language: str | None = None) -> list[str]:
    """The headline as a set of words (characters bigrams without spaces): outlets reorder and trim it."""
    if is_spaceless(title, language):
        letters = "".join(normalized_tokens(title))
        return sorted({letters[i : i + 2] for i in range(max(1, len(letters) - 1))})
    return sorted(set(normalized_tokens(title)))


def _bands(values: np.ndarray[Any, Any], bands: int, prefix: str) -> list[str]:
    """One key per band of `rows` consecutive values: a 64-bit hash of the band, in one numpy pass."""
    rows = len(values) // bands
    table = values[: bands * rows].astype(np.uint64).reshape(bands, rows)
    with np.errstate(over="ignore"):
        combined: np.ndarray[Any, Any] = np.arange(bands, dtype=np.uint64) * _BAND_WEIGHTS[0]
        for row in range(rows):
            combined = combined + table[:, row] * _BAND_WEIGHTS[row + 1]
    return [f"{prefix}{band:02d}:{code:016x}" for band, code in enumerate(_mix(combined).tolist())]


def band_keys(print_: Fingerprint) -> list[str]:
    """The LSH buckets the article is filed under and looked up by: body bands, then lead bands."""
    return _bands(print_.body, BODY_BANDS, "b") + _bands(print_.lead, LEAD_BANDS, "l")


def key_code(key: str) -> int:
    """A stable signed 64-bit hash of a key, the same in every process (the durable index's codes)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def band_codes(print_: Fingerprint) -> list[int]:
    """The article's band keys as the 64-bit codes indexes file and look up (`key_code`)."""
    return [key_code(key) for key in band_keys(print_)]


def jaccard(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


def containment(estimated_jaccard: float, size_a: int, size_b: int) -> float:
    """The share of the smaller set found in the larger, from their Jaccard index and sizes.

    |A∩B| = J(|A|+|B|)/(1+J); divided by the smaller size. Shingle counts are word counts less the
    shingle length, close enough for sizes far above it.
    """
    a, b = max(1, size_a - WORD_SHINGLE + 1), max(1, size_b - WORD_SHINGLE + 1)
    return min(1.0, estimated_jaccard * (a + b) / ((1 + estimated_jaccard) * min(a, b)))


def middle_containment(a: Fingerprint, b: Fingerprint) -> float | None:
    """How much of the smaller middle is in the other's; None when either says too little."""
    if not (a.has_middle and b.has_middle) or a.middle is None or b.middle is None:
        return None
    return containment(jaccard(a.middle, b.middle), a.middle_words, b.middle_words)


def body_similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Of the bodies: the higher of Jaccard and the containment of the shorter, discounted.

    An edited copy drops paragraphs: most of it is inside the original though their Jaccard falls.
    Containment is discounted (CONTAINMENT_WEIGHT) so that a short text inside a long one must be
    nearly all inside to count as much as a Jaccard match; for a teaser it is left to the lead rule,
    which knows about follow-ups. Containment counts only when the two middles share at least
    `MIN_MIDDLE_SHARE`: a follow-up shares the opening and the outlet's footer, not what follows the
    opening; a post that is mostly a channel's sponsor block is inside every post of the channel, but
    at their end, not right after their opening, where a copy shares its source's story.
    """
    estimated = jaccard(a.body, b.body)
    if a.is_teaser or b.is_teaser:
        return estimated  # a teaser inside a long text is the lead rule's to judge
    contained = containment(estimated, a.words, b.words)
    middle = middle_containment(a, b)
    if middle is not None and middle < MIN_MIDDLE_SHARE:
        contained = 0.0
    return max(estimated, CONTAINMENT_WEIGHT * contained)


def lead_similarity(a: Fingerprint, b: Fingerprint) -> float:
    """For a teaser-length side: its lead inside the other's, if their headlines share words; else 0."""
    if not (a.is_teaser or b.is_teaser) or jaccard(a.title, b.title) < MIN_TITLE_SIMILARITY:
        return 0.0
    return CONTAINMENT_WEIGHT * containment(jaccard(a.lead, b.lead), a.lead_words, b.lead_words)


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Estimated similarity: body Jaccard, or for a teaser the lead rule, whichever is higher."""
    return max(body_similarity(a, b), lead_similarity(a, b))


@dataclass(frozen=True)
class IndexedArticle:
    """An article already in a story, as the index keeps it (small: about 0.8 KB)."""

    article_id: str
    story_id: str
    published_at: datetime | None
    fingerprint: Fingerprint


@dataclass(frozen=True)
class StoryAssignment:
    article_id: str
    story_id: str
    near_duplicate_of: str | None
    story_similarity: float | None
    filed_codes: tuple[int, ...] = ()  # the band keys it is filed under (`filed_codes`); none if known

    @property
    def filed(self) -> bool:
        return bool(self.filed_codes)


class StoryLookup(Protocol):
    def known(self, article_id: str) -> IndexedArticle | None: ...

    def filed_under(self, codes: Sequence[int]) -> list[list[IndexedArticle]]: ...

    def add(self, article: IndexedArticle, codes: Sequence[int]) -> None: ...


class MemoryStoryIndex:
    """A `StoryLookup` held in memory (one run's, or a benchmark's), compact enough for 1M articles.

    Each band key is kept as a 64-bit code (blake2b of the key), first in a small dict of recent codes,
    then in sorted numpy runs of (code, article ordinal) that lookups binary-search: about 12 bytes per
    key instead of a Python string and list per bucket (some 190 bytes). Runs are merged when one is
    not at least twice the size of the next (as a binary counter), so there are at most log2(keys /
    MERGE_AT) of them and lookup time grows with the logarithm of the size at most. Candidates come
    in the order they were added.
    """

    MERGE_AT = 1 << 16  # recent codes before they become a sorted run

    def __init__(self) -> None:
        self.articles: dict[str, IndexedArticle] = {}
        self._entries: list[IndexedArticle] = []
        self._recent: dict[int, list[int]] = {}
        self._recent_codes: list[int] = []  # the same pairs as `_recent`, in the order filed
        self._recent_ordinals: list[int] = []
        self._runs: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def known(self, article_id: str) -> IndexedArticle | None:
        return self.articles.get(article_id)

    def candidates(self, codes: Sequence[int]) -> Iterator[IndexedArticle]:
        """The articles filed under any of `codes`, each once, in the order they were added."""
        seen: set[str] = set()
        for group in self.filed_under(codes):
            for article in group:
                if article.article_id not in seen:
                    seen.add(article.article_id)
                    yield article

    def filed_under(self, codes: Sequence[int]) -> list[list[IndexedArticle]]:
        """The articles filed under each of `codes` (a list per code, in the order they were added)."""
        if not codes:
            return []
        wanted = np.array(codes, dtype=np.int64)
        found: list[list[int]] = [[] for _ in codes]
        for run_codes, run_ordinals in self._runs:  # oldest first
            lows = np.searchsorted(run_codes, wanted, side="left").tolist()
            highs = np.searchsorted(run_codes, wanted, side="right").tolist()
            for number, (low, high) in enumerate(zip(lows, highs, strict=True)):
                if high > low:
                    found[number].extend(run_ordinals[low:high].tolist())
        return [
            [self._entries[ordinal] for ordinal in [*ordinals, *self._recent.get(code, ())]]
            for code, ordinals in zip(codes, found, strict=True)
        ]

    def add(self, article: IndexedArticle, codes: Sequence[int]) -> None:
        self.articles[article.article_id] = article
        ordinal = len(self._entries)
        self._entries.append(article)
        for code in codes:
            self._recent.setdefault(code, []).append(ordinal)
        self._recent_codes += codes
        self._recent_ordinals += [ordinal] * len(codes)
        if len(self._recent_codes) >= self.MERGE_AT:
            self._flush()

    def _flush(self) -> None:
        codes = np.array(self._recent_codes, dtype=np.int64)
        ordinals = np.array(self._recent_ordinals, dtype=np.uint32)
        order = np.lexsort((ordinals, codes))
        self._runs.append((codes[order], ordinals[order]))
        self._recent, self._recent_codes, self._recent_ordinals = {}, [], []
        while len(self._runs) >= 2 and len(self._runs[-2][0]) < 2 * len(self._runs[-1][0]):
            (older_codes, older_ordinals), (newer_codes, newer_ordinals) = self._runs[-2:]
            codes = np.concatenate([older_codes, newer_codes])
            ordinals = np.concatenate([older_ordinals, newer_ordinals])
            order = np.argsort(codes, kind="stable")  # the older run's ordinals are the smaller
            self._runs[-2:] = [(codes[order], ordinals[order])]


@dataclass(frozen=True)
class NewArticle:
    article_id: str
    published_at: datetime | None
    fingerprint: Fingerprint


def arrival_order(articles: Iterable[NewArticle]) -> list[NewArticle]:
    """A commit's articles in the order stories see them: published_at (unknown last), then article_id."""
    return sorted(
        articles, key=lambda a: (a.published_at is None, a.published_at or datetime.min, a.article_id)
    )


def within_window(a: datetime | None, b: datetime | None, window: timedelta) -> bool:
    return a is None or b is None or abs(a - b) <= window


def in_window(
    article_id: str, published_at: datetime | None, candidates: Iterable[IndexedArticle], window: timedelta
) -> list[IndexedArticle]:
    """The candidates an article is compared with: the others published within `window` of it."""
    return [
        c
        for c in candidates
        if c.article_id != article_id and within_window(c.published_at, published_at, window)
    ]


def look_up(
    index: StoryLookup,
    article_id: str,
    published_at: datetime | None,
    codes: Sequence[int],
    window: timedelta,
) -> tuple[list[list[IndexedArticle]], list[IndexedArticle]]:
    """What an article is decided against: the articles filed under each of its band `codes`, and
    its in-window candidates among them (what `best_match` compares and `filed_codes` counts)."""
    filed = index.filed_under(codes)
    return filed, in_window(article_id, published_at, unique_articles(filed), window)


def filed_codes(
    article_id: str,
    story_id: str,
    codes: Sequence[int],
    filed: Sequence[Sequence[IndexedArticle]],
    candidates: Sequence[IndexedArticle],
) -> tuple[int, ...]:
    """The band keys a newly assigned article is filed under, given the articles `filed` under each
    of its `codes` and its in-window `candidates`. Two bounds keep every lookup small:

    - a story's later member is filed under none while `MAX_FILED_MEMBERS` of its story are among its
      candidates (its first article always is): one feed whose items share a template made one story
      of 60,000 posts at a million articles, each new member compared with all the earlier ones,
      quadratic, 311 s of a 426 s story phase;
    - a band key files no more articles once `MAX_FILED_PER_BAND` in-window ones are filed under it:
      such a template split into a hundred stories still shared its band keys, so each of its posts
      had 2,000 candidates (100,000 articles: 22-26 s chunks of 5,000 instead of 2 s).

    Every article keeps its `stories` row and its print (a rerun knows it). The rule reads only the
    in-window candidates, which are the same however a commit is split into chunks, so chunks decide
    as the whole commit does; `rebuild_index` replays it.
    """
    if story_id != article_id and sum(1 for c in candidates if c.story_id == story_id) >= MAX_FILED_MEMBERS:
        return ()
    near = {c.article_id for c in candidates}
    return tuple(
        code
        for code, articles in zip(codes, filed, strict=True)
        if sum(1 for a in articles if a.article_id in near) < MAX_FILED_PER_BAND
    )


def unique_articles(groups: Iterable[Iterable[IndexedArticle]]) -> list[IndexedArticle]:
    """The articles of `groups`, each once, in the order first met."""
    seen: dict[str, IndexedArticle] = {}
    for group in groups:
        for article in group:
            seen.setdefault(article.article_id, article)
    return list(seen.values())


def assign_stories(
    articles: Iterable[NewArticle],
    index: StoryLookup,
    threshold: float = DEFAULT_THRESHOLD,
    window: timedelta = DEFAULT_WINDOW,
    codes_of: Mapping[str, Sequence[int]] | None = None,
) -> list[StoryAssignment]:
    """Give each article of one commit its story, against the index, and file it there.

    The articles are taken in `arrival_order`, so the result depends only on what the index holds and
    on the articles themselves, never on how a runner ordered them. Ties in similarity go to the
    earliest candidate (published_at, then article_id), so a rerun gives the same answer. A member of
    a large story, and an article whose band keys are full, is filed under fewer keys (`filed_codes`).
    """
    assignments = []
    for article in arrival_order(articles):
        indexed = index.known(article.article_id)
        if indexed is not None:  # a rerun, or a new version of a stored article: its story stays
            assignments.append(StoryAssignment(article.article_id, indexed.story_id, None, None))
            continue
        codes = codes_of[article.article_id] if codes_of is not None else band_codes(article.fingerprint)
        filed, candidates = look_up(index, article.article_id, article.published_at, codes, window)
        best = best_match(article, candidates, threshold)
        story_id = article.article_id if best is None else best[1].story_id
        filing = filed_codes(article.article_id, story_id, codes, filed, candidates)
        if best is None:
            assignment = StoryAssignment(article.article_id, story_id, None, None, filing)
        else:
            assignment = StoryAssignment(
                article.article_id, story_id, best[1].article_id, round(best[0], 4), filing
            )
        index.add(
            IndexedArticle(article.article_id, story_id, article.published_at, article.fingerprint), filing
        )
        assignments.append(assignment)
    return assignments


def best_match(
    article: NewArticle, candidates: Sequence[IndexedArticle], threshold: float
) -> tuple[float, IndexedArticle] | None:
    """The most similar of the in-window `candidates` (`in_window`) above the threshold, or None.

    A long article matched only through a teaser's lead may not join that teaser's story when the story
    has a long article among the candidates that the body does not match: it shares the opening, not the
    story (a follow-up).
    """
    mine = article.fingerprint
    unmatched_long_stories = {
        c.story_id
        for c in candidates
        if not c.fingerprint.is_teaser and body_similarity(mine, c.fingerprint) < threshold
    }
    best: tuple[float, IndexedArticle] | None = None
    for candidate in candidates:
        body = body_similarity(mine, candidate.fingerprint)
        lead = lead_similarity(mine, candidate.fingerprint)
        if body < threshold and not mine.is_teaser and candidate.story_id in unmatched_long_stories:
            lead = 0.0
        score = max(body, lead)
        if score < threshold:
            continue
        if best is None or score > best[0] or (score == best[0] and _earlier(candidate, best[1])):
            best = (score, candidate)
    return best


def _earlier(a: IndexedArticle, b: IndexedArticle) -> bool:
    return (a.published_at is None, a.published_at or datetime.min, a.article_id) < (
        b.published_at is None,
        b.published_at or datetime.min,
        b.article_id,
    )
