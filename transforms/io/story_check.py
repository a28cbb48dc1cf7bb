"""Check and repair of the story index (transforms/io/story_index.py) against the committed manifests.

`story_index_damage` compares the deltas under `OUTPUT/_state/stories/` with what the committed
manifests published and retired: a lost band delta would silently drop candidates (copies of stored
articles would start stories of their own), a truncated one would fail every commit without naming
the file. `check_index` (transforms/io/versions.py) refuses a run on it (exit 3, naming the file);
`newsbeam repair` (pipeline/maintenance.py) rebuilds the index with `rebuild_index` from the
`stories` dataset and the fingerprints recomputed from the stored articles.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.io.manifests import committed_manifests
from transforms.io.parquet import read_arrow, read_parquet, read_parquet_metadata, read_parquet_schema
from transforms.io.paths import STATE_DIR, join_path, list_files
from transforms.io.story_index import (
    BAND_SCHEMA,
    BAND_SUFFIX,
    BANDS,
    INDEXED_SCHEMA,
    PRINTS,
    StoryFile,
    band_files,
    bucket_of,
    bucket_partition,
    index_files,
    is_story_index,
    key64,
    story_print,
)
from transforms.schema import STORIES, Record
from transforms.stories import (
    DEFAULT_WINDOW,
    Fingerprint,
    IndexedArticle,
    MemoryStoryIndex,
    band_codes,
    filed_codes,
    look_up,
)


class StoryDamage(NamedTuple):
    path: str
    problem: str  # "missing", or what is wrong with the file
    manifest: str  # the manifest that published it ("" for a stream pane's)


def _relative(output: str, path: str) -> str:
    """`dataset/bucket=NN/name` of an index file (manifests record paths of where they were written)."""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-5:]) if len(parts) >= 5 else path


def expected_story_files(output: str) -> dict[str, tuple[str, int | None]]:
    """The story index deltas the manifests say exist: `_state/stories/<dataset>/bucket=NN/name` ->
    (manifest, rows). Each manifest adds what it published and takes away what it retired."""
    expected: dict[str, tuple[str, int | None]] = {}
    for document in committed_manifests(output):
        for move in document.get("retired") or []:
            if is_story_index(str(move.get("dataset"))):
                expected.pop(_relative(output, move["staged_path"]), None)
        for move in document.get("files") or []:
            if is_story_index(str(move.get("dataset"))):
                rows = move.get("rows")
                expected[_relative(output, move["final_path"])] = (
                    document["manifest_path"],
                    rows if isinstance(rows, int) else None,
                )
    return expected


def _rows_and_columns(path: str) -> tuple[int, set[str]]:
    """A delta's row count and columns: a Parquet footer, or an Arrow file's memory-mapped header."""
    if path.endswith(BAND_SUFFIX):
        table = read_arrow(path)
        return table.num_rows, set(table.schema.names)
    metadata = read_parquet_metadata(path)
    return metadata.num_rows, set(metadata.schema.names)


def story_index_damage(output: str) -> list[StoryDamage]:
    """Story deltas the manifests list that are missing, and deltas (listed or a pane's) that are
    unreadable, lack the index's columns or hold another number of rows. Reads only footers."""
    present = {_relative(output, path): path for path in index_files(output)}
    expected = expected_story_files(output)
    damage = [
        StoryDamage(join_path(output, STATE_DIR, "stories", *name.split("/")[2:]), "missing", manifest)
        for name, (manifest, _) in sorted(expected.items())
        if name not in present
    ]
    for name, path in sorted(present.items()):
        manifest, rows = expected.get(name, ("", None))
        schema = BAND_SCHEMA if f"/{BANDS}/" in path else INDEXED_SCHEMA
        try:
            found, columns = _rows_and_columns(path)
        except (OSError, pa.ArrowException) as error:
            damage.append(StoryDamage(path, f"unreadable ({error})", manifest))
            continue
        lacking = [column for column in schema.names if column not in columns]
        if lacking:
            damage.append(
                StoryDamage(path, f"not a story index file (no column {', '.join(lacking)})", manifest)
            )
        elif rows is not None and found != rows:
            damage.append(StoryDamage(path, f"holds {found} rows, its manifest says {rows}", manifest))
    return damage


def rebuild_index(output: str, now: datetime, window: timedelta = DEFAULT_WINDOW) -> Iterator[StoryFile]:
    """The story index rebuilt from the `stories` dataset (each article's story) and fingerprints
    recomputed from the stored articles (the first stored version, as the stage printed it): one
    file per bucket, sorted. Articles without a stored version are left out (nothing to print).

    Which band keys each article is filed under (`stories.filed_codes`) is replayed in the
    order the commits decided them: the runs in commit order (a stream's panes, which no manifest
    lists, after them), each run's articles in arrival order. The stories themselves are read, never
    decided again."""
    stories_root = join_path(output, STORIES)
    story_rows: dict[str, Record] = {}
    for listed in list_files(stories_root, ".parquet", recursive=True):
        table = read_parquet(listed.path, ["article_id", "story_id", "published_at", "run_id"])
        for row in table.to_pylist():
            story_rows.setdefault(row["article_id"], row)
    first: dict[str, tuple[int, Record]] = {}
    wanted = pa.array(sorted(story_rows), pa.string())
    columns = ["article_id", "version", "title", "text", "summary", "language"]
    for listed in list_files(join_path(output, "articles"), ".parquet", recursive=True):
        names = set(read_parquet_schema(listed.path).names)
        table = read_parquet(listed.path, [c for c in columns if c in names])
        table = table.filter(pc.is_in(table["article_id"], value_set=wanted))
        for article in table.to_pylist():
            version = article.get("version") or 1
            known = first.get(article["article_id"])
            if known is None or version < known[0]:
                first[article["article_id"]] = (version, article)
    commit_order = {document.get("run_id"): n for n, document in enumerate(committed_manifests(output))}

    def decided(article_id: str) -> tuple[int, bool, datetime, str]:
        story = story_rows[article_id]
        published = story["published_at"]
        return (
            commit_order.get(story["run_id"], len(commit_order)),
            published is None,
            published or datetime.min,
            article_id,
        )

    replay = MemoryStoryIndex()
    bands: list[int] = []
    owners: list[int] = []
    indexed: dict[int, list[Record]] = defaultdict(list)
    for article_id in sorted(first, key=decided):
        story, print_ = story_rows[article_id], story_print(first[article_id][1])
        article_key, fingerprint = key64(article_id), Fingerprint.from_bytes(print_)
        codes = band_codes(fingerprint)
        filed, candidates = look_up(replay, article_id, story["published_at"], codes, window)
        filing = filed_codes(article_id, story["story_id"], codes, filed, candidates)
        replay.add(IndexedArticle(article_id, story["story_id"], story["published_at"], fingerprint), filing)
        bands += filing
        owners += [article_key] * len(filing)
        indexed[bucket_of(article_key)].append(
            {
                "article_key": article_key,
                "article_id": article_id,
                "story_id": story["story_id"],
                "published_at": story["published_at"],
                "indexed_at": now,  # the commit's time is not kept in `stories`: the repair's
                "run_id": story["run_id"],
                "fingerprint": print_,
            }
        )
    yield from band_files(np.array(bands, np.int64), np.array(owners, np.int64))
    for bucket, rows in sorted(indexed.items()):
        rows.sort(key=lambda r: r["article_key"])
        yield StoryFile(PRINTS, bucket_partition(bucket), pa.Table.from_pylist(rows, schema=INDEXED_SCHEMA))
