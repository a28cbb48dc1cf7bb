"""Reading files: shards of about equal bytes (the workers stay equally busy), and the size cap."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam

from transforms.read_files import FILES_PER_SHARD, MIN_FILE_SHARDS, balanced_shards, read_file
from transforms.read_outputs import DEAD_LETTERS, FETCHES
from transforms.read_settings import ReadSettings


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


def test_a_file_over_the_size_cap_is_a_clear_error_and_a_dead_letter(tmp_path: Path) -> None:
    feed = tmp_path / "big.xml"
    feed.write_text(
        "<rss version='2.0'><channel><title>T</title>" + "<!-- padding -->" * 20 + "</channel></rss>"
    )
    size = feed.stat().st_size

    def outputs(cap: int) -> dict[str, list[Any]]:
        got: dict[str, list[Any]] = {"entries": [], FETCHES: [], DEAD_LETTERS: []}
        for output in read_file(
            str(feed), ReadSettings(max_file_bytes=cap), datetime.now(UTC), time.monotonic()
        ):
            if isinstance(output, beam.pvalue.TaggedOutput):
                got[output.tag].append(output.value)
            else:
                got["entries"].append(output)
        return got

    over = outputs(size - 1)
    (row,) = over[FETCHES]
    assert (row["outcome"], row["error_type"]) == ("error", "unreadable")
    assert f"larger than the {size - 1}-byte cap" in row["message"]
    assert len(over[DEAD_LETTERS]) == 1
    exactly = outputs(size)  # a file of exactly the cap is read
    assert [r["outcome"] for r in exactly[FETCHES]] == ["empty"]
    assert exactly[DEAD_LETTERS] == []


def _read(path: Path, settings: ReadSettings | None = None) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = {"entries": [], FETCHES: [], DEAD_LETTERS: []}
    for output in read_file(str(path), settings or ReadSettings(), datetime.now(UTC), time.monotonic()):
        if isinstance(output, beam.pvalue.TaggedOutput):
            got[output.tag].append(output.value)
        else:
            got["entries"].append(output)
    return got


def test_a_truncated_feed_file_is_a_dead_letter_with_the_parsers_message(tmp_path: Path) -> None:
    feed = tmp_path / "cut.xml"
    feed.write_bytes(b"<rss><channel><title>broken")
    got = _read(feed)
    (row,) = got[FETCHES]
    assert (row["outcome"], row["error_type"], row["entries"]) == ("not_a_feed", "malformed_feed", 0)
    (letter,) = got[DEAD_LETTERS]
    assert (letter["stage"], letter["error_type"], letter["entry_ref"]) == ("parse", "malformed_feed", None)
    assert letter["message"] == row["message"]
    assert "SAXParseException" in letter["message"] and "no element found" in letter["message"]
    assert letter["excerpt"] == "<rss><channel><title>broken"
    assert got["entries"] == []


def test_a_json_feed_without_its_version_url_is_read_and_the_fetch_row_says_so(tmp_path: Path) -> None:
    feed = tmp_path / "feed.json"
    feed.write_text('{"version": "1.1", "title": "T", "items": [{"id": "1", "title": "One"}]}')
    got = _read(feed)
    (row,) = got[FETCHES]
    assert (row["outcome"], row["feed_format"], row["entries"]) == ("ok_with_warnings", "json11", 1)
    assert row["error_type"] == "json_feed_version"
    assert "'1.1'" in row["message"]
    assert got[DEAD_LETTERS] == []
    assert [e["title"] for e in got["entries"]] == ["One"]
