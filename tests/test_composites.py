"""Each composite PTransform on the in-process runner, with labelled checks on good and dead-letter output."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from pipeline.runners import make_runner, runner_options
from transforms.accounting import COUNT_FIELDS, CountPerSource
from transforms.dedupe import DeduplicateArticles, SpillRefs
from transforms.enrich import EnrichArticles, IdentifyArticles, content_hash, make_article_id
from transforms.io.staging import StagedFile, WritePartitionedParquet
from transforms.io.versions import INDEX_SCHEMA
from transforms.language import DetectLanguage, LanguageSettings
from transforms.normalize import NormalizeArticles
from transforms.outputs import ArticleOutputs
from transforms.process import ProcessArticles
from transforms.read import ReadSources
from transforms.schema import RunInfo

PROJECT = Path(__file__).resolve().parent.parent
SEEDS = PROJECT / "seeds"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RUN = RunInfo("test-run", NOW, "0.1.0")
BROKEN_JSON = b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"title": "cut off'


def pipeline() -> BeamTestPipeline:
    # The in-process runner: Beam's DirectRunner may first try to download Prism.
    return BeamTestPipeline(runner=FnApiRunner())


def pipeline_on(runner: str) -> BeamTestPipeline:
    """A test pipeline on the in-process runner or on Prism (the local binary, never a download)."""
    if runner != "prism":
        return pipeline()
    from tests.test_prism_batch import prism_binary

    prism_binary()  # fails in CI, skips elsewhere, when Prism is not built
    return BeamTestPipeline(runner=make_runner(runner), options=PipelineOptions(runner_options(runner)))


def check(predicate: Callable[[list[Any]], None]) -> Callable[[Iterable[Any]], None]:
    """A matcher from a function that asserts on the whole output (as a list)."""

    def matcher(actual: Iterable[Any]) -> None:
        try:
            predicate(list(actual))
        except AssertionError as error:
            raise BeamAssertException(str(error)) from error

    return matcher


def _expect(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert actual.get(key) == value, f"{key}: {actual.get(key)!r} != {value!r}"


def raw_entry(ordinal: int, **values: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": "https://example.com/feed",
        "source_type": "feed",
        "ordinal": ordinal,
        "feed_title": "Example",
        "feed_link": "https://example.com/",
        "feed_language": "en",
        "entry_id": f"g-{ordinal}",
        "link": f"https://example.com/{ordinal}?utm_source=rss",
        "title": f"Title {ordinal}",
        "summary": None,
        "content": "<p>The council approved the budget.</p><script>x()</script>",
        "content_is_html": True,
        "entry_language": None,
        "authors": [],
        "tags": [],
        "published": "Mon, 04 Mar 2024 09:15:00 +0200",
        "published_epoch": None,
        "published_field": "published",
        "updated": None,
        "updated_epoch": None,
        "updated_field": None,
    }
    entry.update(values)
    return entry


def test_normalize_articles() -> None:
    entries = [
        raw_entry(0),
        raw_entry(1, title="<b>Bold</b> &amp;amp; plain", link="/relative"),
        raw_entry(2, title=" ", summary="<p></p>", content=None),
    ]
    with pipeline() as p:
        good, dead = p | beam.Create(entries) | NormalizeArticles(NOW)
        assert_that(
            good | "GoodFields" >> beam.Map(lambda a: (a["title"], a["text"], a["canonical_url"])),
            equal_to(
                [
                    ("Title 0", "The council approved the budget.", "https://example.com/0"),
                    ("Bold & plain", "The council approved the budget.", None),
                ]
            ),
            label="NormalizedArticles",
        )
        assert_that(
            good | "Times" >> beam.Map(lambda a: (a["published_at"], a["published_offset_minutes"])),
            equal_to([(datetime(2024, 3, 4, 7, 15, tzinfo=UTC), 120)] * 2),
            label="NormalizedTimes",
        )
        assert_that(
            dead
            | "DeadFields"
            >> beam.Map(lambda d: (d["stage"], d["error_type"], d["source"], d["entry_ref"], d["message"])),
            equal_to(
                [
                    (
                        "normalize",
                        "no_content",
                        "https://example.com/feed",
                        "g-2",
                        "the entry has neither a title nor any text",
                    )
                ]
            ),
            label="NormalizeDeadLetters",
        )
        assert_that(
            dead | "Excerpts" >> beam.Map(lambda d: "'title': ' '" in d["excerpt"]),
            equal_to([True]),
            label="DeadLetterExcerpt",
        )


def article(title: str | None, text: str | None, declared: Any = None, **values: Any) -> dict[str, Any]:
    record = {
        "source": "feed.xml",
        "source_type": "feed",
        "ordinal": 0,
        "entry_id": title,
        "url": None,
        "canonical_url": None,
        "title": title,
        "text": text,
        "language_declared_raw": declared,
    }
    record.update(values)
    return record


def test_detect_language() -> None:
    articles = [
        article("Der Stadtrat hat den Haushalt beschlossen", "Nach langer Debatte am Dienstagabend.", "en"),
        article("New bridge opens", None, "en-GB"),
        article("Le conseil municipal a approuvé le budget", "Après un long débat mardi soir.", "fr"),
        article("12345", None, None),
        article("Broken declaration", None, 5),  # a declared language that is not text
    ]
    with pipeline() as p:
        good, dead = p | beam.Create(articles) | DetectLanguage()
        assert_that(
            good
            | "LanguageFields"
            >> beam.Map(lambda a: (a["title"], a["language"], a["language_source"], a["language_declared"])),
            equal_to(
                [
                    ("Der Stadtrat hat den Haushalt beschlossen", "de", "detected", "en"),
                    ("New bridge opens", "en", "declared", "en"),
                    ("Le conseil municipal a approuvé le budget", "fr", "agreed", "fr"),
                    ("12345", "und", "none", None),
                ]
            ),
            label="DetectedLanguages",
        )
        assert_that(
            good | "NoRawDeclaration" >> beam.Map(lambda a: "language_declared_raw" in a),
            equal_to([False] * 4),
            label="RawDeclarationDropped",
        )
        assert_that(
            dead | "DeadFields" >> beam.Map(lambda d: (d["stage"], d["error_type"], d["entry_ref"])),
            equal_to([("detect_language", "AttributeError", "Broken declaration")]),
            label="DetectDeadLetters",
        )


def test_enrich_articles() -> None:
    articles = [
        article(
            "Bridge opens",
            "The council approved it.",
            url="https://www.example.com/a?utm_source=x",
            canonical_url="https://www.example.com/a",
        ),
        article(
            "Seed title", "Seed body text.", source="seeds/a.txt", source_type="seed_file", entry_id=None
        ),
        article(5, "A title that is not text.", entry_id="bad"),  # type: ignore[arg-type]
    ]
    with pipeline() as p:
        identified = p | beam.Create(articles) | IdentifyArticles()
        good, enrich_failures = identified.articles | EnrichArticles(RUN)
        dead = (identified.dead_letters, enrich_failures) | beam.Flatten()
        assert_that(
            good
            | "EnrichedFields"
            >> beam.Map(
                lambda a: (
                    a["title"],
                    a["article_id_source"],
                    a["source_domain"],
                    a["word_count"],
                    a["run_id"],
                    a["ingest_date"],
                )
            ),
            equal_to(
                [
                    ("Bridge opens", "url", "example.com", 6, "test-run", "2026-11-29"),
                    ("Seed title", "content", None, 5, "test-run", "2026-11-29"),
                ]
            ),
            label="EnrichedArticles",
        )
        url_id = make_article_id("https://www.example.com/a", "", None, "")[0]
        assert_that(
            good | "Ids" >> beam.Map(lambda a: (a["title"], a["article_id"])),
            check(lambda rows: _expect(dict(rows), {"Bridge opens": url_id})),
            label="UrlId",
        )
        assert_that(
            dead
            | "DeadFields" >> beam.Map(lambda d: (d["stage"], d["error_type"], d["entry_ref"], d["excerpt"])),
            equal_to([("enrich", "AttributeError", "bad", "5")]),
            label="EnrichDeadLetters",
        )


def enriched(source: str, article_id: str, updated: datetime | None, text: str = "Body.") -> dict[str, Any]:
    return {
        "source": source,
        "article_id": article_id,
        "ordinal": 0,
        "title": "T",
        "text": text,
        "summary": None,
        "authors": [],
        "tags": [],
        "published_at": datetime(2024, 3, 4, tzinfo=UTC),
        "updated_at": updated,
        "content_hash": f"h-{source}",
        "ingest_date": "2026-11-29",
        "run_id": RUN.run_id,
    }


class StageAndDeduplicate(beam.PTransform[Any, Any]):
    """Articles staged as the batch pipeline stages them, then deduplicated on their refs."""

    def __init__(self, output: str, partition_keys: tuple[str, ...]) -> None:
        super().__init__()
        self._output, self._keys = output, partition_keys

    def expand(self, articles: Any) -> Any:
        staged = articles | WritePartitionedParquet(
            self._output,
            "articles",
            _article_schema(),
            self._keys,
            RUN.run_id,
            defaults={"version": 1},
            row_refs=SpillRefs(self._output, RUN.run_id),
        )
        return (staged.files, staged.row_refs) | DeduplicateArticles(self._output, RUN.run_id)


def test_deduplicate_articles(tmp_path: Path) -> None:
    """Staged articles deduplicated on their refs: the losers' rows leave the staged files."""
    articles = [
        enriched("feed-a", "id-1", None),
        enriched("feed-b", "id-1", datetime(2024, 3, 5, tzinfo=UTC)),  # the newest version wins
        enriched("feed-c", "id-1", None, text="A longer body than the others."),
        enriched("feed-a", "id-2", None),
        enriched("feed-b", "id-3", None),
        enriched("feed-c", "id-3", None, text="More complete body."),  # more complete, same time
    ]
    output = str(tmp_path / "out")
    with pipeline() as p:
        deduplicated = p | beam.Create(articles) | StageAndDeduplicate(output, ("ingest_date",))
        assert_that(
            deduplicated.files | "Files" >> beam.Map(lambda f: (f.rows, sorted(f.rows_per_source.items()))),
            equal_to([(3, [("feed-a", 1), ("feed-b", 1), ("feed-c", 1)])]),
            label="FilesAfterEdits",
        )
        assert_that(
            deduplicated.files | "Winners" >> beam.FlatMap(lambda f: winners(f.staged_path)),
            equal_to([("id-1", "feed-b", 1), ("id-2", "feed-a", 1), ("id-3", "feed-c", 1)]),
            label="UniqueArticles",
        )
        assert_that(
            deduplicated.duplicates,
            equal_to(
                [
                    {"source": "feed-a", "article_id": "id-1"},
                    {"source": "feed-c", "article_id": "id-1"},
                    {"source": "feed-b", "article_id": "id-3"},
                ]
            ),
            label="DroppedDuplicates",
        )
        assert_that(
            deduplicated.index_rows
            | "IndexRows" >> beam.Map(lambda r: (r["article_id"], r["content_hash"], r["version"])),
            equal_to([("id-1", "h-feed-b", 1), ("id-2", "h-feed-a", 1), ("id-3", "h-feed-c", 1)]),
            label="IndexDelta",
        )
        assert_that(deduplicated.already_stored, equal_to([]), label="NothingStored")
        # An edited file is a copy under a new name; the original stays in staging for a retried bundle.
        assert_that(
            deduplicated.files
            | "Names"
            >> beam.Map(
                lambda f: (
                    f.staged_path.endswith("-edited.parquet"),
                    f.final_path.endswith("-edited.parquet"),
                    Path(f.staged_path.removesuffix("-edited.parquet") + ".parquet").exists(),
                )
            ),
            equal_to([(True, True, True)]),
            label="EditedCopy",
        )


