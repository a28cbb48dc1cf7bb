"""A batch commit's stories decided a chunk at a time (transforms/io/run_stories.py), on real Parquet."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.story_texts import FOOTER, OTHER, WIRE, templated_post
from transforms.io.parquet import ParquetSettings, write_parquet
from transforms.io.paths import INDEX_DATASET
from transforms.io.run_stories import (
    PublishedWords,
    _as_words,
    _published,
    _published_strings,
    arrival_ranks,
    decide_run_stories,
    hex_words,
    spill_chunks,
)
from transforms.io.staging import StagedFile
from transforms.io.story_index import (
    BANDS,
    PRINT_SCHEMA,
    PRINTS,
    STAGED_PRINTS,
    StoryFile,
    StorySettings,
    decide_stories,
)
from transforms.stories import (
    BODY_PERMUTATIONS,
    LEAD_PERMUTATIONS,
    MAX_FILED_MEMBERS,
    MAX_FILED_PER_BAND,
    TITLE_PERMUTATIONS,
    Fingerprint,
    band_codes,
    fingerprint,
)

AT = datetime(2026, 11, 2, 8, tzinfo=UTC)
SETTINGS = StorySettings()


def row(
    article_id: str,
    paragraphs: list[str],
    hours: float | None,
    content: str | None = "1",
    title: str = "Rates",
) -> dict[str, Any]:
    return {
        "article_id": article_id,
        "content_hash": content,
        "published_at": None if hours is None else AT + timedelta(hours=hours),
        "source_domain": f"{article_id}.test",
        "ingest_date": "2026-11-02",
        "fingerprint": fingerprint(title, "\n\n".join(paragraphs), "en").to_bytes(),
    }


def staged(folder: Path, dataset: str, name: str, table: pa.Table) -> StagedFile:
    path = str(folder / dataset / name)
    write_parquet(table, path, ParquetSettings())
    return StagedFile(dataset, "", path, path, table.num_rows)


def stage_all(folder: Path, rows: list[dict[str, Any]]) -> tuple[list[StagedFile], pa.Table]:
    """`rows` as one staged print file, all published: the prints and the published versions."""
    prints = [staged(folder, STAGED_PRINTS, "p.parquet", pa.Table.from_pylist(rows, schema=PRINT_SCHEMA))]
    delta = pa.table({"article_id": [r["article_id"] for r in rows], "content_hash": ["1"] * len(rows)})
    return prints, _published([staged(folder, INDEX_DATASET, "delta.parquet", delta)])


def run_prints(folder: Path) -> tuple[list[StagedFile], list[StagedFile], list[dict[str, Any]]]:
    """Three staged print files of wire copies (some undated, one id staged twice, one version not
    published), the index delta, and the rows the commit publishes in staged order."""
    files = [
        [row("c1", WIRE, 3), row("o1", OTHER, 1), row("dup", WIRE, 2), row("old", WIRE, 2, content="0")],
        [row("c2", WIRE, 5), row("u1", WIRE, None), row("f1", [OTHER[0], FOOTER], 4, content=None)],
        [row("dup", WIRE[:2], 2), row("c3", WIRE, 3), row("u2", OTHER, None), row("o2", OTHER, 1.5)],
    ]
    prints = [
        staged(folder, STAGED_PRINTS, f"p{n}.parquet", pa.Table.from_pylist(rows, schema=PRINT_SCHEMA))
        for n, rows in enumerate(files)
    ]
    published = [r for rows in files for r in rows if r["article_id"] != "old"]
    ids = sorted({r["article_id"] for r in published})
    delta = pa.table({"article_id": ids, "content_hash": [None if i == "f1" else "1" for i in ids]})
    return prints, [staged(folder, INDEX_DATASET, "delta.parquet", delta)], published


def as_rows(files: Iterable[StoryFile]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {(f.dataset, f.partition): f.table.to_pylist() for f in files}


def test_stories_decided_in_chunks_are_those_of_the_whole_commit(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    prints, delta, published = run_prints(tmp_path / "staging")
    whole = as_rows(decide_stories(output, published, "r1", SETTINGS, AT))
    assert {r["article_id"] for r in whole["stories", "ingest_date=2026-11-02"]} == {
        "c1", "c2", "c3", "dup", "o1", "o2", "u1", "u2", "f1"
    }  # fmt: skip
    for chunk, undated_chunk in ((1, 1), (2, 2), (3, 1), (100, 1), (100, 100), (2, 100)):
        chunked = decide_run_stories(
            output, prints, _published(delta), "r1", SETTINGS, AT, chunk, undated_chunk
        )
        assert as_rows(chunked) == whole, (chunk, undated_chunk)


def test_undated_articles_decided_in_smaller_chunks_are_those_of_the_whole_commit(tmp_path: Path) -> None:
    """An undated article is in the window of every other, so a large undated story's members see
    each other and every dated one: smaller undated chunks must file and join them as one call does."""
    output = str(tmp_path / "out")
    rows = [
        row(f"p{n:03d}", templated_post(n)[1], None if n % 3 else n / 10, title=templated_post(n)[0])
        for n in range(2 * MAX_FILED_MEMBERS + 30)
    ]
    prints, published = stage_all(tmp_path / "staging", rows)
    whole = as_rows(decide_stories(output, rows, "r1", SETTINGS, AT))
    undated = [r for r in whole["stories", "ingest_date=2026-11-02"] if r["published_at"] is None]
    assert len(undated) > MAX_FILED_MEMBERS and {r["story_id"] for r in undated} == {"p000"}
    for chunk, undated_chunk in ((1000, 1), (1000, 7), (5, MAX_FILED_MEMBERS), (9, 1000)):
        chunked = decide_run_stories(output, prints, published, "r1", SETTINGS, AT, chunk, undated_chunk)
        assert as_rows(chunked) == whole, (chunk, undated_chunk)


def test_a_large_story_files_the_same_members_in_chunks_as_in_one_commit(tmp_path: Path) -> None:
    """Past `MAX_FILED_MEMBERS` a story's members are printed, not filed under bands; which ones
    depends only on each one's candidates, so chunks that split the story decide as the whole does."""
    output = str(tmp_path / "out")
    rows = [
        row(f"p{n:03d}", templated_post(n)[1], n / 10, title=templated_post(n)[0])
        for n in range(2 * MAX_FILED_MEMBERS + 20)
    ]
    prints, published = stage_all(tmp_path / "staging", rows)
    whole = as_rows(decide_stories(output, rows, "r1", SETTINGS, AT))
    assert {r["story_id"] for r in whole["stories", "ingest_date=2026-11-02"]} == {"p000"}
    owners = {r["article_key"] for key, rows_ in whole.items() if key[0] == BANDS for r in rows_}
    printed = [r for key, rows_ in whole.items() if key[0] == PRINTS for r in rows_]
    assert MAX_FILED_MEMBERS <= len(owners) < len(printed) == len(rows)
    for chunk in (7, MAX_FILED_MEMBERS, 1000):
        chunked = decide_run_stories(output, prints, published, "r1", SETTINGS, AT, chunk)
        assert as_rows(chunked) == whole, chunk


