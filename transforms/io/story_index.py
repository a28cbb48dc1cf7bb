"""The durable story index, and the assignment of stories at commit (batch runs and stream panes alike).

**Decided at the commit, under the commit lock.** `decide_stories` takes the prints (transforms/
story_prints.py) of the articles a commit actually publishes (after the version decision), orders
them by (published_at, article_id) (`stories.arrival_order`), looks each up against the committed
index plus the commit's own earlier articles, applies the story rule of transforms/stories.py, and
returns what the commit publishes in its own manifest (or pane marker), so the roll-forward protocol
covers it: `stories` rows (one per newly stored article: an article's later versions keep its story)
and the index deltas. A run that fails adds nothing; two runs see each other's stories, since each
commit reads the index under the lock.

**Layout** under `OUTPUT/_state/stories/`, incremental, never rebuilt from the articles; every file is
immutable once published, and `newsbeam compact` merges each bucket's deltas:

- `bands/bucket=NN/part-*.arrow`: one row per (LSH band key, article filed under it: a large story's
  later members and full band keys file none, `stories.filed_codes`): `band` and `article_key` (64-bit
  hashes),
  bucketed by the band's hash, every file sorted by band (the commit, compact, prune and repair
  all write them sorted), as uncompressed Arrow IPC files: a commit memory-maps
  them and finds its keys by binary search (`np.searchsorted`) in place, so a lookup touches only
  the pages the search visits, O(keys x log rows), whatever the index's size (Parquet would decode
  every row group holding a key, and a commit's thousands of keys hold them all). Band deltas in
  Parquet (`.parquet`, written before) are still read, row group by row group. At most
  `MAX_DELTAS` deltas per bucket after a batch commit (it merges them, LSM-style, in its own
  manifest) and at most one more after a stream pane (it merges the deltas panes wrote, `pane-*`,
  in its marker: those no manifest lists, so the check against the manifests still holds);
  `newsbeam compact` merges each bucket into one;
- `prints/bucket=NN/part-*.parquet`: one row per article: `article_key`, `article_id`, `story_id`,
  `published_at`, `indexed_at` (the commit's time, the order key after the commit order), `run_id`
  and the fingerprint bytes, bucketed by the article's hash: then only its candidates' prints are read.

**Check and repair** are in transforms/io/story_check.py: the deltas against the manifests that
published them (a lost delta would silently drop candidates), and the rebuild for `newsbeam repair`.

`stories.window` bounds which prints are candidates (published within the window of the commit's
earliest article); `newsbeam prune` drops the prints and band rows older than the window.
Over ~400 lines for a reason: the layout, the lookup, the decision and the maintenance of one
index read together (the decision's files are what compact merges and prune rewrites).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.io.parquet import (
    ARROW_SUFFIX,
    open_parquet,
    read_arrow,
    read_parquet,
    read_table_file,
)
from transforms.io.paths import (
    STATE_DIR,
    join_path,
    list_files,
    partition_path,
)
from transforms.schema import STORIES, STORY_PRINT, STORY_SCHEMA, TIMESTAMP, Record
from transforms.stories import (
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    Fingerprint,
    IndexedArticle,
    MemoryStoryIndex,
    NewArticle,
    assign_stories,
    band_codes,
    fingerprint,
    key_code,
)

STORIES_STATE = f"{STATE_DIR}/stories"
BANDS = f"{STORIES_STATE}/bands"  # dataset names: staged and published like the version index
PRINTS = f"{STORIES_STATE}/prints"
STAGED_PRINTS = "_story_prints"  # a run's staged prints (transforms/story_prints.py): never published
BUCKETS = 16
MAX_DELTAS = 8  # per bucket: a batch commit that would add the 9th merges them (transforms/io/run_stories.py)
PANE_FILE_PREFIX = "pane-"  # a stream pane's deltas (`pane_story_name`): no manifest lists them
BAND_SUFFIX = ARROW_SUFFIX  # band deltas: Arrow IPC, memory-mapped and searched in place
INDEX_SUFFIXES = (BAND_SUFFIX, ".parquet")
Keys = npt.NDArray[np.int64]


@dataclass(frozen=True)
class StorySettings:
    """`stories:` of the config: on or off, the similarity threshold, how far back a match may reach."""

    enabled: bool = True
    threshold: float = DEFAULT_THRESHOLD
    window_seconds: int = int(DEFAULT_WINDOW.total_seconds())

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)


# What a run stages per article (and a pane reads from its records): enough to decide and to write a row.
PRINT_SCHEMA = pa.schema(
    [
        ("article_id", pa.string()),
        ("content_hash", pa.string()),
        ("published_at", TIMESTAMP),
        ("source_domain", pa.string()),
        ("ingest_date", pa.string()),
        ("fingerprint", pa.binary()),
    ]
)
BAND_SCHEMA = pa.schema([("band", pa.int64()), ("article_key", pa.int64())])
INDEXED_SCHEMA = pa.schema(
    [
        ("article_key", pa.int64()),
        ("article_id", pa.string()),
        ("story_id", pa.string()),
        ("published_at", TIMESTAMP),
        ("indexed_at", TIMESTAMP),
        ("run_id", pa.string()),
        ("fingerprint", pa.binary()),
    ]
)
_STORY_FILE_SCHEMA = pa.schema(
    [f for f in STORY_SCHEMA if f.name != "ingest_date"], metadata=STORY_SCHEMA.metadata
)


def print_row(article: Record) -> Record:
    """An article's row of `PRINT_SCHEMA` (it has its `story_print`)."""
    return {
        "article_id": article["article_id"],
        "content_hash": article.get("content_hash"),
        "published_at": article.get("published_at"),
        "source_domain": article.get("source_domain"),
        "ingest_date": article.get("ingest_date"),
        "fingerprint": article[STORY_PRINT],
    }