def write_index(output: Path, rows: list[dict[str, Any]]) -> None:
    """A committed version index of `rows` (article_id, content_hash, updated_at, version)."""
    index = output / "_state" / "articles"
    index.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(
            [row | {"run_id": "earlier", "ingest_date": "2026-11-28"} for row in rows], schema=INDEX_SCHEMA
        ),
        index / "part-earlier.parquet",
    )


def test_deduplicate_articles_against_the_store(tmp_path: Path) -> None:
    """Already stored versions leave the staged files; a changed article gets the next version."""
    output = tmp_path / "out"
    write_index(
        output,
        [
            {"article_id": "same", "content_hash": "h-feed-a", "updated_at": None, "version": 1},
            {"article_id": "changed", "content_hash": "h-old", "updated_at": None, "version": 2},
        ],
    )
    articles = [
        enriched("feed-a", "same", None),
        enriched("feed-a", "changed", None),
        enriched("feed-b", "new", None),
    ]
    with pipeline() as p:
        deduplicated = p | beam.Create(articles) | StageAndDeduplicate(str(output), ("ingest_date",))
        assert_that(
            deduplicated.files | "Winners" >> beam.FlatMap(lambda f: winners(f.staged_path)),
            equal_to([("changed", "feed-a", 3), ("new", "feed-b", 1)]),
            label="WrittenVersions",
        )
        assert_that(
            deduplicated.already_stored,
            equal_to([{"source": "feed-a", "article_id": "same"}]),
            label="AlreadyStored",
        )
        assert_that(
            deduplicated.store_snapshot
            | "SnapshotNames" >> beam.Map(lambda files: [Path(f).name for f in files]),
            equal_to([["part-earlier.parquet"]]),
            label="Snapshot",
        )


