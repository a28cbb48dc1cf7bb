"""Inputs that used to hang or sink a run: FIFOs, symlink loops, non-UTF-8 names, paths typed two ways,
articles that fail a late stage, and records Arrow rejects.

Everything is real: FIFOs made with `os.mkfifo`, symlink loops on disk, file names made of bytes,
runs of the CLI whose Parquet output is read back with pyarrow and DuckDB. What could hang runs in
a forked child under a timeout, so that a regression fails the test instead of stopping the suite.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main
from tests.conftest import PROJECT, sql
from transforms import enrich
from transforms.enrich import identify_article
from transforms.io.parquet import ParquetSettings, convert_records, records_to_table
from transforms.io.staging import WritePartitionedParquet
from transforms.io.window import WindowFileSpec, commit_pane
from transforms.language import LanguageDetector
from transforms.normalize import normalize_entry
from transforms.read import ReadSources
from transforms.read_files import expand_pattern, pattern_as_text, read_file
from transforms.read_outputs import DEAD_LETTERS, FETCHES
from transforms.read_settings import ReadSettings
from transforms.schema import (
    ARTICLE_SCHEMA,
    DEAD_LETTER_SCHEMA,
    FEED_FETCH_SCHEMA,
    RunInfo,
    Stage,
    entry_ref,
    failed_article,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RUN = RunInfo("hostile-run", NOW, "0.1.0")
BAD_NAME = b"bad\xff name.xml"  # not UTF-8: Linux file names are bytes
BAD_NAME_SHOWN = "bad\\xff name.xml"  # how `source` shows it (backslashreplace)


def rss(title: str, guid: str, link: str | None = None, body: str = "A short body of text.") -> str:
    link_element = f"<link>{link}</link>" if link else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>T</title>'
        f"<item><title>{title}</title>{link_element}<guid isPermaLink='false'>{guid}</guid>"
        f"<description>{body}</description></item></channel></rss>"
    )


def bounded(function: Callable[[], Any], seconds: float = 60) -> Any:
    """`function()` in a forked child; fails (instead of hanging the suite) when it takes longer."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        try:
            results.put(("ok", function()))
        except BaseException as error:  # reported to the parent, which fails the test
            results.put(("error", repr(error)))

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        status, value = results.get(timeout=seconds)
    except Exception:
        process.kill()
        process.join()
        pytest.fail(f"still running after {seconds} s: it hangs")
    process.join(timeout=10)
    assert status == "ok", value
    return value


def outputs_of(path: str) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = {"entries": [], FETCHES: [], DEAD_LETTERS: []}
    for output in read_file(path, ReadSettings(), datetime.now(UTC), time.monotonic()):
        if isinstance(output, beam.pvalue.TaggedOutput):
            got[output.tag].append(output.value)
        else:
            got["entries"].append(output)
    return got


def expand_and_read(pattern: str) -> dict[str, dict[str, Any]]:
    """Every file a pattern names, read: its fetch row's fields by file name."""
    rows = {}
    for path in expand_pattern(pattern):
        (row,) = outputs_of(path)[FETCHES]
        rows[Path(row["source"]).name] = {k: row.get(k) for k in ("outcome", "error_type", "entries")}
    return rows


# --- 1. FIFOs and symlink loops -------------------------------------------------------------------


