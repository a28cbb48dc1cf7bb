"""A batch commit's stories, decided a chunk of articles at a time: memory bounded by a chunk, not the run.

`decide_stories` (transforms/io/story_index.py) holds every article it decides in memory, as Python
objects (rows, fingerprints, 58 band keys each, the in-memory index): about 10 KB per article, so a
commit of 100,000 articles took a gigabyte more than one of 10,000. Here the run's published prints
are taken in arrival order (`stories.arrival_order`: published_at, then article_id) in chunks of
`CHUNK_ARTICLES`. Each chunk is decided against the committed index and against the deltas of the
chunks before it, kept in a local temporary folder of the index's own layout (where `committed_index`
looks them up by band key as it does the committed ones). Since a chunk's candidates are all the
committed and earlier articles that share a band key with it, and the story rule takes articles in
arrival order, the stories are those one call over the whole run gives; the chunks' deltas are then
merged into one file per partition, sorted as before, so the published files are the same too.

What stays per article of the run is a few integer columns (the id as two 64-bit words, the date
and where the print lies: 32 bytes), to order the prints, once each print is tested against the
published versions by a sorted digest rather than a hash join (the published pairs, 55 MB at a
million, are let go before the order is taken); the prints themselves are read a staged file at a
time and spilled per chunk. Undated articles, in the window of every other, are decided in smaller
chunks (`chunk_numbers`).
"""

from __future__ import annotations

import posixpath
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.io.parquet import (
    ParquetSettings,
    give_back_free_heap,
    open_parquet,
    read_parquet,
    read_table_file,
    write_table_file,
)
from transforms.io.paths import INDEX_DATASET, STAGING_DIR, TRASH_DIR, join_path
from transforms.io.staging import StagedFile
from transforms.io.story_index import (
    MAX_DELTAS,
    PRINT_SCHEMA,
    StoryFile,
    StorySettings,
    bucket_files,
    decide_stories,
    index_file_name,
    is_story_index,
    merge_bucket,
    story_file_path,
)
from transforms.schema import Record

