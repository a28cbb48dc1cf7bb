"""The fingerprint as main computed it before the numpy rewrite (commit 93e9f15): the baseline.

datasketch's MinHash over the same shingles with a blake2b hash per shingle (string shingles built in
Python), one MinHash object per signature. `benchmarks/bench_stories.py` times it against
`transforms.stories.fingerprint` on the same items in the same run, and assigns stories with both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from datasketch import MinHash

from transforms.stories import (
    BODY_PERMUTATIONS,
    LEAD_PERMUTATIONS,
    TITLE_PERMUTATIONS,
    Fingerprint,
    is_spaceless,
    lead_of,
    normalized_tokens,
    shingles,
    word_count,
)

SEED = 1


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
