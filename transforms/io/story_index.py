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

- `bands/bucket=NN/part-*.parquet`: one row per (LSH band key, article): `band` and `article_key`
  (64-bit hashes), bucketed by the band's hash, every file sorted by band (the commit, compact,
  prune and repair all write them sorted): a commit skips the row groups whose statistics hold none
  of its band keys and finds the rows by binary search (`np.searchsorted`), reading `article_key`
  only of row groups with a hit. At most `MAX_DELTAS` deltas per bucket after a batch commit (it
  merges them, LSM-style, in its own manifest); `newsbeam compact` merges each bucket into one;
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

import hashlib
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

from transforms.io.parquet import open_parquet, read_parquet
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
    band_keys,
    fingerprint,
)

STORIES_STATE = f"{STATE_DIR}/stories"
BANDS = f"{STORIES_STATE}/bands"  # dataset names: staged and published like the version index
PRINTS = f"{STORIES_STATE}/prints"
STAGED_PRINTS = "_story_prints"  # a run's staged prints (transforms/story_prints.py): never published
BUCKETS = 16
MAX_DELTAS = 8  # per bucket: a batch commit that would add the 9th merges them (transforms/io/run_stories.py)
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


def key64(text: str) -> int:
    """A stable signed 64-bit hash (the same in every process)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def bucket_of(key: int) -> int:
    return (key & 0xFFFF_FFFF_FFFF_FFFF) % BUCKETS


def bucket_partition(bucket: int) -> str:
    return f"bucket={bucket:02d}"


def bucket_files(output: str, dataset: str, bucket: int) -> list[str]:
    """A bucket's delta files, listed (never matched: the output's name may hold `[`, `*`, `?`)."""
    return [m.path for m in list_files(join_path(output, dataset, bucket_partition(bucket)), ".parquet")]


def index_files(output: str) -> list[str]:
    return [
        m.path
        for dataset in (BANDS, PRINTS)
        for m in list_files(join_path(output, dataset), ".parquet", recursive=True)
    ]


def _matching(
    files: Iterable[str], column: str, values: pa.Array, columns: Sequence[str]
) -> Iterator[pa.Table]:
    """The rows of `files` whose `column` is in `values`, row group by row group: the key column is
    read first, the other columns only of row groups that hold a match (a print is 0.7 KB)."""
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


def _band_matches(path: str, wanted: Keys) -> Iterator[tuple[Keys, Keys]]:
    """(band, article_key) of the rows of one band delta whose band is in sorted `wanted`.

    Band deltas are sorted by band (every writer sorts: the commit, compact, prune, repair), so a
    row group whose statistics range holds no wanted key is never read, and inside a row group the
    rows are found by binary search; the `article_key` column is read only of row groups with a hit.
    """
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


def _by_bucket(keys: Iterable[int]) -> dict[int, list[int]]:
    grouped: dict[int, set[int]] = defaultdict(set)
    for key in keys:
        grouped[bucket_of(key)].add(key)
    return {bucket: sorted(values) for bucket, values in sorted(grouped.items())}


def read_prints(output: str, article_keys: Iterable[int], since: datetime | None = None) -> list[Record]:
    """The indexed prints of `article_keys` (only those published at or after `since`, or undated)."""
    rows: list[Record] = []
    for bucket, keys in _by_bucket(article_keys).items():
        wanted = pa.array(keys, pa.int64())
        for table in _matching(
            bucket_files(output, PRINTS, bucket), "article_key", wanted, INDEXED_SCHEMA.names
        ):
            if since is not None:
                recent = pc.greater_equal(table["published_at"], pa.scalar(since, TIMESTAMP))
                table = table.filter(pc.fill_null(recent, True))
            rows += table.to_pylist()
    return rows


def read_bands(output: str, bands: Iterable[int]) -> dict[int, set[int]]:
    """band -> the article keys filed under it, for the `bands` asked for."""
    found: dict[int, set[int]] = defaultdict(set)
    for bucket, keys in _by_bucket(bands).items():
        wanted = np.array(keys, np.int64)
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
    keys: dict[str, list[str]],
    window: timedelta,
    earlier: Sequence[str] = (),
) -> MemoryStoryIndex:
    """What the committed index knows that this commit's `articles` may need, as a `StoryLookup`:
    the articles themselves when indexed (a rerun, a new version), and every candidate filed under one
    of their band `keys` and published within `window` of the earliest of them.

    `earlier` are folders of the same layout holding the deltas of the commit's earlier chunks
    (transforms/io/run_stories.py): their articles are candidates as the committed ones are."""
    ids = {article.article_id for article in articles}
    band_of = {key64(key): key for article_keys in keys.values() for key in article_keys}
    dates = [article.published_at for article in articles]
    since = None if not dates or None in dates else min(d for d in dates if d is not None) - window
    rows: dict[str, Record] = {}
    keys_of: dict[int, set[str]] = defaultdict(set)
    for root in (output, *earlier):
        for row in read_prints(root, [key64(article_id) for article_id in ids]):
            if row["article_id"] in ids:
                rows.setdefault(row["article_id"], row)
        found: dict[int, set[str]] = defaultdict(set)
        for band, article_keys in read_bands(root, band_of).items():
            for article_key in article_keys:
                found[article_key].add(band_of[band])
        for row in read_prints(root, found, since):
            rows.setdefault(row["article_id"], row)
        for article_key, bands in found.items():
            keys_of[article_key] |= bands
    index = MemoryStoryIndex()
    for _id, row in sorted(rows.items()):
        index.add(_indexed(row), sorted(keys_of.get(row["article_key"], ())))
    return index


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
    keys = {article.article_id: band_keys(article.fingerprint) for article in articles}
    index = committed_index(output, articles, keys, settings.window, earlier)
    known = {article_id for article_id in unique if index.known(article_id) is not None}
    assignments = assign_stories(articles, index, settings.threshold, settings.window)
    stories: dict[str, list[Record]] = defaultdict(list)
    bands: dict[int, list[tuple[int, int]]] = defaultdict(list)
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
        for key in keys[assignment.article_id]:
            band = key64(key)
            bands[bucket_of(band)].append((band, article_key))
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
    for bucket, pairs in sorted(bands.items()):
        pairs.sort()
        table = pa.table(
            {"band": [p[0] for p in pairs], "article_key": [p[1] for p in pairs]}, schema=BAND_SCHEMA
        )
        files.append(StoryFile(BANDS, bucket_partition(bucket), table))
    for bucket, rows in sorted(indexed.items()):
        rows.sort(key=lambda r: r["article_key"])
        files.append(
            StoryFile(PRINTS, bucket_partition(bucket), pa.Table.from_pylist(rows, schema=INDEXED_SCHEMA))
        )
    return files


def story_file_path(output: str, story_file: StoryFile, name: str) -> str:
    return join_path(output, story_file.dataset, story_file.partition, name)


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
    tables = [read_parquet(path).select(schema.names).cast(schema) for path in paths]
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
        table = pa.concat_tables([read_parquet(path).select(BAND_SCHEMA.names) for path in files])
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