def identity(entry: dict[str, Any]) -> tuple[str, str]:
    """(article_id, content_hash) of a raw entry as ProcessArticles computes them."""
    canonical = f"https://example.com/{entry['ordinal']}"
    text = "The council approved the budget."
    hashed = content_hash(entry["title"], text)
    return make_article_id(canonical, entry["source"], entry["entry_id"], hashed)[0], hashed


def test_process_articles_marks_stored_revisions_and_drops_none(tmp_path: Path) -> None:
    """Batch: a revision the index holds is marked `already_stored`, not dropped: the sink decides."""
    entries = [raw_entry(0), raw_entry(1), raw_entry(2, title=" ", summary="<p></p>", content=None)]
    stored_id, stored_hash = identity(entries[0])
    changed_id, _ = identity(entries[1])
    output = tmp_path / "out"
    write_index(
        output,
        [
            {"article_id": stored_id, "content_hash": stored_hash, "updated_at": None, "version": 1},
            {"article_id": changed_id, "content_hash": "an older text", "updated_at": None, "version": 1},
        ],
    )
    with pipeline() as p:
        processed = p | beam.Create(entries) | ProcessArticles(RUN, LanguageSettings(), output=str(output))
        assert_that(
            processed.articles
            | "Marks" >> beam.Map(lambda a: (a["title"], a["already_stored"], a["language"], a["run_id"])),
            equal_to([("Title 0", True, "en", RUN.run_id), ("Title 1", False, "en", RUN.run_id)]),
            label="MarkedNotDropped",
        )
        assert_that(
            processed.dead_letters | "DeadStages" >> beam.Map(lambda d: (d["stage"], d["error_type"])),
            equal_to([("normalize", "no_content")]),
            label="AllDeadLetters",
        )
        assert_that(processed.duplicates, equal_to([]), label="NoneDropped")


