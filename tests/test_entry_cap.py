"""One feed's cost is bounded: entries over `fetch.max_entries_per_feed` are counted and dead-lettered.

A feed's entries are processed by one worker inside the fused read stage, so a 200,000-entry feed
held a worker for 941 s (benchmarks/bench_big_feed.py has the figures). The cap keeps the first
entries; the rest are counted in `feed_fetches.entries_cut` and named in one `too_many_entries`
dead letter, and the books still balance. Checked on small feeds with a small cap: parsing, the
reader's outputs, a real `newsbeam run` read back with DuckDB, and a poll of the streaming job
against a real HTTP server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import pytest
import yaml
from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from benchmarks.bench_big_feed import big_rss_feed
from tests.conftest import PROJECT
from tests.feedserver import FeedServer, Reply
from transforms.accounting import unaccounted_entries
from transforms.feed_state import FeedSource
from transforms.fetch import FetchSettings
from transforms.parse import parse_input
from transforms.poll import PollFeeds
from transforms.read import ReadSettings
from transforms.read_files import read_file
from transforms.read_outputs import DEAD_LETTERS, FETCHES
from transforms.schema import Outcome


def test_the_first_entries_are_read_and_the_rest_counted() -> None:
    parsed = parse_input(big_rss_feed(25), "big.xml", max_entries=10)
    assert [e["title"] for e in parsed.entries] == [f"Entry number {i}" for i in range(10)]
    assert [e["ordinal"] for e in parsed.entries] == list(range(10))
    assert parsed.entries_cut == 15
    assert (parsed.outcome, parsed.error_type) == (Outcome.OK_WITH_WARNINGS, "too_many_entries")
    assert (
        parsed.message
        == "15 of 25 entries not read: at most 10 are read from one feed (max_entries_per_feed)"
    )
    whole = parse_input(big_rss_feed(25), "big.xml", max_entries=25)
    assert (whole.outcome, whole.entries_cut, len(whole.entries)) == (Outcome.OK, 0, 25)


def test_a_json_feed_is_capped_the_same_way() -> None:
    items = [{"id": str(i), "title": f"Item {i}"} for i in range(7)]
    body = json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": items}).encode()
    parsed = parse_input(body, "feed.json", max_entries=3)
    assert [e["entry_id"] for e in parsed.entries] == ["0", "1", "2"]
    assert (parsed.entries_cut, parsed.error_type) == (4, "too_many_entries")


def test_a_bozo_feed_keeps_its_parser_warning_beside_the_cut() -> None:
    body = big_rss_feed(5).replace(b"<title>Big</title>", b"<title>Big &bogus;</title>")
    parsed = parse_input(body, "big.xml", max_entries=2)
    assert (parsed.outcome, parsed.error_type, parsed.entries_cut) == (
        Outcome.OK_WITH_WARNINGS,
        "SAXParseException",
        3,
    )
    assert (
        parsed.message
        and parsed.message.startswith("3 of 5 entries not read")
        and "undefined entity" in parsed.message
    )


def test_the_reader_counts_the_cut_entries_and_dead_letters_them(tmp_path: Path) -> None:
    feed = tmp_path / "big.xml"
    feed.write_bytes(big_rss_feed(25))
    got: dict[str, list[Any]] = {"entries": [], FETCHES: [], DEAD_LETTERS: []}
    settings = ReadSettings(max_entries_per_feed=10)
    for output in read_file(str(feed), settings, datetime.now(UTC), time.monotonic()):
        if isinstance(output, beam.pvalue.TaggedOutput):
            got[output.tag].append(output.value)
        else:
            got["entries"].append(output)
    assert len(got["entries"]) == 10
    (row,) = got[FETCHES]
    assert (row["outcome"], row["entries"], row["entries_cut"]) == ("ok_with_warnings", 25, 15)
    (letter,) = got[DEAD_LETTERS]
    assert (letter["stage"], letter["error_type"], letter["entry_ref"]) == ("parse", "too_many_entries", None)
    assert letter["source"] == str(feed) and letter["message"].startswith("15 of 25 entries not read")
    # Ten written, fifteen cut: nothing unaccounted, so CommitRun publishes the run.
    assert unaccounted_entries({**row, "articles_written": 10}) == 0
    assert unaccounted_entries({**row, "articles_written": 9}) == 1


def test_a_run_with_a_small_cap_writes_the_first_entries_and_balances_its_books(tmp_path: Path) -> None:
    feed = tmp_path / "big.xml"
    feed.write_bytes(big_rss_feed(40))
    config = tmp_path / "newsbeam.yaml"
    output = tmp_path / "out"
    config.write_text(yaml.safe_dump({"fetch": {"max_entries_per_feed": 12}, "state": {"enabled": False}}))
    command = ["run", "--config", str(config), "--input", str(feed), "--output", str(output)]
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", *command],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "entries found:     40 (28 not read: over fetch.max_entries_per_feed)" in completed.stdout

    def rows(dataset: str) -> list[dict[str, Any]]:
        relation = duckdb.sql(
            f"SELECT * FROM read_parquet('{output}/{dataset}/**/*.parquet', hive_partitioning = true)"
        )
        assert relation is not None
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]

    (fetch,) = rows("feed_fetches")
    assert (fetch["outcome"], fetch["error_type"]) == ("ok_with_warnings", "too_many_entries")
    assert (fetch["entries"], fetch["entries_cut"], fetch["articles_written"]) == (40, 28, 12)
    assert fetch["duplicates"] == fetch["dead_letters"] == fetch["already_stored"] == 0
    assert sorted(a["url"] for a in rows("articles")) == sorted(
        f"https://big.example/a/{i}" for i in range(12)
    )
    (letter,) = rows("dead_letters")
    assert (letter["stage"], letter["error_type"], letter["source"]) == (
        "parse",
        "too_many_entries",
        str(feed),
    )


def test_a_poll_of_the_streaming_job_is_capped_too() -> None:
    with FeedServer() as server:
        url = server.route("/big", Reply(200, big_rss_feed(9), {"Content-Type": "application/rss+xml"}))
        settings = FetchSettings(allow_private_hosts=True, max_attempts=1)
        with Pipeline(runner=FnApiRunner()) as p:
            entries, fetches, dead = (
                p | beam.Create([0]) | PollFeeds((FeedSource(url),), 60, 60, settings, max_entries_per_feed=4)
            )
            assert_that(entries | beam.Map(lambda e: e["ordinal"]), equal_to([0, 1, 2, 3]), label="FirstFour")
            assert_that(
                fetches | beam.Map(lambda r: (r["entries"], r["entries_cut"], r["error_type"])),
                equal_to([(9, 5, "too_many_entries")]),
                label="CountedInTheFetchRow",
            )
            assert_that(
                dead | beam.Map(lambda d: d["error_type"]), equal_to(["too_many_entries"]), label="OneLetter"
            )


def test_past_the_cap_the_strict_parser_counts_entries_without_reading_them() -> None:
    atom = b'<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>' + b"".join(
        b"<entry><title>E%d</title><link href='https://e.example/%d'/>"
        b"<author><name>A</name></author></entry>" % (i, i)
        for i in range(30)
    )
    parsed = parse_input(atom + b"</feed>", "atom.xml", max_entries=7)
    assert [e["title"] for e in parsed.entries] == [f"E{i}" for i in range(7)]
    assert parsed.entries_cut == 23
    assert parsed.error_type == "too_many_entries"  # well-formed: the only warning is the cut


def test_a_feed_cut_short_after_the_cap_is_counted_by_the_loose_parser() -> None:
    # The strict parser counts past the cap, then fails at the truncation; feedparser starts over
    # with its loose parser, which reads every entry: the cut is counted from those.
    body = big_rss_feed(25)
    truncated = body[: body.index(b"<item><title>Entry number 20<") + 20]
    parsed = parse_input(truncated, "cut.xml", max_entries=10)
    whole = parse_input(truncated, "cut.xml")
    assert len(whole.entries) == 21  # the last one cut in its title
    assert (len(parsed.entries), parsed.entries_cut) == (10, 11)
    assert parsed.error_type == "SAXParseException"


def test_a_cap_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        parse_input(big_rss_feed(2), "f", max_entries=0)