CHUNK_ARTICLES = 5_000  # articles decided at once: ~10 KB each while decided
UNDATED_CHUNK_ARTICLES = 1_000  # undated ones: each has more candidates (`chunk_numbers`)
BATCH_ROWS = 65_536  # key rows read and converted at once
_NO_HASH = "\x00"  # stands for a null content hash in joins (a real hash is printable)
_KEYS = ["article_id", "content_hash", "published_at"]
_ID_DIGITS, _HASH_DIGITS = 32, 64  # an article id and a content hash in hex (transforms/enrich.py)
_HEX_VALUES = np.full(256, 255, np.uint8)
_HEX_VALUES[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


class _Keys(NamedTuple):
    """How a commit's prints are keyed while ranked: the columns the published versions are joined
    on, those that order article ids, and those that order an id's versions (as `decide_stories`)."""

    join: list[str]
    article: list[str]
    version: list[str]


# The ids and hashes newsbeam writes, as 64-bit words (1M articles: 56 MB instead of 130 MB of
# strings, and a join and sort of integers: 1,067 MB and 71 s less at a million, RESULTS.md).
_WORDS = _Keys(
    ["i0", "i1", "hashed", "h0", "h1", "h2", "h3"], ["i0", "i1"], ["hashed", "h0", "h1", "h2", "h3"]
)
_STRINGS = _Keys(["article_id", "hash"], ["article_id"], ["hash"])  # any other ids (tests, old stores)


def _batches(path: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    with open_parquet(path) as source:
        yield from pq.ParquetFile(source).iter_batches(batch_size=BATCH_ROWS, columns=columns)


def hex_words(column: pa.Array, digits: int) -> tuple[list[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
    """Strings of `digits` lowercase hex digits as `digits / 16` uint64 words, most significant
    first: equal and ordered as the strings are. Returns the words and which rows are of that form
    (the others' words are meaningless)."""
    array = column.cast(pa.string()).fill_null("")
    count = len(array)
    offsets = np.frombuffer(array.buffers()[1], np.int32, count + 1, 4 * array.offset)
    fits = np.diff(offsets) == digits
    data = np.frombuffer(array.buffers()[2], np.uint8)
    if count and fits.all():  # back to back, as newsbeam writes them: the digits as a view, not gathered
        nibbles = _HEX_VALUES[data[offsets[0] : offsets[0] + count * digits].reshape(count, digits)]
    else:  # gathered through an index of 8 bytes per digit (33 MB for a batch of 65,536 hashes)
        starts = offsets[:-1][fits]
        nibbles = np.zeros((count, digits), np.uint8)
        if starts.size:
            nibbles[fits] = _HEX_VALUES[data[starts[:, None] + np.arange(digits)]]
    valid = fits & (nibbles != 255).all(axis=1)
    words = []
    for word in range(digits // 16):
        value = np.zeros(count, np.uint64)
        for nibble in nibbles[:, 16 * word : 16 * (word + 1)].T:
            value <<= np.uint64(4)
            value |= nibble
        words.append(value)
    return words, valid


def _as_words(ids: pa.Array, hashes: pa.Array) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    """The `_WORDS` join columns of (article id, content hash) pairs, and which pairs are of the form."""
    (i0, i1), id_valid = hex_words(ids, _ID_DIGITS)
    hashed = pc.is_valid(hashes).to_numpy(zero_copy_only=False)
    (h0, h1, h2, h3), hash_valid = hex_words(pc.fill_null(hashes, "0" * _HASH_DIGITS), _HASH_DIGITS)
    columns = {"i0": i0, "i1": i1, "hashed": hashed, "h0": h0, "h1": h1, "h2": h2, "h3": h3}
    return columns, id_valid & hash_valid


def _published(files: Sequence[StagedFile]) -> pa.Table:
    """The article versions the commit publishes (its index delta), keyed as `_WORDS` when every id
    and hash is of newsbeam's form, else as `_STRINGS`; read a batch at a time into columns sized
    from the files' footers (gathering the batches, then joining them, held the words twice:
    137 MB over the 55 they take at a million)."""
    paths = [staged.staged_path for staged in files if staged.dataset == INDEX_DATASET]
    total = sum(_row_count(path) for path in paths)
    if not total:
        return _published_strings([])
    columns: dict[str, np.ndarray[Any, Any]] = {
        name: np.empty(total, bool if name == "hashed" else np.uint64) for name in _WORDS.join
    }
    at = 0
    for path in paths:
        for batch in _batches(path, ["article_id", "content_hash"]):
            words, valid = _as_words(batch["article_id"], batch["content_hash"])
            if not valid.all():
                del columns
                return _published_strings(paths)
            for name, values in words.items():
                columns[name][at : at + batch.num_rows] = values
            at += batch.num_rows
    return pa.table({name: values[:at] for name, values in columns.items()})  # one chunk, not copied


def _row_count(path: str) -> int:
    with open_parquet(path) as source:
        return int(pq.ParquetFile(source).metadata.num_rows)


def _published_strings(paths: Sequence[str]) -> pa.Table:
    tables = [read_parquet(path, ["article_id", "content_hash"]) for path in paths]
    if not tables:
        return pa.table({"article_id": pa.array([], pa.string()), "hash": pa.array([], pa.string())})
    table = pa.concat_tables(tables)
    return pa.table(
        {"article_id": table["article_id"], "hash": pc.fill_null(table["content_hash"], _NO_HASH)}
    )


def _keying(published: pa.Table) -> _Keys:
    return _WORDS if "i0" in published.schema.names else _STRINGS


# Odd 64-bit multipliers that spread the words of an (id, hash) pair over one 64-bit digest.
_MIXERS = [
    np.uint64(m)
    for m in (
        0x9E3779B97F4A7C15,
        0xBF58476D1CE4E5B9,
        0x94D049BB133111EB,
        0xD6E8FEB86659FD93,
        0xA0761D6478BD642F,
        0xE7037ED1A0B428DB,
        0x8EBC6AF09C88C6E3,
    )
]


def word_digest(words: Sequence[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """One 64-bit digest per row of `words` (the `_WORDS` join columns): equal pairs, equal digests."""
    digest = np.zeros(len(words[0]), np.uint64)
    for mixer, word in zip(_MIXERS, words, strict=False):
        digest = (digest ^ word.astype(np.uint64)) * mixer  # wraps modulo 2**64, as meant
        digest ^= digest >> np.uint64(29)
    return digest


class PublishedWords:
    """The published (id, hash) pairs as sorted 64-bit digests, to test which prints are of a
    published version without a hash join: Arrow's join of a million prints on seven columns took
    350 MB (RESULTS.md); this takes a digest and a position, 16 bytes a pair, over `published`'s
    own columns.

    Exact: a digest only finds where to look, and every word of the pair is then compared, across
    each run of equal digests (pairs that collide)."""

    def __init__(self, published: pa.Table) -> None:
        self._words = [_numpy_column(published, name) for name in _WORDS.join]
        digest = word_digest(self._words)
        order = np.lexsort([*self._words[::-1], digest])
        if order.size > 1:  # a pair published twice is looked at once
            repeat = np.ones(order.size - 1, bool)
            for word in self._words:
                in_order = word[order]
                repeat &= in_order[1:] == in_order[:-1]
            order = order[np.r_[True, ~repeat]]
        self._order, self._digest = order, digest[order]
        starts = np.flatnonzero(np.r_[True, self._digest[1:] != self._digest[:-1]])
        self._longest_run = int(np.diff(np.r_[starts, self._digest.size]).max()) if self._digest.size else 0

    def contains(self, words: Sequence[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        """Which rows of `words` (the `_WORDS` join columns) are a published pair."""
        count = len(words[0])
        found = np.zeros(count, bool)
        if not self._digest.size or not count:
            return found
        words = [word.astype(np.uint64, copy=False) for word in words]
        digest = word_digest(words)
        first = np.searchsorted(self._digest, digest)
        for step in range(self._longest_run):
            at = first + step
            inside = at < self._digest.size
            at = np.minimum(at, self._digest.size - 1)
            same = inside & (self._digest[at] == digest)
            rows = self._order[at]
            for mine, theirs in zip(words, self._words, strict=True):
                same &= theirs[rows] == mine
            found |= same
        return found


def _numpy_column(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    """A column as uint64 numpy values: a view when it is one chunk of that type (`_published`'s)."""
    column = table.column(name)
    values = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    numbers: np.ndarray[Any, Any] = values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
    return numbers


def _published_keys(prints: Sequence[StagedFile], published: pa.Table) -> pa.Table:
    """One row per published staged print, without its fingerprint: its id, date and where it lies.

    Keyed as `published` is; a print whose id or hash is not of the `_WORDS` form is of no version
    so keyed (none is published), so it is left out as the join would leave it. Words are tested a
    batch at a time (`PublishedWords`), so only published prints' keys are held, and of those only
    the id's words: the hash's, 40 of their 75 bytes, are read again for the ids staged twice
    (`_winners`)."""
    keying, parts = _keying(published), []
    lookup = PublishedWords(published) if keying is _WORDS else None
    for number, staged in enumerate(prints):
        first = 0
        for batch in _batches(staged.staged_path, _KEYS):
            place = {
                "published_at": batch["published_at"],
                "file": pa.array(np.full(batch.num_rows, number, np.int32)),
                "row": pa.array(np.arange(first, first + batch.num_rows, dtype=np.int32)),
            }
            first += batch.num_rows
            if lookup is not None:
                columns, valid = _as_words(batch["article_id"], batch["content_hash"])
                kept = valid & lookup.contains([columns[name] for name in _WORDS.join])
                ids = {name: columns[name] for name in _WORDS.article}
                parts.append(pa.table(ids | place).filter(pa.array(kept)))
            else:
                hashes = pc.fill_null(batch["content_hash"], _NO_HASH)
                parts.append(pa.table({"article_id": batch["article_id"], "hash": hashes} | place))
    if not parts:
        return pa.table({})
    keys = pa.concat_tables(parts)
    if lookup is not None:
        return keys
    return keys.join(published, keying.join, join_type="left semi")


def _repeated_ids(keys: pa.Table, keying: _Keys) -> np.ndarray[Any, Any]:
    """Which rows of `keys` have an article id staged more than once: for words, neighbours in id
    order (a sort of two integer columns; Arrow's hash aggregate took 100 MB at a million)."""
    if keying is not _WORDS:
        counts = keys.group_by(keying.article).aggregate([("row", "count")])
        repeated = counts.filter(pc.greater(counts["row_count"], 1))["article_id"]
        hits = pc.is_in(keys["article_id"], value_set=repeated.combine_chunks())
        return np.asarray(hits.to_numpy(), bool)
    high, low = keys["i0"].to_numpy(), keys["i1"].to_numpy()
    order = np.lexsort((low, high))
    high, low = high[order], low[order]
    same = (high[1:] == high[:-1]) & (low[1:] == low[:-1])
    in_order = np.zeros(keys.num_rows, bool)
    in_order[1:] |= same
    in_order[:-1] |= same
    repeated_rows = np.empty(keys.num_rows, bool)
    repeated_rows[order] = in_order
    return repeated_rows


def _version_order(hash_: str | None) -> tuple[bool, str]:
    """A content hash as `_WORDS`' version columns order it: no hash first, then the hex digits
    (of one length, lowercase: ordered as their words)."""
    return hash_ is not None, hash_ or ""


def _winners(prints: Sequence[StagedFile], keys: pa.Table, keying: _Keys) -> np.ndarray[Any, Any]:
    """Which rows of `keys` are the print per article id `decide_stories` keeps: the least (content
    hash, fingerprint), then the first staged. Only ids staged more than once need their
    fingerprints (and, keyed as words, their hashes) read; a mask, so that the keys are never copied."""
    repeated = _repeated_ids(keys, keying)
    kept = ~repeated
    if not repeated.any():
        return kept
    positions = np.flatnonzero(repeated)
    candidates = keys.take(pa.array(positions)).to_pylist()
    wanted: dict[int, list[int]] = defaultdict(list)
    for candidate in candidates:
        wanted[candidate["file"]].append(candidate["row"])
    # Keyed as words, the version's words were not kept: the staged hash is read back with the fingerprint.
    columns = ["fingerprint", "content_hash"] if keying is _WORDS else ["fingerprint"]
    read_back: dict[tuple[int, int], dict[str, Any]] = {}
    for number, rows in wanted.items():
        taken = read_parquet(prints[number].staged_path, columns).take(pa.array(rows, pa.int64())).to_pylist()
        read_back.update(((number, row), data) for row, data in zip(rows, taken, strict=True))

    def order(item: tuple[int, dict[str, Any]]) -> tuple[Any, ...]:
        candidate = item[1]
        place = candidate["file"], candidate["row"]
        version = (
            _version_order(read_back[place]["content_hash"])
            if keying is _WORDS
            else tuple(candidate[name] for name in keying.version)
        )
        article = tuple(candidate[name] for name in keying.article)
        return (*article, *version, read_back[place]["fingerprint"], *place)

    best: dict[tuple[Any, ...], int] = {}
    for position, candidate in sorted(zip(positions.tolist(), candidates, strict=True), key=order):
        best.setdefault(tuple(candidate[name] for name in keying.article), position)
    kept[list(best.values())] = True
    return kept


def arrival_ranks(prints: Sequence[StagedFile], published: pa.Table) -> pa.Table:
    """(file, row, rank, undated) of each print `decide_stories` would decide, `rank` its place in
    arrival order (the undated last)."""
    keying = _keying(published)
    return ranked_keys(prints, _published_keys(prints, published), keying)


def ranked_keys(prints: Sequence[StagedFile], keys: pa.Table, keying: _Keys) -> pa.Table:
    """`arrival_ranks` of the published prints' keys (`_published_keys`)."""
    empty = pa.table(
        {
            "file": pa.array([], pa.int64()),
            "row": pa.array([], pa.int64()),
            "rank": pa.array([], pa.int64()),
            "undated": pa.array([], pa.bool_()),
        }
    )
    if not keys.num_rows:
        return empty
    kept = _winners(prints, keys, keying)
    # Only the place columns are taken in order: the keys table is neither sorted nor copied.
    order = pc.sort_indices(
        keys,
        sort_keys=[("published_at", "ascending"), *((name, "ascending") for name in keying.article)],
        null_placement="at_end",
    ).to_numpy()
    order = pa.array(order[kept[order]])
    return pa.table(
        {
            "file": pc.take(keys["file"], order).cast(pa.int64()),
            "row": pc.take(keys["row"], order).cast(pa.int64()),
            "rank": pa.array(np.arange(len(order), dtype=np.int64)),
            "undated": pc.is_null(pc.take(keys["published_at"], order)),
        }
    )


def chunk_numbers(ranks: pa.Table, chunk: int, undated_chunk: int) -> np.ndarray[Any, Any]:
    """Each rank's chunk: `chunk` dated prints at a time, then `undated_chunk` undated ones.

    An undated article is within the window of every other, so its candidates are all the articles
    that share a band with it, of any date, up to the filing bounds: a chunk of undated articles
    reads several times the prints a dated chunk does (at a million, 1.4 GB for the last chunks
    against 0.3 GB; RESULTS.md), so it is smaller. The stories are the same whatever the chunks."""
    rank = ranks["rank"].to_numpy()
    dated = ranks.num_rows - int(pc.sum(ranks["undated"].cast(pa.int64())).as_py() or 0)
    dated_chunks = -(-dated // chunk)
    numbers: np.ndarray[Any, Any] = np.where(
        rank < dated, rank // chunk, dated_chunks + (rank - dated) // undated_chunk
    )
    return numbers


def spill_chunks(
    prints: Sequence[StagedFile],
    ranks: pa.Table,
    folder: Path,
    chunk: int,
    undated_chunk: int | None = None,
) -> Iterator[list[Record]]:
    """The prints of `ranks` as `PRINT_SCHEMA` rows, a chunk at a time in arrival order (see
    `chunk_numbers`): spilled to one Arrow stream per chunk in `folder`, a staged file at a time,
    then read back chunk by chunk."""
    schema = PRINT_SCHEMA.append(pa.field("rank", pa.int64()))
    numbers = chunk_numbers(ranks, chunk, undated_chunk or chunk)
    ranks = ranks.select(["file", "row", "rank"]).append_column("chunk", pa.array(numbers))
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    path_of = [folder / f"chunk-{n:05d}.arrows" for n in range(int(numbers.max()) + 1 if numbers.size else 0)]
    try:
        for number, staged in enumerate(prints):
            mine = ranks.filter(pc.equal(ranks["file"], number))
            if not mine.num_rows:
                continue
            table = read_parquet(staged.staged_path).select(PRINT_SCHEMA.names).cast(PRINT_SCHEMA)
            table = table.take(mine["row"]).append_column("rank", mine["rank"])
            chunk_of = mine["chunk"]
            for part in pc.unique(chunk_of).to_pylist():
                writer = writers.get(part)
                if writer is None:
                    writer = writers[part] = pa.ipc.new_stream(str(path_of[part]), schema)
                writer.write_table(table.filter(pc.equal(chunk_of, part)))
    finally:
        for writer in writers.values():
            writer.close()
    for path in path_of:
        with pa.ipc.open_stream(str(path)) as reader:
            table = reader.read_all()
        path.unlink()
        yield table.sort_by("rank").drop_columns(["rank"]).to_pylist()


def decide_run_stories(
    output: str,
    prints: Sequence[StagedFile],
    published: pa.Table,
    run_id: str,
    settings: StorySettings,
    now: datetime,
    chunk: int = CHUNK_ARTICLES,
    undated_chunk: int = UNDATED_CHUNK_ARTICLES,
) -> Iterator[StoryFile]:
    """What `decide_stories` gives for the published prints of a run, decided `chunk` at a time.

    The merged partitions come one at a time, each read from the chunks' files as it is asked for:
    together they are the run's whole story index delta (~2 KB per article in Arrow), which a
    caller holding them all would hold at once."""
    keying = _keying(published)
    keys = _published_keys(prints, published)
    # The published pairs (55 MB at a million) are let go before the prints are ordered: this
    # generator's is the last reference (`stage_run_stories` drops its own before the first step).
    del published
    give_back_free_heap()
    ranks = ranked_keys(prints, keys, keying)
    del keys
    give_back_free_heap()  # the ranking's work is freed: the chunks reuse its pages
    if not ranks.num_rows:
        return
    with tempfile.TemporaryDirectory(prefix="newsbeam-stories-") as folder:
        earlier = str(Path(folder) / "index")  # the chunks' deltas, looked up by the next chunks
        parts: dict[tuple[str, str], list[str]] = defaultdict(list)
        chunks = spill_chunks(prints, ranks, Path(folder), chunk, undated_chunk)
        levels: dict[tuple[str, str], list[int]] = defaultdict(list)  # the level of each of `parts`
        for number, rows in enumerate(chunks):
            for story_file in decide_stories(output, rows, run_id, settings, now, earlier=(earlier,)):
                root = earlier if is_story_index(story_file.dataset) else str(Path(folder) / "stories")
                path = story_file_path(root, story_file, f"chunk-{number:05d}.parquet")
                write_table_file(story_file.table, path, ParquetSettings())
                place = (story_file.dataset, story_file.partition)
                parts[place].append(path)
                if is_story_index(story_file.dataset):
                    levels[place].append(0)
                    _compact(earlier, place, parts[place], levels[place], number)
            give_back_free_heap()  # a chunk's objects are freed: the next chunk reuses the pages
        del ranks
        for (dataset, partition), paths in sorted(parts.items()):
            yield StoryFile(dataset, partition, _merged(dataset, paths))


COMPACT_AT = 8  # a bucket's deltas of one level merged into one of the next (LSM tiers)
# A lookup decodes every column of a row group with a match (`story_index._matching`): a merged
# delta in small row groups is decoded a little at a time, not whole (16 MB a bucket at level 2).
_COMPACTED = ParquetSettings(row_group_size=4_096)


def _compact(root: str, partition: tuple[str, str], paths: list[str], levels: list[int], number: int) -> None:
    """Merge the last `COMPACT_AT` deltas of a bucket into one while they are of one level.

    Each chunk looks its candidates up in every earlier chunk's delta of each bucket: at a million
    articles, 200 chunks read 3,200 files each by the end, and the lookups grew from 1.6 to 3 s a
    chunk. Merged in tiers (8 level-0 deltas into a level-1 one, 8 of those into a level-2 one...),
    a bucket holds at most 7 files a level, and each row is rewritten once a level. Sorted as every
    index file is, so the merged partitions at the end are the same."""
    dataset, bucket = partition
    while len(levels) >= COMPACT_AT and len(set(levels[-COMPACT_AT:])) == 1:
        level = levels[-1] + 1
        merged = merge_bucket(dataset, paths[-COMPACT_AT:])
        path = story_file_path(
            root, StoryFile(dataset, bucket, merged), f"level-{level}-{number:05d}.parquet"
        )
        write_table_file(merged, path, _COMPACTED)
        del merged
        for old in paths[-COMPACT_AT:]:
            Path(old).unlink()
        del paths[-COMPACT_AT:], levels[-COMPACT_AT:]
        paths.append(path)
        levels.append(level)


def _merged(dataset: str, paths: list[str]) -> pa.Table:
    """A partition's chunk files as one table: index deltas sorted as every index file is, stories
    rows in arrival order (the chunks' order)."""
    if is_story_index(dataset):
        return merge_bucket(dataset, paths)
    return pa.concat_tables([read_table_file(path) for path in paths])


def stage_run_stories(
    output: str,
    run_id: str,
    files: Sequence[StagedFile],
    prints: Sequence[StagedFile],
    settings: StorySettings,
    parquet: ParquetSettings,
    now: datetime,
    chunk: int = CHUNK_ARTICLES,
) -> tuple[list[StagedFile], list[StagedFile]]:
    """A batch commit's stories: decided for the article versions it publishes (its version-index
    delta, after the reconciliation), written to its staging; the caller adds them to the manifest.

    Returns (files to publish, deltas to retire). A bucket that would hold more than `MAX_DELTAS`
    deltas gets one file instead: its deltas and the commit's rows merged, sorted (`merge_bucket`),
    in the same manifest, which retires the merged deltas to the trash (LSM-style: a lookup reads
    at most `MAX_DELTAS` sorted files per bucket, whatever the number of commits)."""
    published = _published(files)
    if not published.num_rows:
        return [], []
    name = f"part-{run_id}-stories.parquet"
    result, retired = [], []
    stories = decide_run_stories(output, prints, published, run_id, settings, now, chunk)
    del published  # ~100 bytes per article: needed only until the prints are ranked
    for story_file in stories:
        staged_path = join_path(
            output,
            STAGING_DIR,
            run_id,
            story_file.dataset,
            story_file.partition,
            index_file_name(story_file.dataset, name),
        )
        deltas = (
            bucket_files(output, story_file.dataset, int(story_file.partition.removeprefix("bucket=")))
            if is_story_index(story_file.dataset)
            else []
        )
        if len(deltas) >= MAX_DELTAS:
            story_file = story_file._replace(table=merge_bucket(story_file.dataset, deltas, story_file.table))
            trash = join_path(output, TRASH_DIR, run_id, story_file.dataset, story_file.partition)
            retired += [
                StagedFile(
                    story_file.dataset,
                    story_file.partition,
                    path,
                    join_path(trash, posixpath.basename(path)),
                    0,
                )
                for path in deltas
            ]
        write_table_file(story_file.table, staged_path, parquet)
        result.append(
            StagedFile(
                story_file.dataset,
                story_file.partition,
                staged_path,
                story_file_path(output, story_file, name),
                story_file.table.num_rows,
            )
        )
        del story_file  # written: the next partition reuses its memory
        give_back_free_heap()
    return result, retired