key64 = key_code  # article keys and band codes: one stable signed 64-bit hash


def bucket_of(key: int) -> int:
    return (key & 0xFFFF_FFFF_FFFF_FFFF) % BUCKETS


def bucket_partition(bucket: int) -> str:
    return f"bucket={bucket:02d}"


def bucket_files(output: str, dataset: str, bucket: int) -> list[str]:
    """A bucket's delta files, listed (never matched: the output's name may hold `[`, `*`, `?`)."""
    folder = join_path(output, dataset, bucket_partition(bucket))
    return sorted(m.path for suffix in INDEX_SUFFIXES for m in list_files(folder, suffix))


def index_files(output: str) -> list[str]:
    return sorted(
        m.path
        for dataset in (BANDS, PRINTS)
        for suffix in INDEX_SUFFIXES
        for m in list_files(join_path(output, dataset), suffix, recursive=True)
    )


def index_file_name(dataset: str, name: str) -> str:
    """A story index file's name from a `part-*.parquet` name: band deltas are `.arrow` files."""
    return name.removesuffix(".parquet") + BAND_SUFFIX if dataset == BANDS else name


def _matching(
    files: Iterable[str], column: str, values: pa.Array, columns: Sequence[str]
) -> Iterator[pa.Table]:
    """The rows of `files` whose `column` is in `values`, row group by row group: the key column is
    read first, the other columns only of row groups that hold a match (a print is 0.8 KB)."""
    others = [name for name in columns if name != column]
    for path in files:
        with open_parquet(path) as source:
            reader = pq.ParquetFile(source)
            for group in range(reader.num_row_groups):
                keys = reader.read_row_group(group, columns=[column])
                hits = pc.is_in(keys[column], value_set=values)
                if not pc.any(hits).as_py():
                    continue
                table = reader.read_row_group(group, columns=list(columns)) if others else keys
                yield table.filter(hits)


def _group_range(reader: pq.ParquetFile, group: int) -> tuple[int, int] | None:
    """The (min, max) band of a row group from its statistics, None when it has none."""
    stats = reader.metadata.row_group(group).column(0).statistics
    if stats is None or not stats.has_min_max:
        return None
    return int(stats.min), int(stats.max)