def test_a_full_band_key_files_the_same_articles_in_chunks_as_in_one_commit(tmp_path: Path) -> None:
    """Articles of many stories sharing band keys: a key files at most `MAX_FILED_PER_BAND`, the same
    ones whether the commit is decided whole or in chunks."""
    rng = np.random.default_rng(20261204)
    lead = rng.integers(0, 2**32, size=LEAD_PERMUTATIONS, dtype=np.uint32)
    rows = []
    for n in range(MAX_FILED_PER_BAND + 40):
        body = rng.integers(0, 2**32, size=BODY_PERMUTATIONS, dtype=np.uint32)
        title = rng.integers(0, 2**32, size=TITLE_PERMUTATIONS, dtype=np.uint32)
        rows.append(
            row(f"k{n:03d}", [], n / 10) | {"fingerprint": Fingerprint(400, 60, body, lead, title).to_bytes()}
        )
    output = str(tmp_path / "out")
    prints, published = stage_all(tmp_path, rows)
    whole = as_rows(decide_stories(output, rows, "r1", SETTINGS, AT))
    lead_codes = set(band_codes(Fingerprint.from_bytes(rows[0]["fingerprint"]))[-16:])
    band_rows = [r for key, part in whole.items() if key[0] == BANDS for r in part]
    assert len({r["article_key"] for r in band_rows if r["band"] in lead_codes}) == MAX_FILED_PER_BAND
    assert len({r["article_key"] for r in band_rows}) == len(rows)  # each under its own body keys
    for chunk in (5, MAX_FILED_PER_BAND, 1000):
        assert as_rows(decide_run_stories(output, prints, published, "r1", SETTINGS, AT, chunk)) == whole, (
            chunk
        )


