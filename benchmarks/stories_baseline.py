"""The fingerprint as main computed it before the numpy rewrite (commit 93e9f15): the baseline.

datasketch's MinHash over the same shingles with a blake2b hash per shingle (string shingles built in
Python), one MinHash object per signature. `benchmarks/bench_stories.py` times it against
`transforms.stories.fingerprint` on the same items in the same run, and assigns stories with both.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from datasketch import MinHash

from transforms.stories import (
    BODY_PERMUTATIONS,
    CHAR_SHINGLE,
    LEAD_PERMUTATIONS,
    LEAD_WORDS,
    TITLE_PERMUTATIONS,
    TOKEN,
    WORD_SHINGLE,
    Fingerprint,
    is_spaceless,
)

QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "‚": "'"})
SEED = 1


def normalized_tokens(text: str) -> list[str]:
    return TOKEN.findall(unicodedata.normalize("NFKC", text).translate(QUOTES).casefold())


def shingles(text: str, language: str | None = None) -> list[str]:
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


def title_words(title: str, language: str | None = None) -> list[str]:
    if is_spaceless(title, language):
        letters = "".join(normalized_tokens(title))
        return sorted({letters[i : i + 2] for i in range(max(1, len(letters) - 1))})
    return sorted(set(normalized_tokens(title)))


def fingerprint(title: str | None, text: str | None, language: str | None = None) -> Fingerprint:
    body = " ".join(part for part in (title, text) if part)
    lead = lead_of(text or title or "", language)
    return Fingerprint(
        word_count(body, language),
        word_count(lead, language),
        signature(shingles(body, language), BODY_PERMUTATIONS),
        signature(shingles(lead, language), LEAD_PERMUTATIONS),
        signature(title_words(title or "", language), TITLE_PERMUTATIONS),
    )