def _sorted_hits(bands: Keys, wanted: Keys) -> Keys:
    """Positions of the rows of sorted `bands` whose band is in sorted `wanted`: a binary search per
    wanted key (`np.searchsorted`), O(wanted x log rows), never a scan of the rows."""
    start = np.searchsorted(bands, wanted, side="left")
    stop = np.searchsorted(bands, wanted, side="right")
    present = stop > start
    if not present.any():
        return np.empty(0, np.int64)
    start, stop = start[present], stop[present]
    lengths = stop - start
    offsets = np.repeat(start - np.cumsum(lengths) + lengths, lengths)
    hits: Keys = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
    return hits


def _column_array(table: pa.Table, name: str) -> Keys:
    column = table.column(name)
    chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    values: Keys = chunk.to_numpy(zero_copy_only=False)  # one chunk, no nulls: a view of the map
    return values


def _band_matches(path: str, wanted: Keys) -> Iterator[tuple[Keys, Keys]]:
    """(band, article_key) of the rows of one band delta whose band is in sorted `wanted`.

    Band deltas are sorted by band (every writer sorts: the commit, compact, prune, repair). An Arrow
    delta is searched in place in its memory map (only the pages the binary search visits are read);
    of a Parquet one, a row group whose statistics range holds no wanted key is never read, inside a
    row group the rows are found by binary search, and `article_key` is read only of row groups with
    a hit.
    """
    if path.endswith(BAND_SUFFIX):
        table = read_arrow(path)
        if table.num_rows == 0:
            return
        bands = _column_array(table, "band")
        rows = _sorted_hits(bands, wanted)
        if rows.size:
            yield bands[rows], _column_array(table, "article_key")[rows]
        return
    with open_parquet(path) as source:
        reader = pq.ParquetFile(source)
        for group in range(reader.num_row_groups):
            bounds = _group_range(reader, group)
            probe = wanted
            if bounds is not None:
                low, high = (
                    np.searchsorted(wanted, bounds[0], "left"),
                    np.searchsorted(wanted, bounds[1], "right"),
                )
                if low == high:
                    continue
                probe = wanted[low:high]
            bands = reader.read_row_group(group, columns=["band"])["band"].to_numpy()
            if bands.size > 1 and not bool((bands[1:] >= bands[:-1]).all()):  # a delta of an older writer
                rows = np.flatnonzero(np.isin(bands, probe))
            else:
                rows = _sorted_hits(bands, probe)
            if rows.size:
                owners = reader.read_row_group(group, columns=["article_key"])["article_key"].to_numpy()
                yield bands[rows], owners[rows]


def _by_bucket(keys: Iterable[int]) -> dict[int, Keys]:
    """The distinct `keys` per bucket (`bucket_of`), each bucket's sorted."""
    values = np.unique(np.fromiter(keys, dtype=np.int64))
    buckets = values.view(np.uint64) % np.uint64(BUCKETS)
    return {int(bucket): values[buckets == bucket] for bucket in np.unique(buckets)}


_LOOKED_UP = ["article_key", "article_id", "story_id", "published_at", "fingerprint"]  # what a lookup keeps


def read_prints(output: str, article_keys: Iterable[int], since: datetime | None = None) -> Iterator[Record]:
    """The indexed prints of `article_keys` (only those published at or after `since`, or undated):
    the columns a lookup keeps, a row group's matches at a time."""
    for bucket, keys in _by_bucket(article_keys).items():
        wanted = pa.array(keys)
        for table in _matching(bucket_files(output, PRINTS, bucket), "article_key", wanted, _LOOKED_UP):
            if since is not None:
                recent = pc.greater_equal(table["published_at"], pa.scalar(since, TIMESTAMP))
                table = table.filter(pc.fill_null(recent, True))
            yield from table.to_pylist()