def hex_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def hex_hash(name: str) -> str:
    return hashlib.sha256(b"hash" + name.encode()).hexdigest()


def test_newsbeams_ids_rank_as_64_bit_words_in_the_order_their_strings_give(tmp_path: Path) -> None:
    """Ids and hashes of newsbeam's form are ranked as integers (1,067 MB and 71 s less at a
    million prints): the same winners and order as the strings give, with ties in dates, undated
    prints, an id staged twice, a null hash, a version not published and an id of another form."""
    chooser = random.Random(20261204)
    names = [f"a{n}" for n in range(60)]
    files: list[list[dict[str, Any]]] = [[], [], []]
    published: dict[str, str | None] = {}
    for name in names:
        hours = chooser.choice([None, 1.0, 2.0, 2.0, 3.5])  # many ties: the id orders them
        content = None if name == "a7" else hex_hash(name)
        published[hex_id(name)] = content
        copies = 2 if name in {"a3", "a11", "a40"} else 1  # staged twice, different prints
        for copy in range(copies):
            paragraphs = [f"{name} story", f"take {copy}", *WIRE[: 1 + copy]]
            files[chooser.randrange(3)].append(row(hex_id(name), paragraphs, hours, content))
    files[0].append(row(hex_id("a5"), ["an older version"], 1.0, hex_hash("old")))  # not published
    files[1].append(row("stray", ["of another form"], 1.0))  # in no delta
    # Two published versions of one id: the null hash before any, then the hashes' order (the
    # versions are read back from the staged prints, not held as words).
    second_versions = [(hex_id("a7"), hex_hash("a7 v2")), (hex_id("a12"), hex_hash("a12 v0"))]
    for (article_id, content), take in zip(second_versions, ("again", "v0"), strict=True):
        files[2].append(row(article_id, ["a story", take], 2.0, content))
    prints = [
        staged(tmp_path, STAGED_PRINTS, f"p{n}.parquet", pa.Table.from_pylist(rows, schema=PRINT_SCHEMA))
        for n, rows in enumerate(files)
    ]
    delta = staged(
        tmp_path,
        INDEX_DATASET,
        "delta.parquet",
        pa.table(
            {
                "article_id": [*published, *(i for i, _ in second_versions)],
                "content_hash": [*published.values(), *(h for _, h in second_versions)],
            }
        ),
    )
    as_words = _published([delta])
    assert "i0" in as_words.schema.names  # newsbeam's ids: the word path
    by_words = arrival_ranks(prints, as_words)
    by_strings = arrival_ranks(prints, _published_strings([delta.staged_path]))
    assert by_words.to_pylist() == by_strings.to_pylist()
    assert by_words.num_rows == len(names)
    winners = {(r["file"], r["row"]) for r in by_words.to_pylist()}
    placed = {(n, i): r for n, rows in enumerate(files) for i, r in enumerate(rows)}
    hashes = {placed[w]["article_id"]: placed[w]["content_hash"] for w in winners}
    assert hashes[hex_id("a7")] is None
    assert hashes[hex_id("a12")] == min(hex_hash("a12"), hex_hash("a12 v0"))


def test_hex_digits_back_to_back_are_read_as_the_gathered_ones_are() -> None:
    """The words of a column whose strings are all of the form are read from a view of its digits;
    a slice (its offsets not at zero) and a column with one bad string give the same words."""
    hashes = [hex_hash(f"h{n}") for n in range(50)]
    whole = pa.array(hashes)
    (w0, w1, w2, w3), valid = hex_words(whole.slice(7, 30), 64)
    (g0, g1, g2, g3), gathered_valid = hex_words(pa.array([*hashes[7:37], "not hex"]), 64)
    assert valid.all() and gathered_valid.tolist() == [True] * 30 + [False]
    for word, gathered in zip((w0, w1, w2, w3), (g0, g1, g2, g3), strict=True):
        assert word.tolist() == gathered[:30].tolist()
    assert [
        f"{int(a):016x}{int(b):016x}{int(c):016x}{int(d):016x}"
        for a, b, c, d in zip(w0, w1, w2, w3, strict=True)
    ] == (hashes[7:37])