class ReplaceText(beam.PTransform[Any, Any]):
    """A stand-in full-text stage: records what it was given and replaces each article's text."""

    def expand(self, articles: Any) -> ArticleOutputs:
        replaced = articles | "Replace" >> beam.Map(
            lambda a: {
                **a,
                "text": "A page of twelve words, much longer than the feed's own short text.",
                "given": sorted({"article_id", "content_hash", "already_stored", "url", "title"} & set(a)),
            }
        )
        return ArticleOutputs(replaced, articles | "NoFailures" >> beam.Filter(lambda _: False))


def test_the_full_text_slot_sits_between_the_check_and_detect(tmp_path: Path) -> None:
    """The full-text stage gets checked articles; the hash stays the feed's, the counts are the page's."""
    entry = raw_entry(0)
    expected_id, feed_hash = identity(entry)
    with pipeline() as p:
        processed = (
            p
            | beam.Create([entry])
            | ProcessArticles(RUN, LanguageSettings(), output=str(tmp_path / "out"), full_text=ReplaceText())
        )
        assert_that(
            processed.articles
            | beam.Map(
                lambda a: (a["given"], a["article_id"], a["content_hash"], a["word_count"], a["language"])
            ),
            equal_to(
                [
                    (
                        ["already_stored", "article_id", "content_hash", "title", "url"],
                        expected_id,
                        feed_hash,
                        2 + 13,
                        "en",
                    )
                ]
            ),
        )


def winners(staged_path: str) -> list[tuple[str, str, int]]:
    table = pq.read_table(staged_path, columns=["article_id", "source", "version"])
    return [(r["article_id"], r["source"], r["version"]) for r in table.to_pylist()]