def read_bands(output: str, bands: Iterable[int]) -> dict[int, set[int]]:
    """band -> the article keys filed under it, for the `bands` asked for."""
    found: dict[int, set[int]] = defaultdict(set)
    for bucket, wanted in _by_bucket(bands).items():
        for path in bucket_files(output, BANDS, bucket):
            for matched, owners in _band_matches(path, wanted):
                for band, article_key in zip(matched.tolist(), owners.tolist(), strict=True):
                    found[band].add(article_key)
    return found


def _indexed(row: Record) -> IndexedArticle:
    return IndexedArticle(
        row["article_id"], row["story_id"], row["published_at"], Fingerprint.from_bytes(row["fingerprint"])
    )


def committed_index(
    output: str,
    articles: Sequence[NewArticle],
    codes: dict[str, list[int]],
    window: timedelta,
    earlier: Sequence[str] = (),
) -> MemoryStoryIndex:
    """What the committed index knows that this commit's `articles` may need, as a `StoryLookup`:
    the articles themselves when indexed (a rerun, a new version), and every candidate filed under one
    of their band `codes` and published within `window` of the earliest of them.

    `earlier` are folders of the same layout holding the deltas of the commit's earlier chunks
    (transforms/io/run_stories.py): their articles are candidates as the committed ones are. They
    never hold one of `articles` (a run decides each article id in one chunk), so they are not
    searched for them."""
    ids = {article.article_id for article in articles}
    wanted = {code for article_codes in codes.values() for code in article_codes}
    dates = [article.published_at for article in articles]
    since = None if not dates or None in dates else min(d for d in dates if d is not None) - window
    # Each print is kept as the index keeps it as soon as it is read: a candidate's row as a dict
    # took another 1.3 KB until the index was built (an undated chunk reads tens of thousands).
    found_prints: dict[str, tuple[IndexedArticle, int]] = {}
    keys_of: dict[int, set[int]] = defaultdict(set)
    for row in read_prints(output, [key64(article_id) for article_id in ids]):  # an earlier chunk's never
        if row["article_id"] in ids and row["article_id"] not in found_prints:
            found_prints[row["article_id"]] = (_indexed(row), row["article_key"])
    for root in (output, *earlier):
        found: dict[int, set[int]] = defaultdict(set)
        for band, article_keys in read_bands(root, wanted).items():
            for article_key in article_keys:
                found[article_key].add(band)
        for row in read_prints(root, found, since):
            if row["article_id"] not in found_prints:
                found_prints[row["article_id"]] = (_indexed(row), row["article_key"])
        for article_key, bands in found.items():
            keys_of[article_key] |= bands
    index = MemoryStoryIndex()
    for _id, (indexed, article_key) in sorted(found_prints.items()):
        index.add(indexed, sorted(keys_of.get(article_key, ())))
    return index