def test_a_fifo_among_the_inputs_is_skipped_with_a_fetch_row_and_does_not_hang(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.xml").write_text(rss("Kept", "g-1", "https://e.example/1"), encoding="utf-8")
    os.mkfifo(folder / "pipe.xml")  # nobody ever writes to it: opening it to read blocks for ever

    rows = bounded(lambda: expand_and_read(str(folder)))
    assert rows["good.xml"] == {"outcome": "ok", "error_type": None, "entries": 1}
    assert rows["pipe.xml"] == {"outcome": "skipped", "error_type": "not_a_regular_file", "entries": 0}

    # Named directly, the FIFO gives the same row and nothing else; the message says what it is.
    named = bounded(lambda: outputs_of(str(folder / "pipe.xml")))
    (fifo_row,) = named[FETCHES]
    assert (fifo_row["outcome"], fifo_row["error_type"]) == ("skipped", "not_a_regular_file")
    assert "a FIFO (named pipe), not a regular file" in fifo_row["message"]
    assert named["entries"] == [] and named[DEAD_LETTERS] == []


def test_symlink_loops_end_and_every_file_is_listed_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (folder / "top.xml").write_text(rss("Top", "t"), encoding="utf-8")
    (folder / "sub" / "deep.xml").write_text(rss("Deep", "d"), encoding="utf-8")
    (tmp_path / "elsewhere" / "linked.xml").write_text(rss("Linked", "l"), encoding="utf-8")
    # Three loops: without a visited set the walk doubles at every level until the kernel's
    # 40-link limit, 3^40 paths.
    (folder / "self").symlink_to(".")
    (folder / "sub" / "up").symlink_to("..")
    (folder / "sub" / "again").symlink_to(folder)
    (folder / "outside").symlink_to(tmp_path / "elsewhere")  # a link out of the folder is followed

    listed = bounded(lambda: sorted(expand_pattern(str(folder))), seconds=30)
    assert [Path(p).relative_to(folder).as_posix() for p in listed] == [
        "outside/linked.xml",
        "sub/deep.xml",
        "top.xml",
    ]
    globbed = bounded(lambda: sorted(expand_pattern(f"{folder}/**/*.xml")), seconds=30)
    assert globbed == listed


def test_globs_keep_their_meaning(tmp_path: Path) -> None:
    """The loop-safe matcher matches as Python's glob: `*` within a name, `**` across, no hidden names."""
    for name in ("a.xml", "b.rss", ".hidden.xml", "d/c.xml", "d/e/f.xml", ".h/g.xml", "x[1].xml"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x", encoding="utf-8")

    def names(pattern: str) -> list[str]:
        return [Path(p).relative_to(tmp_path).as_posix() for p in expand_pattern(f"{tmp_path}/{pattern}")]

    assert names("*.xml") == ["a.xml", "x[1].xml"]
    assert names("**/*.xml") == ["a.xml", "d/c.xml", "d/e/f.xml", "x[1].xml"]
    assert names("d/**") == ["d/c.xml", "d/e/f.xml"]
    assert names("*/c.xml") == ["d/c.xml"]
    assert names("[ab].*") == ["a.xml", "b.rss"]
    assert names("x[[]1].xml") == ["x[1].xml"]
    assert names(".h/*.xml") == [".h/g.xml"]
    with pytest.raises(FileNotFoundError, match="no input matches"):
        list(expand_pattern(f"{tmp_path}/*.json"))


# --- 2. a file name that is not UTF-8 ----------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_its_name_survives_arrow(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.xml").write_text(rss("Good", "g", "https://e.example/good"), encoding="utf-8")
    with open(os.path.join(os.fsencode(folder), BAD_NAME), "w", encoding="utf-8") as stream:
        stream.write(rss("Badly named", "b", "https://e.example/bad"))
    # A name that reads like an escape is kept apart from the escaped one: text maps back to one file.
    (folder / "lit\\xff name.xml").write_text(rss("Literal", "l", "https://e.example/lit"), encoding="utf-8")
    assert [Path(p).name for p in expand_pattern(str(folder))] == [
        BAD_NAME_SHOWN,
        "good.xml",
        "lit\\x5cxff name.xml",
    ]
    # Given on the command line (bytes Python decodes with surrogateescape), it is found the same way.
    typed = os.fsdecode(os.path.join(os.fsencode(folder), BAD_NAME))
    assert [Path(p).name for p in expand_pattern(pattern_as_text(typed))] == [BAD_NAME_SHOWN]

    with Pipeline(runner=FnApiRunner()) as p:
        entries, fetch_parts, dead, _states = p | beam.Create([str(folder)]) | ReadSources()
        fetches = fetch_parts | "AllFetchRows" >> beam.Flatten()
        assert_that(
            entries | "Titles" >> beam.Map(lambda e: (Path(e["source"]).name, e["title"])),
            equal_to(
                [("good.xml", "Good"), (BAD_NAME_SHOWN, "Badly named"), ("lit\\x5cxff name.xml", "Literal")]
            ),
            label="BothFilesRead",
        )
        assert_that(
            fetches | "Rows" >> beam.Map(lambda r: (Path(r["source"]).name, r["outcome"], r["entries"])),
            equal_to([("good.xml", "ok", 1), (BAD_NAME_SHOWN, "ok", 1), ("lit\\x5cxff name.xml", "ok", 1)]),
            label="FetchRows",
        )
        assert_that(dead, equal_to([]), label="NoDeadLetters")
        assert_that(
            fetches | "ToArrow" >> beam.Map(lambda r: records_to_table([r], FEED_FETCH_SCHEMA).num_rows),
            equal_to([1, 1, 1]),
            label="RowsConvert",
        )


@pytest.mark.e2e
def test_a_run_over_a_fifo_a_symlink_loop_and_a_non_utf8_name_ends_and_commits(tmp_path: Path) -> None:
    """`python -m pipeline run` on such a folder, in its own process under a timeout."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.xml").write_text(rss("Good", "g", "https://e.example/good"), encoding="utf-8")
    with open(os.path.join(os.fsencode(folder), BAD_NAME), "w", encoding="utf-8") as stream:
        stream.write(rss("Badly named", "b", "https://e.example/bad"))
    os.mkfifo(folder / "pipe.xml")
    (folder / "loop").symlink_to(".")
    output = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(folder), "--output", str(output)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert completed.returncode == 0, completed.stderr
    fetches = {Path(r["source"]).name: r for r in read_back(output, "feed_fetches")}
    assert {name: r["outcome"] for name, r in fetches.items()} == {
        "good.xml": "ok",
        BAD_NAME_SHOWN: "ok",
        "pipe.xml": "skipped",
    }
    titles = {Path(a["source"]).name: a["title"] for a in read_back(output, "articles")}
    assert titles == {"good.xml": "Good", BAD_NAME_SHOWN: "Badly named"}


# --- 3. one file, two spellings ------------------------------------------------------------------


def test_one_file_read_through_a_relative_and_an_absolute_path_gets_one_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "local.xml").write_text(rss("No link", "entry-7"), encoding="utf-8")
    (tmp_path / "alias").symlink_to(tmp_path / "feeds")
    monkeypatch.chdir(tmp_path)

    def article_id(path: str) -> tuple[str, str]:
        (entry,) = outputs_of(path)["entries"]
        article = identify_article(normalize_entry(entry, NOW))
        return article["article_id"], article["article_id_source"]

    spellings = [
        "feeds/local.xml",
        "./feeds//local.xml",
        str(tmp_path / "feeds" / "local.xml"),
        "alias/local.xml",
    ]
    ids = {article_id(path) for path in spellings}
    assert len(ids) == 1
    assert ids.pop()[1] == "entry_id"
    (entry,) = outputs_of("feeds/local.xml")["entries"]
    assert entry["source"] == "feeds/local.xml"  # `source` stays as typed


@pytest.mark.e2e
def test_a_second_run_through_the_other_spelling_stores_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "local.xml").write_text(rss("No link", "entry-7"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "out"
    assert main(["run", "--input", "feeds/local.xml", "--output", str(output), "--run-id", "relative"]) == 0
    absolute = str(tmp_path / "feeds" / "local.xml")
    assert main(["run", "--input", absolute, "--output", str(output), "--run-id", "absolute"]) == 0

    rows = ds.dataset(output / "feed_fetches", format="parquet", partitioning="hive").to_table().to_pylist()
    second = next(r for r in rows if r["run_id"] == "absolute")
    assert (second["entries"], second["articles_written"], second["already_stored"]) == (1, 0, 1)
    stored = ds.dataset(output / "articles", format="parquet", partitioning="hive").to_table()
    assert stored.num_rows == 1


# --- 4. one entry_ref rule ----------------------------------------------------------------------


def test_every_stage_names_an_entry_the_same_way() -> None:
    linkless = {"source": "s", "source_type": "feed", "ordinal": 3, "title": "t"}
    assert entry_ref(linkless) == "#3"
    assert entry_ref({**linkless, "link": "https://e.example/a"}) == "https://e.example/a"
    assert entry_ref({**linkless, "url": "https://e.example/a", "entry_id": "g"}) == "g"
    letter = failed_article(Stage.ENRICH, ValueError("boom"), linkless)
    assert letter["entry_ref"] == "#3"


def json_feed(items: list[dict[str, Any]]) -> str:
    """A JSON Feed; `json.dumps` escapes a lone surrogate as `\\ud800`, as a broken publisher would."""
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": items})


def read_back(output: Path, dataset: str) -> list[dict[str, Any]]:
    relation = sql(f"SELECT * FROM read_parquet('{output}/{dataset}/**/*.parquet', hive_partitioning = true)")
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


@pytest.mark.e2e
def test_entries_failing_late_are_dead_letters_in_the_books_and_the_run_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run (one run costs seconds) with an entry of each kind that used to sink it:

    - a link-less entry whose language detection fails (its dead letter must carry a ref, `#1`);
    - an article with a word count beyond int32, which passes every stage but the Arrow conversion;
    - an entry with lone surrogates (JSON's `\\ud800`), which Beam (sampling sizes) and Arrow reject.
    No real input makes the detector raise or counts 2^31 words: those two faults are injected into
    the real stages. The surrogates are real input.
    """
    original_detect, original_count = LanguageDetector.detect, enrich.count_words

    def detect(self: LanguageDetector, title: str | None, text: str | None, declared: str | None) -> Any:
        if title == "Undetectable":
            raise RuntimeError("the detector failed")
        return original_detect(self, title, text, declared)

    monkeypatch.setattr(LanguageDetector, "detect", detect)
    monkeypatch.setattr(
        enrich, "count_words", lambda text: 2**40 if "unwritable" in text else original_count(text)
    )
    feed = tmp_path / "feed.json"
    items: list[dict[str, Any]] = [
        {"id": "ok-0", "url": "https://e.example/ok", "title": "Fine", "content_text": "The council met."},
        {"title": "Undetectable", "content_text": "An entry with neither an id nor a link."},
        {
            "id": "big-2",
            "url": "https://e.example/big",
            "title": "Big",
            "content_text": "An unwritable count.",
        },
        {
            "id": "s-3",
            "url": "https://e.example/s",
            "title": "Broken \ud800 title",
            "content_text": "The council met on Tuesday evening to approve the budget.",
            "authors": [{"name": "B\udcffo"}],
        },
    ]
    feed.write_text(json_feed(items), encoding="utf-8")
    output = tmp_path / "out"
    assert main(["run", "--input", str(feed), "--output", str(output)]) == 0

    letters = sorted(read_back(output, "dead_letters"), key=lambda d: d["stage"])
    assert [(d["stage"], d["error_type"], d["entry_ref"]) for d in letters] == [
        ("detect_language", "RuntimeError", "#1"),
        ("write", "ArrowInvalid", "big-2"),
    ]
    assert (
        "articles column `word_count`" in letters[1]["message"] and "'title': 'Big'" in letters[1]["excerpt"]
    )
    (row,) = read_back(output, "feed_fetches")
    assert (row["entries"], row["articles_written"], row["dead_letters"]) == (4, 2, 2)
    stored = sorted((a["title"], list(a["authors"])) for a in read_back(output, "articles"))
    assert stored == [("Broken \ufffd title", ["B\ufffdo"]), ("Fine", [])]


# --- 5. the write stage's dead letters ---------------------------------------------------------------


def article(number: int, **values: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "article_id": f"id-{number}",
        "source": "feed-a",
        "source_type": "feed",
        "entry_id": f"e-{number}",
        "url": f"https://e.example/{number}",
        "title": f"Title {number}",
        "ordinal": number,
        "ingest_date": "2026-11-29",
        "language": "en",
        "version": 1,
    }
    record.update(values)
    return record


BAD_ARTICLES = [
    article(1, title="lone \ud800 surrogate"),
    article(2, published_offset_minutes=40_000),  # int16
    article(3, published_at="yesterday"),  # a string where a timestamp belongs
    article(4, authors=["Ann", "B\udcffo"]),
]
# Beam itself fails on a lone surrogate (it samples element sizes by encoding them): in a pipeline,
# only values that Beam carries and Arrow rejects.
BAD_IN_PIPELINE = [
    article(2, published_offset_minutes=40_000),
    article(3, published_at="yesterday"),
    article(5, word_count=2**40),
]


def test_convert_records_keeps_the_good_and_names_the_bad_column() -> None:
    good = [article(n) for n in range(10, 14)]
    table, written, rejected = convert_records([good[0], *BAD_ARTICLES, *good[1:]], ARTICLE_SCHEMA)
    assert table.column("article_id").to_pylist() == ["id-10", "id-11", "id-12", "id-13"]
    assert written == good
    assert [(r.record["article_id"], r.column) for r in rejected] == [
        ("id-1", "title"),
        ("id-2", "published_offset_minutes"),
        ("id-3", "published_at"),
        ("id-4", "authors"),
    ]
    fast, _, none = convert_records(good, ARTICLE_SCHEMA)
    assert fast.num_rows == 4 and none == []


def test_a_record_arrow_rejects_becomes_a_write_dead_letter(tmp_path: Path) -> None:
    output = tmp_path / "out"
    records = [article(10), *BAD_IN_PIPELINE, article(11)]
    with Pipeline(runner=FnApiRunner()) as p:
        staged = (
            p
            | beam.Create(records)
            | WritePartitionedParquet(
                str(output),
                "articles",
                ARTICLE_SCHEMA,
                ("ingest_date", "language"),
                "r1",
                rejects_to_dead_letters=True,
            )
        )
        assert_that(
            staged.dead_letters
            | "Fields"
            >> beam.Map(lambda d: (d["stage"], d["entry_ref"], d["source"], d["message"].split(":")[0])),
            equal_to(
                [
                    ("write", "e-2", "feed-a", "articles column `published_offset_minutes`"),
                    ("write", "e-3", "feed-a", "articles column `published_at`"),
                    ("write", "e-5", "feed-a", "articles column `word_count`"),
                ]
            ),
            label="WriteDeadLetters",
        )
        assert_that(
            staged.dead_letters
            | "Convert" >> beam.Map(lambda d: records_to_table([RUN.stamp(d)], DEAD_LETTER_SCHEMA).num_rows),
            equal_to([1, 1, 1]),
            label="DeadLettersConvert",
        )
        assert_that(
            staged.files | "Rows" >> beam.Map(lambda f: (f.rows, f.rows_per_source)),
            equal_to([(2, {"feed-a": 2})]),
            label="GoodRowsStaged",
        )
    (path,) = (output / "_staging" / "r1").rglob("*.parquet")
    assert pq.read_table(path).column("article_id").to_pylist() == ["id-10", "id-11"]


def test_a_dataset_the_run_must_write_whole_fails_naming_the_column(tmp_path: Path) -> None:
    """Fetch rows are never dropped into dead letters (they carry the books): the bundle fails, clearly."""
    rows = [{"source": "feed-a", "source_type": "feed", "entries": 2**40, "ingest_date": "2026-11-29"}]
    expected = r"1 feed_fetches record\(s\) cannot be written, .*source feed-a.*`entries`"
    with pytest.raises(Exception, match=expected), Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | beam.Create(rows)
            | WritePartitionedParquet(
                str(tmp_path), "feed_fetches", FEED_FETCH_SCHEMA, ("ingest_date",), "r1"
            )
        )


def test_the_windowed_writer_writes_a_dead_letter_for_a_rejected_record(tmp_path: Path) -> None:
    spec = WindowFileSpec(
        str(tmp_path),
        "articles",
        ARTICLE_SCHEMA,
        ("ingest_date", "language"),
        "s1",
        60,
        ParquetSettings(),
        rejects_to_dead_letters=True,
    )
    records = [
        {**article(10), "run_id": "s1", "pipeline_version": "0.1.0"},
        {**BAD_ARTICLES[0], "run_id": "s1"},
    ]
    start = int(NOW.timestamp())
    paths = commit_pane(spec, "ingest_date=2026-11-29/language=en", start, records).paths
    assert pq.read_table(paths[0]).column("article_id").to_pylist() == ["id-10"]
    letters = ds.dataset(tmp_path / "dead_letters", format="parquet", partitioning="hive").to_table()
    (letter,) = letters.to_pylist()
    assert (letter["stage"], letter["entry_ref"], letter["ingest_date"], letter["run_id"]) == (
        "write",
        "e-1",
        "2026-11-29",
        "s1",
    )
    assert letters.schema.field("failed_at").type == pa.timestamp("us", tz="UTC")