@pytest.fixture
def input_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(SEEDS / "feeds" / "atom_de.xml", folder / "good.xml")
    shutil.copy(SEEDS / "000_c847d24acf547d54.txt", folder / "article.txt")
    (folder / "broken.json").write_bytes(BROKEN_JSON)
    (folder / "empty.xml").write_bytes(b"")
    (folder / "blank.txt").write_bytes(b"\n  \n")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02PK\x03\x04")
    (folder / "README.md").write_text("not an input")  # a folder contributes feeds and seeds only
    return folder


def name(path: str) -> str:
    return Path(path).name


def test_read_sources(input_folder: Path) -> None:
    missing = str(input_folder.parent / "nothing-*.xml")
    with pipeline() as p:
        entries, fetch_parts, dead, _states = p | beam.Create([str(input_folder), missing]) | ReadSources()
        fetches = fetch_parts | "AllFetchRows" >> beam.Flatten()
        assert_that(
            entries | "EntryTitles" >> beam.Map(lambda e: (name(e["source"]), e["source_type"], e["title"])),
            equal_to(
                [
                    ("good.xml", "feed", "Bürgerenergie-Genossenschaft plant drei neue Windräder"),
                    ("good.xml", "feed", "Hallenbad bleibt wegen Sanierung bis zum Herbst geschlossen"),
                    ("good.xml", "feed", "Wochenmarkt zieht auf den neu gestalteten Rathausplatz"),
                    (
                        "article.txt",
                        "seed_file",
                        "The US affirms that elections in Venezuela “do not reflect the will of the people”",
                    ),
                ]
            ),
            label="Entries",
        )
        assert_that(
            fetches
            | "FetchFields"
            >> beam.Map(lambda f: (name(f["source"]), f["outcome"], f["entries"], f.get("error_type"))),
            equal_to(
                [
                    ("good.xml", "ok", 3, None),
                    ("article.txt", "ok", 1, None),
                    ("broken.json", "not_a_feed", 0, "invalid_json"),
                    ("empty.xml", "not_a_feed", 0, "empty_body"),
                    ("blank.txt", "empty", 0, None),
                    ("binary.txt", "error", 0, "undecodable"),
                    ("nothing-*.xml", "error", 0, "no_match"),
                ]
            ),
            label="FetchRows",
        )
        assert_that(
            fetches
            | "FetchSizes" >> beam.Map(lambda f: (name(f["source"]), f.get("bytes"), f.get("feed_format"))),
            check(
                lambda rows: _expect(
                    {n: (b, fmt) for n, b, fmt in rows},
                    {
                        "good.xml": ((input_folder / "good.xml").stat().st_size, "atom10"),
                        "empty.xml": (0, None),
                        "article.txt": ((input_folder / "article.txt").stat().st_size, "text"),
                        "blank.txt": (4, "text"),
                        "nothing-*.xml": (None, None),
                    },
                )
            ),
            label="FetchSizesAndFormats",
        )
        assert_that(
            dead
            | "DeadFields"
            >> beam.Map(lambda d: (name(d["source"]), d["stage"], d["error_type"], d["entry_ref"])),
            equal_to(
                [
                    ("broken.json", "parse", "invalid_json", None),
                    ("empty.xml", "parse", "empty_body", None),
                    ("binary.txt", "parse", "undecodable", None),
                    ("nothing-*.xml", "read", "no_match", None),
                ]
            ),
            label="ReadDeadLetters",
        )
        assert_that(
            dead
            | "BrokenExcerpt" >> beam.Filter(lambda d: d["source"].endswith("broken.json"))
            | "ExcerptText" >> beam.Map(lambda d: d["excerpt"]),
            equal_to([BROKEN_JSON.decode()]),
            label="DeadLetterExcerpt",
        )