def band_files(bands: Keys, owners: Keys) -> list[StoryFile]:
    """Band rows (band, owner's article key) as one delta per bucket, each sorted by band, then key."""
    if not bands.size:
        return []
    buckets = (bands.view(np.uint64) % np.uint64(BUCKETS)).astype(np.int64)
    order = np.lexsort((owners, bands, buckets))
    bands, owners, buckets = bands[order], owners[order], buckets[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], buckets.size]
    return [
        StoryFile(
            BANDS,
            bucket_partition(int(buckets[start])),
            pa.table({"band": bands[start:end], "article_key": owners[start:end]}, schema=BAND_SCHEMA),
        )
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


class StoryFile(NamedTuple):
    """A file a commit publishes: its dataset, partition folder and rows (the caller names and writes it)."""

    dataset: str
    partition: str
    table: pa.Table


def decide_stories(
    output: str,
    prints: Iterable[Record],
    run_id: str,
    settings: StorySettings,
    now: datetime,
    earlier: Sequence[str] = (),
) -> list[StoryFile]:
    """The stories of a commit's published articles (`PRINT_SCHEMA` rows) and the index deltas.

    The caller holds the commit lock. Articles the index knows keep their story and get no row; the
    others get a `stories` row and are filed in the index. Deterministic: the same prints against the
    same committed index give the same files, so a redone commit gives the same answer. `earlier`:
    see `committed_index`.
    """
    unique: dict[str, Record] = {}
    for row in sorted(prints, key=lambda r: (r["article_id"], r.get("content_hash") or "", r["fingerprint"])):
        unique.setdefault(row["article_id"], row)
    if not unique:
        return []
    articles = [
        NewArticle(row["article_id"], row["published_at"], Fingerprint.from_bytes(row["fingerprint"]))
        for row in unique.values()
    ]
    codes = {article.article_id: band_codes(article.fingerprint) for article in articles}
    index = committed_index(output, articles, codes, settings.window, earlier)
    known = {article_id for article_id in unique if index.known(article_id) is not None}
    assignments = assign_stories(articles, index, settings.threshold, settings.window, codes)
    stories: dict[str, list[Record]] = defaultdict(list)
    filed: list[int] = []  # the bands of the articles filed now, and their owners' keys
    owners: list[int] = []
    indexed: dict[int, list[Record]] = defaultdict(list)
    for assignment in assignments:
        if assignment.article_id in known:
            continue
        row = unique[assignment.article_id]
        stories[row["ingest_date"] or ""].append(
            {
                "article_id": assignment.article_id,
                "story_id": assignment.story_id,
                "near_duplicate_of": assignment.near_duplicate_of,
                "story_similarity": assignment.story_similarity,
                "published_at": row["published_at"],
                "source_domain": row["source_domain"],
                "run_id": run_id,
            }
        )
        article_key = key64(assignment.article_id)
        filed += assignment.filed_codes  # not all its codes past a bound (stories.filed_codes)
        owners += [article_key] * len(assignment.filed_codes)
        indexed[bucket_of(article_key)].append(
            {
                "article_key": article_key,
                "article_id": assignment.article_id,
                "story_id": assignment.story_id,
                "published_at": row["published_at"],
                "indexed_at": now,
                "run_id": run_id,
                "fingerprint": row["fingerprint"],
            }
        )
    files = [
        StoryFile(
            STORIES,
            partition_path({"ingest_date": day or None}, ("ingest_date",)),
            pa.Table.from_pylist(rows, schema=_STORY_FILE_SCHEMA),
        )
        for day, rows in sorted(stories.items())
    ]
    files += band_files(np.array(filed, np.int64), np.array(owners, np.int64))
    for bucket, rows in sorted(indexed.items()):
        rows.sort(key=lambda r: r["article_key"])
        files.append(
            StoryFile(PRINTS, bucket_partition(bucket), pa.Table.from_pylist(rows, schema=INDEXED_SCHEMA))
        )
    return files


def story_file_path(output: str, story_file: StoryFile, name: str) -> str:
    """Where a commit publishes `story_file` (`name` is a `part-*.parquet` name; see `index_file_name`)."""
    return join_path(
        output, story_file.dataset, story_file.partition, index_file_name(story_file.dataset, name)
    )


def pane_story_name(pane_file_name: str) -> str:
    """The name of a stream pane's story files, from its window file name (`part-<window>-...`)."""
    return PANE_FILE_PREFIX + pane_file_name.removeprefix("part-")


def bound_pane_deltas(output: str, story_file: StoryFile) -> tuple[StoryFile, list[str]]:
    """A stream pane's story file and the pane deltas it replaces, so a bucket stays bounded.

    When the bucket already holds `MAX_DELTAS` deltas, the ones earlier panes wrote are merged into
    this pane's file (`merge_bucket`) and returned for the pane to delete once its file is published.
    Deltas a manifest published are left to the next batch commit or `compact`, which retire them in
    a manifest (the story check compares the deltas with the manifests), so a bucket holds at most
    `MAX_DELTAS` + 1 deltas however many panes a stream commits.
    """
    if not is_story_index(story_file.dataset):
        return story_file, []
    deltas = bucket_files(output, story_file.dataset, int(story_file.partition.removeprefix("bucket=")))
    panes = [path for path in deltas if posixpath.basename(path).startswith(PANE_FILE_PREFIX)]
    if len(deltas) < MAX_DELTAS or not panes:
        return story_file, []
    return story_file._replace(table=merge_bucket(story_file.dataset, panes, story_file.table)), panes


def is_story_index(dataset: str) -> bool:
    return dataset in (BANDS, PRINTS)


def partition_name(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path))


