"""Near-duplicate stories: which articles are the same story, republished by other outlets.

Pure functions, no Beam: the fingerprint of an article (MinHash signatures over shingles of its title
and text, by `datasketch`), the LSH band keys an index looks candidates up by, the similarity of two
fingerprints, and the assignment rule. Each article joins the story of its most similar earlier article
above the threshold ("earlier": commit order, then `published_at`, then `article_id`); stories never
merge, so a `story_id` (the `article_id` of its first article) never changes once given.

Two signatures per article. The **body** signature (128 permutations over word 3-grams, or character
5-grams for scripts written without spaces) finds edited copies: a rewritten headline, dropped or
reordered paragraphs, a byline and a footer keep most 3-grams. Its Jaccard estimate is low for a
40-word teaser of an 800-word article, so a **lead** signature (32 permutations over the first
`LEAD_WORDS` words) scores teasers: when one side is teaser-length, its body is compared with the
other's lead, which is what a feed's teaser usually is. A follow-up that repeats only an opening
paragraph is long on both sides and so is never matched by its lead alone.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

import numpy as np
from datasketch import MinHash

BODY_PERMUTATIONS = 126
BODY_BANDS = 42  # rows of 3: a pair at Jaccard 0.5 is a candidate with probability 0.996
LEAD_PERMUTATIONS = 32
LEAD_BANDS = 16  # rows of 2
TITLE_PERMUTATIONS = 16
MIN_TITLE_SIMILARITY = 0.3
CONTAINMENT_WEIGHT = 0.8  # for a match by the lead alone
LEAD_WORDS = 60
TEASER_WORDS = 90
WORD_SHINGLE = 3
CHAR_SHINGLE = 5
SEED = 1
DEFAULT_THRESHOLD = 0.5
DEFAULT_WINDOW = timedelta(days=7)
SPACELESS_LANGUAGES = frozenset({"zh", "zh-cn", "zh-tw", "ja", "th", "lo", "km", "my", "bo"})
SPACELESS = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "‚": "'"})
TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class Fingerprint:
    """What the index keeps of an article: its size in words and its two signatures (uint32 each)."""

    words: int
    lead_words: int
    body: np.ndarray[Any, Any] = field(compare=False)
    lead: np.ndarray[Any, Any] = field(compare=False)
    title: np.ndarray[Any, Any] = field(compare=False)

    def to_bytes(self) -> bytes:
        values = np.concatenate([self.body, self.lead, self.title]).astype("<u4")
        data: bytes = values.tobytes()
        return struct.pack("<II", self.words, self.lead_words) + data

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        words, lead_words = struct.unpack_from("<II", data)
        values = np.frombuffer(data, dtype="<u4", offset=8).astype(np.uint64)
        lead_end = BODY_PERMUTATIONS + LEAD_PERMUTATIONS
        return cls(
            words,
            lead_words,
            values[:BODY_PERMUTATIONS],
            values[BODY_PERMUTATIONS:lead_end],
            values[lead_end:],
        )

    @property
    def is_teaser(self) -> bool:
        return self.words <= TEASER_WORDS


def normalized_tokens(text: str) -> list[str]:
    """Casefolded word tokens; quotes, width and accents' composition as one form (NFKC)."""
    return TOKEN.findall(unicodedata.normalize("NFKC", text).translate(QUOTES).casefold())


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


@cache
def _permutations(count: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    permutations: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] = MinHash(
        num_perm=count, seed=SEED
    ).permutations
    return permutations


def _hash32(shingle: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(shingle, digest_size=4).digest(), "little")


def signature(items: Sequence[str], permutations: int) -> np.ndarray[Any, Any]:
    minhash = MinHash(
        num_perm=permutations, seed=SEED, hashfunc=_hash32, permutations=_permutations(permutations)
    )
    if items:
        minhash.update_batch([item.encode() for item in items])
    return np.asarray(minhash.hashvalues, dtype=np.uint64)


def fingerprint(title: str | None, text: str | None, language: str | None = None) -> Fingerprint:
    """The article's fingerprint from its title and text (the normalized record's fields)."""
    body = " ".join(part for part in (title, text) if part)
    lead = lead_of(text or title or "", language)
    return Fingerprint(
        word_count(body, language),
        word_count(lead, language),
        signature(shingles(body, language), BODY_PERMUTATIONS),
        signature(shingles(lead, language), LEAD_PERMUTATIONS),
        signature(title_words(title or "", language), TITLE_PERMUTATIONS),
    )


def title_words(title: str, language: str | None = None) -> list[str]:
    """The headline as a set of words (characters bigrams without spaces): outlets reorder and trim it."""
    if is_spaceless(title, language):
        letters = "".join(normalized_tokens(title))
        return sorted({letters[i : i + 2] for i in range(max(1, len(letters) - 1))})
    return sorted(set(normalized_tokens(title)))


def _bands(values: np.ndarray[Any, Any], bands: int, prefix: str) -> list[str]:
    rows = len(values) // bands
    return [
        f"{prefix}{band:02d}:"
        + hashlib.blake2b(values[band * rows : (band + 1) * rows].tobytes(), digest_size=8).hexdigest()
        for band in range(bands)
    ]


