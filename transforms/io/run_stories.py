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

What stays per article of the run is a few columns in Arrow (ids, hashes, dates: ~100 bytes), to
order the prints; the prints themselves are read a staged file at a time and spilled per chunk.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from transforms.io.parquet import (
    ParquetSettings,
    give_back_free_heap,
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
_NO_HASH = "\x00"  # stands for a null content hash in joins (a real hash is printable)
_KEYS = ["article_id", "content_hash", "published_at"]


def _published(files: Sequence[StagedFile]) -> pa.Table:
    """(article_id, content hash) of the article versions the commit publishes (its index delta)."""
    tables = [
        read_parquet(staged.staged_path, ["article_id", "content_hash"])
        for staged in files
        if staged.dataset == INDEX_DATASET
    ]
    if not tables:
        return pa.table({"article_id": pa.array([], pa.string()), "hash": pa.array([], pa.string())})
    table = pa.concat_tables(tables)
    return pa.table(
        {"article_id": table["article_id"], "hash": pc.fill_null(table["content_hash"], _NO_HASH)}
    )


def _published_keys(prints: Sequence[StagedFile], published: pa.Table) -> pa.Table:
    """One row per published staged print, without its fingerprint: ids, dates and where it lies."""
    parts = []
    for number, staged in enumerate(prints):
        table = read_parquet(staged.staged_path, _KEYS)
        parts.append(
            pa.table(
                {
                    "article_id": table["article_id"],
                    "hash": pc.fill_null(table["content_hash"], _NO_HASH),
                    "published_at": table["published_at"],
                    "file": pa.array([number] * table.num_rows, pa.int64()),
                    "row": pa.array(range(table.num_rows), pa.int64()),
                }
            ).join(published, ["article_id", "hash"], join_type="left semi")
        )
    return pa.concat_tables(parts) if parts else pa.table({})


def _winners(prints: Sequence[StagedFile], keys: pa.Table) -> pa.Table:
    """One print per article id, the one `decide_stories` keeps: the least (content hash, fingerprint),
    then the first staged. Only ids staged more than once need their fingerprints read."""
    counts = keys.group_by("article_id").aggregate([("row", "count")])
    repeated = counts.filter(pc.greater(counts["row_count"], 1))["article_id"]
    if not len(repeated):
        return keys
    is_repeated = pc.is_in(keys["article_id"], value_set=repeated)
    candidates = keys.filter(is_repeated).to_pylist()
    wanted: dict[int, list[int]] = defaultdict(list)
    for candidate in candidates:
        wanted[candidate["file"]].append(candidate["row"])
    prints_of: dict[tuple[int, int], bytes] = {}
    for number, rows in wanted.items():
        column = read_parquet(prints[number].staged_path, ["fingerprint"])["fingerprint"]
        taken = column.take(pa.array(rows, pa.int64())).to_pylist()
        prints_of.update(((number, row), data) for row, data in zip(rows, taken, strict=True))
    best: dict[str, Record] = {}
    for candidate in sorted(
        candidates,
        key=lambda c: (c["article_id"], c["hash"], prints_of[c["file"], c["row"]], c["file"], c["row"]),
    ):
        best.setdefault(candidate["article_id"], candidate)
    chosen = pa.Table.from_pylist(list(best.values()), schema=keys.schema)
    return pa.concat_tables([keys.filter(pc.invert(is_repeated)), chosen])


def arrival_ranks(prints: Sequence[StagedFile], published: pa.Table) -> pa.Table:
    """(file, row, rank) of each print `decide_stories` would decide, `rank` its place in arrival order."""
    keys = _published_keys(prints, published)
    if not keys.num_rows:
        return pa.table({"file": pa.array([], pa.int64()), "row": pa.array([], pa.int64())})
    ordered = _winners(prints, keys).sort_by(
        [("published_at", "ascending"), ("article_id", "ascending")], null_placement="at_end"
    )
    return pa.table(
        {
            "file": ordered["file"],
            "row": ordered["row"],
            "rank": pa.array(range(ordered.num_rows), pa.int64()),
        }
    )


def spill_chunks(
    prints: Sequence[StagedFile], ranks: pa.Table, folder: Path, chunk: int
) -> Iterator[list[Record]]:
    """The prints of `ranks` as `PRINT_SCHEMA` rows, `chunk` at a time in arrival order: spilled to
    one Arrow stream per chunk in `folder`, a staged file at a time, then read back chunk by chunk."""
    schema = PRINT_SCHEMA.append(pa.field("rank", pa.int64()))
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    path_of = [folder / f"chunk-{n:05d}.arrows" for n in range(-(-ranks.num_rows // chunk))]
    try:
        for number, staged in enumerate(prints):
            mine = ranks.filter(pc.equal(ranks["file"], number))
            if not mine.num_rows:
                continue
            table = read_parquet(staged.staged_path).select(PRINT_SCHEMA.names).cast(PRINT_SCHEMA)
            table = table.take(mine["row"]).append_column("rank", mine["rank"])
            chunk_of = pc.divide(table["rank"], chunk)
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
) -> Iterator[StoryFile]:
    """What `decide_stories` gives for the published prints of a run, decided `chunk` at a time.

    The merged partitions come one at a time, each read from the chunks' files as it is asked for:
    together they are the run's whole story index delta (~2 KB per article in Arrow), which a
    caller holding them all would hold at once."""
    ranks = arrival_ranks(prints, published)
    del published
    if not ranks.num_rows:
        return
    with tempfile.TemporaryDirectory(prefix="newsbeam-stories-") as folder:
        earlier = str(Path(folder) / "index")  # the chunks' deltas, looked up by the next chunks
        parts: dict[tuple[str, str], list[str]] = defaultdict(list)
        chunks = spill_chunks(prints, ranks, Path(folder), chunk)
        for number, rows in enumerate(chunks):
            for story_file in decide_stories(output, rows, run_id, settings, now, earlier=(earlier,)):
                root = earlier if is_story_index(story_file.dataset) else str(Path(folder) / "stories")
                path = story_file_path(root, story_file, f"chunk-{number:05d}.parquet")
                write_table_file(story_file.table, path, ParquetSettings())
                parts[story_file.dataset, story_file.partition].append(path)
            give_back_free_heap()  # a chunk's objects are freed: the next chunk reuses the pages
        del ranks
        for (dataset, partition), paths in sorted(parts.items()):
            yield StoryFile(dataset, partition, _merged(dataset, paths))


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