# --- maintenance: compact merges each bucket's deltas (pipeline/maintenance.py), prune drops old rows ---


def index_buckets(output: str) -> list[tuple[str, str, list[str]]]:
    """(dataset, bucket folder, its delta files) of the story index, for `newsbeam compact`."""
    groups = []
    for dataset in (BANDS, PRINTS):
        for bucket in range(BUCKETS):
            files = bucket_files(output, dataset, bucket)
            if files:
                groups.append((dataset, bucket_partition(bucket), files))
    return groups


def merge_bucket(dataset: str, paths: Sequence[str], extra: pa.Table | None = None) -> pa.Table:
    """The rows of a bucket's deltas in one table, sorted as every index file is: bands by band (the
    binary search of `_band_matches` rests on it), prints by article key."""
    schema = BAND_SCHEMA if dataset == BANDS else INDEXED_SCHEMA
    tables = [read_table_file(path, list(schema.names)).cast(schema) for path in paths]
    if extra is not None:
        tables.append(extra.select(schema.names).cast(schema))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    keys = (
        [("band", "ascending"), ("article_key", "ascending")]
        if dataset == BANDS
        else [("article_key", "ascending")]
    )
    return table.sort_by(keys)


class PrunedBucket(NamedTuple):
    """A bucket of the story index without its rows older than the window: the files it replaces,
    and its remaining rows (None when no row remains)."""

    dataset: str
    partition: str
    replaced: list[str]
    table: pa.Table | None


def prune_index(output: str, cutoff: datetime) -> list[PrunedBucket]:
    """The buckets that hold articles published (or, undated, indexed) before `cutoff`, without them.

    The caller holds the commit lock and publishes the result through a manifest. Band rows go with
    their articles' prints.
    """
    pruned: list[PrunedBucket] = []
    dropped: list[int] = []
    for bucket in range(BUCKETS):
        files = bucket_files(output, PRINTS, bucket)
        if not files:
            continue
        table = pa.concat_tables([read_parquet(path).select(INDEXED_SCHEMA.names) for path in files])
        when = pc.coalesce(table["published_at"], table["indexed_at"])
        old = pc.fill_null(pc.less(when, pa.scalar(cutoff, TIMESTAMP)), False)
        if not pc.any(old).as_py():
            continue
        dropped += table.filter(old)["article_key"].to_pylist()
        kept = table.filter(pc.invert(old))
        pruned.append(PrunedBucket(PRINTS, bucket_partition(bucket), files, kept if kept.num_rows else None))
    if not dropped:
        return pruned
    gone = pa.array(sorted(set(dropped)), pa.int64())
    for bucket in range(BUCKETS):
        files = bucket_files(output, BANDS, bucket)
        if not files:
            continue
        table = pa.concat_tables([read_table_file(path, list(BAND_SCHEMA.names)) for path in files])
        old = pc.is_in(table["article_key"], value_set=gone)
        if not pc.any(old).as_py():
            continue
        kept = table.filter(pc.invert(old)).sort_by([("band", "ascending"), ("article_key", "ascending")])
        pruned.append(PrunedBucket(BANDS, bucket_partition(bucket), files, kept if kept.num_rows else None))
    return pruned


def story_print(article: Record) -> bytes:
    """An article's fingerprint as bytes: title and text (the summary when there is no text), in its
    language; the stage (transforms/story_prints.py) and the repair compute it here alike."""
    text = article.get("text") or article.get("summary")
    return fingerprint(article.get("title"), text, article.get("language")).to_bytes()