def test_published_pairs_are_found_exactly_when_every_digest_collides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest only says where to look: with every pair's digest equal, a print is still of a
    published version only when its id and hash both are, and a pair published twice counts once."""
    pairs = [(hex_id(f"a{n}"), hex_hash(f"a{n}")) for n in range(40)]
    published = pa.table(
        {
            "article_id": [i for i, _ in pairs] + [pairs[0][0]],
            "content_hash": [h for _, h in pairs[:-1]] + [None, pairs[0][1]],  # a39 of no hash
        }
    )
    probes = pa.table(
        {
            "article_id": [pairs[3][0], pairs[3][0], hex_id("other"), pairs[39][0], pairs[39][0]],
            "content_hash": [pairs[3][1], pairs[4][1], pairs[3][1], None, pairs[39][1]],
        }
    )
    delta = staged(tmp_path, INDEX_DATASET, "delta.parquet", published)
    monkeypatch.setattr(
        "transforms.io.run_stories.word_digest", lambda words: np.zeros(len(words[0]), np.uint64)
    )
    lookup = PublishedWords(_published([delta]))
    columns, valid = _as_words(probes["article_id"].combine_chunks(), probes["content_hash"].combine_chunks())
    found = lookup.contains([columns[name] for name in ("i0", "i1", "hashed", "h0", "h1", "h2", "h3")])
    assert valid.all() and found.tolist() == [True, False, False, True, False]


def test_only_lowercase_hex_of_the_full_length_is_taken_as_words() -> None:
    column = pa.array(["0" * 31 + "f", "F" * 32, "0" * 31, None, "g" * 32, "ff" * 16])
    (high, low), valid = hex_words(column, 32)
    assert valid.tolist() == [True, False, False, False, False, True]
    assert (int(high[0]), int(low[0])) == (0, 15) and (int(high[5]), int(low[5])) == (2**64 - 1,) * 2


def test_a_commit_holds_at_most_one_chunk_of_prints_in_arrival_order(tmp_path: Path) -> None:
    prints, delta, published = run_prints(tmp_path / "staging")
    ranks = arrival_ranks(prints, _published(delta))
    chunks = list(spill_chunks(prints, ranks, tmp_path, 2))
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 1, 2]  # the undated begin a chunk
    order = [r["article_id"] for chunk in chunks for r in chunk]
    assert order == ["o1", "o2", "dup", "c1", "c3", "f1", "c2", "u1", "u2"]
    smaller = list(spill_chunks(prints, ranks, tmp_path, 2, undated_chunk=1))  # u1, u2 undated
    assert [[r["article_id"] for r in chunk] for chunk in smaller[-3:]] == [["c2"], ["u1"], ["u2"]]
    assert [len(chunk) for chunk in smaller] == [2, 2, 2, 1, 1, 1]
    dup = next(r for chunk in chunks for r in chunk if r["article_id"] == "dup")
    assert dup["fingerprint"] == min(r["fingerprint"] for r in published if r["article_id"] == "dup")
    assert not list(tmp_path.glob("chunk-*.arrows"))  # each chunk's spill is removed once read


def test_a_commit_merges_its_story_partitions_one_at_a_time(tmp_path: Path) -> None:
    """The merged partitions are the run's whole story-index delta (~2 KB per article): a commit of
    100,000 articles that held them all before writing the first kept ~200 MB more than it needed."""
    words = [f"w{n}" for n in range(5_000)]
    chooser = random.Random(20261203)
    rows = [
        row(f"a{n}", [" ".join(chooser.choices(words, k=60)) for _ in range(3)], n / 10, title=f"t{n}")
        for n in range(600)
    ]
    prints = [
        staged(
            tmp_path / "staging",
            STAGED_PRINTS,
            f"p{n}.parquet",
            pa.Table.from_pylist(part, schema=PRINT_SCHEMA),
        )
        for n, part in enumerate((rows[:300], rows[300:]))
    ]
    delta = pa.table({"article_id": [r["article_id"] for r in rows], "content_hash": ["1"] * len(rows)})
    before = pa.total_allocated_bytes()
    partitions = iter(
        decide_run_stories(
            str(tmp_path / "out"),
            prints,
            _published([staged(tmp_path / "staging", INDEX_DATASET, "delta.parquet", delta)]),
            "r1",
            SETTINGS,
            AT,
        )
    )
    first = next(partitions)
    held = pa.total_allocated_bytes() - before
    sizes = [first.table.nbytes] + [story_file.table.nbytes for story_file in partitions]
    assert len(sizes) == 2 * 16 + 1  # bands and prints in 16 buckets each, one stories partition
    assert held < sum(sizes) / 8, (held, sum(sizes))
