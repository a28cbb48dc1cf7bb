"""Files are read in shards of about equal bytes, so that the workers stay equally busy."""

from __future__ import annotations

import random

from transforms.read import FILES_PER_SHARD, MIN_FILE_SHARDS, balanced_shards


def sizes_of(shards: list[list[str]], sizes: dict[str, int]) -> list[int]:
    return [sum(sizes[path] for path in shard) for shard in shards]


def test_every_file_is_in_exactly_one_shard() -> None:
    files = [(f"f{i}.xml", i % 7) for i in range(300)]
    shards = balanced_shards(files)
    assert sorted(path for shard in shards for path in shard) == sorted(path for path, _ in files)
    assert len(shards) == MIN_FILE_SHARDS


def test_shard_count_follows_the_number_of_files() -> None:
    assert balanced_shards([]) == []
    assert len(balanced_shards([("a", 1), ("b", 2)])) == 2  # never an empty shard
    many = [(f"f{i}", 1) for i in range(40 * FILES_PER_SHARD * 4)]
    assert len(balanced_shards(many)) == len(many) // FILES_PER_SHARD


def test_shards_are_balanced_to_within_the_largest_file() -> None:
    rng = random.Random(7)
    sizes = {f"feed-{i}": int(rng.lognormvariate(11, 1.3)) for i in range(2400)}
    loads = sizes_of(balanced_shards(sizes.items()), sizes)
    assert max(loads) - min(loads) <= max(sizes.values())
    # Dealt out in turn to two workers, as the in-process runner does with keys.
    halves = sum(loads[0::2]), sum(loads[1::2])
    assert abs(halves[0] - halves[1]) / sum(loads) < 0.02


def test_the_shards_do_not_depend_on_the_listing_order() -> None:
    files = [(f"f{i}", (i * 37) % 101) for i in range(500)]
    shuffled = files[:]
    random.Random(1).shuffle(shuffled)
    assert balanced_shards(files) == balanced_shards(shuffled)