def band_keys(print_: Fingerprint) -> list[str]:
    """The LSH buckets the article is filed under and looked up by: body bands, then lead bands."""
    return _bands(print_.body, BODY_BANDS, "b") + _bands(print_.lead, LEAD_BANDS, "l")


def jaccard(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


def containment(estimated_jaccard: float, size_a: int, size_b: int) -> float:
    """The share of the smaller set found in the larger, from their Jaccard index and sizes.

    |A∩B| = J(|A|+|B|)/(1+J); divided by the smaller size. Shingle counts are word counts less the
    shingle length, close enough for sizes far above it.
    """
    a, b = max(1, size_a - WORD_SHINGLE + 1), max(1, size_b - WORD_SHINGLE + 1)
    return min(1.0, estimated_jaccard * (a + b) / ((1 + estimated_jaccard) * min(a, b)))


def body_similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Of the bodies: the higher of Jaccard and the containment of the shorter, discounted.

    An edited copy drops paragraphs: most of it is inside the original though their Jaccard falls.
    Containment is discounted (CONTAINMENT_WEIGHT) so that a short text inside a long one must be
    nearly all inside to count as much as a Jaccard match; for a teaser it is left to the lead rule,
    which knows about follow-ups.
    """
    estimated = jaccard(a.body, b.body)
    if a.is_teaser or b.is_teaser:
        return estimated  # a teaser inside a long text is the lead rule's to judge
    return max(estimated, CONTAINMENT_WEIGHT * containment(estimated, a.words, b.words))


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
    """An article already in a story, as the index keeps it (small: about 0.6 KB)."""

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


class StoryLookup(Protocol):
    def known(self, article_id: str) -> IndexedArticle | None: ...

    def candidates(self, keys: Iterable[str]) -> Iterable[IndexedArticle]: ...

    def add(self, article: IndexedArticle, keys: Sequence[str]) -> None: ...


class MemoryStoryIndex:
    """A `StoryLookup` held in memory (one run's, or a benchmark's)."""

    def __init__(self) -> None:
        self.buckets: dict[str, list[IndexedArticle]] = {}
        self.articles: dict[str, IndexedArticle] = {}

    def known(self, article_id: str) -> IndexedArticle | None:
        return self.articles.get(article_id)

    def candidates(self, keys: Iterable[str]) -> Iterator[IndexedArticle]:
        seen: set[str] = set()
        for key in keys:
            for article in self.buckets.get(key, ()):
                if article.article_id not in seen:
                    seen.add(article.article_id)
                    yield article

    def add(self, article: IndexedArticle, keys: Sequence[str]) -> None:
        self.articles[article.article_id] = article
        for key in keys:
            self.buckets.setdefault(key, []).append(article)


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


def assign_stories(
    articles: Iterable[NewArticle],
    index: StoryLookup,
    threshold: float = DEFAULT_THRESHOLD,
    window: timedelta = DEFAULT_WINDOW,
) -> list[StoryAssignment]:
    """Give each article of one commit its story, against the index, and file it there.

    The articles are taken in `arrival_order`, so the result depends only on what the index holds and
    on the articles themselves, never on how a runner ordered them. Ties in similarity go to the
    earliest candidate (published_at, then article_id), so a rerun gives the same answer.
    """
    assignments = []
    for article in arrival_order(articles):
        indexed = index.known(article.article_id)
        if indexed is not None:  # a rerun, or a new version of a stored article: its story stays
            assignments.append(StoryAssignment(article.article_id, indexed.story_id, None, None))
            continue
        keys = band_keys(article.fingerprint)
        best = best_match(article, list(index.candidates(keys)), threshold, window)
        if best is None:
            assignment = StoryAssignment(article.article_id, article.article_id, None, None)
        else:
            assignment = StoryAssignment(
                article.article_id, best[1].story_id, best[1].article_id, round(best[0], 4)
            )
        index.add(
            IndexedArticle(
                article.article_id, assignment.story_id, article.published_at, article.fingerprint
            ),
            keys,
        )
        assignments.append(assignment)
    return assignments


def best_match(
    article: NewArticle, candidates: Sequence[IndexedArticle], threshold: float, window: timedelta
) -> tuple[float, IndexedArticle] | None:
    """The most similar candidate above the threshold, or None.

    A long article matched only through a teaser's lead may not join that teaser's story when the story
    has a long article among the candidates that the body does not match: it shares the opening, not the
    story (a follow-up).
    """
    mine = article.fingerprint
    in_window = [
        c
        for c in candidates
        if c.article_id != article.article_id and within_window(c.published_at, article.published_at, window)
    ]
    unmatched_long_stories = {
        c.story_id
        for c in in_window
        if not c.fingerprint.is_teaser and body_similarity(mine, c.fingerprint) < threshold
    }
    best: tuple[float, IndexedArticle] | None = None
    for candidate in in_window:
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