@pytest.mark.parametrize("runner", ["in-process", "prism"])
def test_count_per_source(runner: str) -> None:
    """Counts reach the fetch rows as a side input; a source with two rows has its counts on one."""
    fetches = [
        {"source": "a", "outcome": "ok", "entries": 5},
        {"source": "b", "outcome": "ok", "entries": 2},
        {"source": "c", "outcome": "not_a_feed", "entries": 0},
        {"source": "a", "outcome": "ok", "entries": 5},  # the same input listed twice
    ]
    staged = [
        StagedFile("articles", "ingest_date=x/language=en", "s1", "f1", 3, {"a": 2, "b": 1}),
        StagedFile("articles", "ingest_date=x/language=de", "s2", "f2", 1, {"a": 1}),
    ]
    duplicates = [{"source": "a", "article_id": "i"}, {"source": "b", "article_id": "j"}]
    dead_letters = [
        {"source": "a", "entry_ref": "e-7", "stage": "normalize"},
        {"source": "c", "entry_ref": None, "stage": "parse"},  # a whole input: not one of its entries
    ]
    with pipeline_on(runner) as p:
        rows = (
            p | "Fetches" >> beam.Create(fetches),
            p | "Staged" >> beam.Create(staged),
            p | "Duplicates" >> beam.Create(duplicates),
            p | "DeadLetters" >> beam.Create(dead_letters),
        ) | CountPerSource()
        assert_that(
            rows
            | "Counts"
            >> beam.Map(
                lambda r: (
                    r["source"],
                    r["entries"],
                    r["articles_written"],
                    r["duplicates"],
                    r["dead_letters"],
                )
            ),
            equal_to([("a", 5, 3, 1, 1), ("a", 5, 0, 0, 0), ("b", 2, 1, 1, 0), ("c", 0, 0, 0, 0)]),
            label="CompletedFetchRows",
        )
        assert_that(
            rows | "Columns" >> beam.Map(lambda r: sorted(r)),
            equal_to([sorted({**fetch, **dict.fromkeys(COUNT_FIELDS, 0)}) for fetch in fetches]),
            label="NoRowKeyLeft",
        )


def test_the_accounting_equation_through_every_stage(input_folder: Path, tmp_path: Path) -> None:
    """ReadSources through CountPerSource: for every input, entries = written + duplicates + dead letters."""
    feed = (SEEDS / "feeds" / "rss2_en.xml").read_text(encoding="utf-8")  # items 1 and 4 share a link
    (input_folder / "with_duplicate.xml").write_text(feed, encoding="utf-8")
    (input_folder / "with_empty_item.xml").write_text(
        "<?xml version='1.0'?><rss version='2.0'><channel><title>E</title>"
        "<item><title>Kept</title><link>https://e.example/kept</link></item>"
        "<item><title> </title><description>&lt;p&gt;&lt;/p&gt;</description></item>"
        "</channel></rss>",
        encoding="utf-8",
    )
    output = str(tmp_path / "out")
    with pipeline() as p:
        read = p | beam.Create([str(input_folder)]) | ReadSources()
        entries, fetches, read_failures = read.entries, read.fetches, read.dead_letters
        processed = entries | ProcessArticles(RUN, LanguageSettings(), output=output)
        deduplicated = processed.articles | StageAndDeduplicate(output, ("ingest_date", "language"))
        staged, duplicates = deduplicated.files, deduplicated.duplicates
        dead_letters = (read_failures, processed.dead_letters) | beam.Flatten()
        rows = (fetches, staged, duplicates, dead_letters) | CountPerSource()
        assert_that(
            rows
            | "Counts"
            >> beam.Map(
                lambda r: (
                    name(r["source"]),
                    r["entries"],
                    r["articles_written"],
                    r["duplicates"],
                    r["dead_letters"],
                )
            ),
            equal_to(
                [
                    ("good.xml", 3, 3, 0, 0),
                    ("article.txt", 1, 1, 0, 0),
                    ("with_duplicate.xml", 4, 3, 1, 0),
                    ("with_empty_item.xml", 2, 1, 0, 1),
                    ("broken.json", 0, 0, 0, 0),
                    ("empty.xml", 0, 0, 0, 0),
                    ("blank.txt", 0, 0, 0, 0),
                    ("binary.txt", 0, 0, 0, 0),
                ]
            ),
            label="EquationPerInput",
        )
        assert_that(
            rows
            | "Equation"
            >> beam.Map(
                lambda r: r["entries"] == r["articles_written"] + r["duplicates"] + r["dead_letters"]
            ),
            equal_to([True] * 8),
            label="EquationHolds",
        )
        assert_that(
            duplicates | "DuplicateSources" >> beam.Map(lambda d: name(d["source"])),
            equal_to(["with_duplicate.xml"]),
            label="Duplicates",
        )


def _article_schema() -> Any:
    from transforms.schema import ARTICLE_SCHEMA

    return ARTICLE_SCHEMA
