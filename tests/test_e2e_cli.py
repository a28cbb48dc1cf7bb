"""End to end: the real `newsbeam run` on the shipped seeds, on broken inputs and on feeds served over HTTP.

Each run writes a real dataset into a temporary folder, which is read back the way users read it:
DuckDB's `read_parquet(..., hive_partitioning = true)` and pyarrow's Hive dataset. Nothing is mocked.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from tests.conftest import PROJECT, SEEDS, sql
from tests.feedserver import FeedServer, Reply

pytestmark = pytest.mark.e2e

SAMPLE = SEEDS / "000_c847d24acf547d54.txt"
SAMPLE_TITLE = "The US affirms that elections in Venezuela “do not reflect the will of the people”"

# seeds/README.md: the language of every shipped input.
SEED_LANGUAGES = {
    "seeds/000_c847d24acf547d54.txt": {"en"},
    "seeds/001_de_strassenbahn-linie.txt": {"de"},
    "seeds/002_fr_festival-jardins.txt": {"fr"},
    "seeds/003_es_cooperativa-olivar.txt": {"es"},
    "seeds/004_ja_toshokan-yakan.txt": {"ja"},
    "seeds/feeds/rss2_en.xml": {"en"},
    "seeds/feeds/atom_de.xml": {"de"},
    "seeds/feeds/rdf_fr.rdf": {"fr"},
    "seeds/feeds/jsonfeed_es.json": {"es"},
    "seeds/feeds/rss2_mixed_undeclared.xml": {"it", "pt", "nl"},
    "seeds/feeds/rss2_ru_cp1251.xml": {"ru"},
}
UTC_MICROS = pa.timestamp("us", tz="UTC")
HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>|<!--")
HTML_ENTITY = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z][a-zA-Z0-9]*);")


# --- helpers ------------------------------------------------------------------------------------


@dataclass
class Run:
    output: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def manifest(self) -> dict[str, Any]:
        (path,) = (self.output / "_runs").glob("*.json")
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document

    def duckdb_rows(self, dataset: str) -> list[dict[str, Any]]:
        pattern = (self.output / dataset / "**" / "*.parquet").as_posix()
        relation = sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]

    def arrow_table(self, dataset: str) -> pa.Table:
        return ds.dataset(self.output / dataset, format="parquet", partitioning="hive").to_table()


def run_cli(*args: str, output: Path, cwd: Path = PROJECT) -> Run:
    """`python -m pipeline run ... --output OUTPUT` in a fresh process, as a user runs it."""
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", *args, "--output", str(output)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    return Run(output, completed.returncode, completed.stdout, completed.stderr)


def report_line(stdout: str, label: str) -> str:
    """The value after `label:` in the printed report."""
    for line in stdout.splitlines():
        if line.strip().startswith(f"{label}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no `{label}:` line in the report:\n{stdout}")


def by_source(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["source"], []).append(row)
    return grouped


def assert_equation(fetches: list[dict[str, Any]]) -> None:
    for row in fetches:
        assert row["entries"] == row["articles_written"] + row["duplicates"] + row["dead_letters"], row


# --- the shipped seeds --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`newsbeam run` with no inputs given: configs/local.yaml, i.e. the shipped seeds/."""
    run = run_cli(output=tmp_path_factory.mktemp("seeds") / "out")
    assert run.returncode == 0, run.stderr
    return run


def test_sample_article_is_there_with_its_title_language_and_word_count(seeds_run: Run) -> None:
    articles = [a for a in seeds_run.duckdb_rows("articles") if a["source"] == "seeds/" + SAMPLE.name]
    assert len(articles) == 1
    (article,) = articles
    assert article["title"] == SAMPLE_TITLE
    assert article["language"] == "en"
    assert article["language_confidence"] > 0.9
    assert article["source_type"] == "seed_file"
    # Counted independently: whitespace-separated tokens of the raw file.
    raw_words = len(SAMPLE.read_text(encoding="utf-8").split())
    assert abs(article["word_count"] - raw_words) <= raw_words * 0.05, (article["word_count"], raw_words)
    assert article["text"].startswith("The US Secretary of State Antony blinken He affirmed this Monday")
    assert "\n\n" in article["text"]  # paragraphs kept
    assert SAMPLE_TITLE not in article["text"]  # the title line is not repeated in the body
    assert article["reading_time_seconds"] == pytest.approx(article["word_count"] / 230 * 60, abs=1)


def test_no_html_tags_or_entities_are_left_in_any_article(seeds_run: Run) -> None:
    articles = seeds_run.duckdb_rows("articles")
    assert articles
    for article in articles:
        for column in ("title", "summary", "text", "feed_title"):
            value = article[column] or ""
            assert not HTML_TAG.search(value), (article["source"], column, value)
            assert not HTML_ENTITY.search(value), (article["source"], column, value)
            assert html.unescape(value) == value, (article["source"], column, value)
            assert "alert(1)" not in value and "{" not in value  # no script or style bodies


def test_every_article_written_is_found_by_both_readers(seeds_run: Run) -> None:
    manifest = seeds_run.manifest
    assert manifest["status"] == "committed"
    on_disk = sorted((seeds_run.output / "articles").rglob("*.parquet"))
    rows_in_files = sum(pq.ParquetFile(path).metadata.num_rows for path in on_disk)
    listed = sorted(Path(f["final_path"]) for f in manifest["files"] if f["dataset"] == "articles")
    assert [p.resolve() for p in on_disk] == [p.resolve() for p in listed]

    duck = seeds_run.duckdb_rows("articles")
    arrow = seeds_run.arrow_table("articles")
    fetches = seeds_run.duckdb_rows("feed_fetches")
    written = sum(f["articles_written"] for f in fetches)
    assert len(duck) == arrow.num_rows == rows_in_files == manifest["counts"]["articles"]["rows"] == written
    assert report_line(seeds_run.stdout, "articles written") == str(written)
    assert len({a["article_id"] for a in duck}) == len(duck)  # one article per id


def test_no_staging_or_temporary_files_are_left(seeds_run: Run) -> None:
    staging = seeds_run.output / "_staging"
    assert not staging.exists() or not any(staging.rglob("*"))
    for dataset in ("articles", "feed_fetches"):
        files = [p for p in (seeds_run.output / dataset).rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert path.suffix == ".parquet" and not path.name.startswith((".", "_")), path
    run_files = [p for p in (seeds_run.output / "_runs").rglob("*") if p.is_file()]
    assert [p.name for p in run_files] == [f"{seeds_run.manifest['run_id']}.json"]  # no commit marker left


def test_partitions_are_hive_folders_of_ingest_date_then_language(seeds_run: Run) -> None:
    run_date = seeds_run.manifest["started_at"][:10]
    for path in (seeds_run.output / "articles").rglob("*.parquet"):
        date_dir, language_dir = path.parent.parent.name, path.parent.name
        assert date_dir == f"ingest_date={run_date}"
        assert re.fullmatch(r"language=[a-z]{2,3}", language_dir), path
        schema = pq.read_schema(path)
        assert "language" not in schema.names and "ingest_date" not in schema.names  # in folder names
    arrow = seeds_run.arrow_table("articles")
    assert set(arrow.column("ingest_date").to_pylist()) == {run_date}


def test_each_seed_gets_its_known_language(seeds_run: Run) -> None:
    articles = by_source(seeds_run.duckdb_rows("articles"))
    assert set(articles) == set(SEED_LANGUAGES)
    for source, expected in SEED_LANGUAGES.items():
        found = {a["language"] for a in articles[source]}
        assert found == expected, source
    per_language = report_line(seeds_run.stdout, "by language")
    for language in ("en", "de", "fr", "es", "ja", "it", "pt", "nl", "ru"):
        assert re.search(rf"\b{language} \d+", per_language), per_language


def test_timestamps_are_utc_microseconds_in_files_and_readers(seeds_run: Run) -> None:
    columns = {
        "articles": ("published_at", "updated_at", "ingested_at"),
        "feed_fetches": ("started_at",),
    }
    for dataset, names in columns.items():
        arrow = seeds_run.arrow_table(dataset)
        for path in (seeds_run.output / dataset).rglob("*.parquet"):
            schema = pq.read_schema(path)
            for name in names:
                assert schema.field(name).type == UTC_MICROS, (path, name)
        for name in names:
            assert arrow.schema.field(name).type == UTC_MICROS
    # The RSS seed states +0200: 14:40 local is 12:40 UTC, and the offset is kept.
    (update,) = [a for a in seeds_run.duckdb_rows("articles") if (a["title"] or "").startswith("Update:")]
    assert update["published_at"].utcoffset().total_seconds() == 0
    assert (update["published_at"].hour, update["published_at"].minute) == (12, 40)
    assert update["published_offset_minutes"] == 120


def test_one_fetch_row_per_input_and_the_equation_holds(seeds_run: Run) -> None:
    fetches = seeds_run.duckdb_rows("feed_fetches")
    assert sorted(f["source"] for f in fetches) == sorted(SEED_LANGUAGES)
    assert {f["outcome"] for f in fetches} == {"ok"}
    assert_equation(fetches)
    rows = {f["source"]: f for f in fetches}
    assert rows["seeds/000_c847d24acf547d54.txt"]["feed_format"] == "text"
    assert rows["seeds/000_c847d24acf547d54.txt"]["source_type"] == "seed_file"
    assert rows["seeds/feeds/rss2_en.xml"]["feed_format"] == "rss20"
    assert rows["seeds/feeds/jsonfeed_es.json"]["entries"] == 3
    assert all(f["run_id"] == seeds_run.manifest["run_id"] for f in fetches)
    assert report_line(seeds_run.stdout, "inputs read") == f"{len(SEED_LANGUAGES)} (ok {len(SEED_LANGUAGES)})"


def test_the_duplicate_in_the_rss_seed_is_dropped_and_counted(seeds_run: Run) -> None:
    fetch = next(f for f in seeds_run.duckdb_rows("feed_fetches") if f["source"] == "seeds/feeds/rss2_en.xml")
    assert (fetch["entries"], fetch["articles_written"], fetch["duplicates"], fetch["dead_letters"]) == (
        4,
        3,
        1,
        0,
    )
    titles = {a["title"] for a in seeds_run.duckdb_rows("articles") if a["source"] == fetch["source"]}
    # Items 1 and 4 share link and guid; item 4 was updated later and is the one kept.
    assert "Update: Riverside flood barrier approved, construction to start in summer" in titles
    assert "Riverside flood barrier approved after lengthy council debate" not in titles
    assert report_line(seeds_run.stdout, "duplicates") == "1"


def test_links_are_canonical_and_relative_ones_resolved(seeds_run: Run) -> None:
    articles = seeds_run.duckdb_rows("articles")
    urls = {a["canonical_url"] for a in articles}
    assert "https://example.com/news/2024/03/flood-barrier" in urls  # utm_* dropped
    assert "https://example.com/culture/library-hours" in urls  # fbclid dropped
    assert "https://beispiel.de/artikel/3" in urls  # relative href against xml:base
    for article in articles:
        assert article["url"] is None or article["url"].startswith("https://"), article["url"]
        if article["source_type"] == "feed":
            assert article["article_id_source"] in ("url", "entry_id"), article["source"]


def test_report_names_inputs_languages_duplicates_dead_letters_and_outputs(seeds_run: Run) -> None:
    out = seeds_run.output
    assert "committed" in seeds_run.stdout.splitlines()[0]
    assert report_line(seeds_run.stdout, "dead letters") == "0"
    # A dataset's folder appears with its first file: the report names none that is not there.
    assert not (Path(out) / "dead_letters").exists()
    assert (
        report_line(seeds_run.stdout, "output")
        == f"{out}/articles, {out}/dead_letters (none yet), {out}/feed_fetches"
    )
    assert report_line(seeds_run.stdout, "manifest") == f"{out}/_runs/{seeds_run.manifest['run_id']}.json"
    articles = seeds_run.manifest["counts"]["articles"]
    languages = report_line(seeds_run.stdout, "by language")
    for language, count in re.findall(r"(\w+) (\d+)", languages):
        assert articles[f"language={language}"] == int(count)


# --- broken inputs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    inputs = tmp_path_factory.mktemp("broken")
    (inputs / "binary.txt").write_bytes(b"\x00\x01\x02\xff\xfe\x00 not text \x00" * 10)
    (inputs / "page.xml").write_text("<!DOCTYPE html><html><body><p>A web page</p></body></html>")
    (inputs / "words.xml").write_text("just some words, neither XML nor a feed\n")
    (inputs / "empty.xml").write_bytes(b"")
    (inputs / "garbage.rss").write_bytes(bytes(range(256)) * 40)
    # A file listed by the glob but gone when read: the input must still be accounted for.
    (inputs / "gone.xml").symlink_to(inputs / "nowhere" / "gone.xml")
    run = run_cli(
        "--input",
        f"{inputs}/*",
        str(SEEDS / "feeds" / "rss2_en.xml"),
        output=tmp_path_factory.mktemp("broken_out") / "out",
    )
    assert run.returncode == 0, run.stderr
    return run


BROKEN = {  # file -> (outcome, dead letter error_type)
    "binary.txt": ("error", "undecodable"),
    "page.xml": ("not_a_feed", "html_page"),
    "words.xml": ("not_a_feed", "malformed_feed"),
    "empty.xml": ("not_a_feed", "empty_body"),
    "garbage.rss": ("not_a_feed", "malformed_feed"),
    "gone.xml": ("error", "unreadable"),
}


def test_every_broken_input_has_its_fetch_row_and_dead_letter(broken_run: Run) -> None:
    fetches = {Path(f["source"]).name: f for f in broken_run.duckdb_rows("feed_fetches")}
    assert set(fetches) == {*BROKEN, "rss2_en.xml"}
    dead = {Path(d["source"]).name: d for d in broken_run.duckdb_rows("dead_letters")}
    assert set(dead) == set(BROKEN)
    for name, (outcome, error_type) in BROKEN.items():
        assert fetches[name]["outcome"] == outcome, fetches[name]
        assert fetches[name]["entries"] == 0
        letter = dead[name]
        assert letter["error_type"] == error_type, letter
        assert letter["stage"] in ("read", "parse")
        assert letter["message"]
        assert letter["entry_ref"] is None  # the whole input failed
        assert letter["run_id"] == broken_run.manifest["run_id"]
        assert len(letter["excerpt"] or "") <= 2000
    assert dead["binary.txt"]["source_type"] == "seed_file"
    assert "A web page" in dead["page.xml"]["excerpt"]
    assert dead["empty.xml"]["excerpt"] == ""
    assert_equation(list(fetches.values()))


def test_broken_inputs_do_not_stop_the_good_feed(broken_run: Run) -> None:
    fetch = next(f for f in broken_run.duckdb_rows("feed_fetches") if f["source"].endswith("rss2_en.xml"))
    assert fetch["outcome"] == "ok" and fetch["articles_written"] == 3
    assert broken_run.arrow_table("articles").num_rows == 3
    schema = pq.read_schema(next((broken_run.output / "dead_letters").rglob("*.parquet")))
    assert schema.field("failed_at").type == UTC_MICROS


def test_report_counts_dead_letters_by_reason(broken_run: Run) -> None:
    assert report_line(broken_run.stdout, "dead letters") == str(len(BROKEN))
    for error_type in {e for _, e in BROKEN.values()}:
        assert re.search(rf"^\s+(read|parse)/{error_type}: \d+$", broken_run.stdout, re.M), error_type
    inputs = report_line(broken_run.stdout, "inputs read")
    assert inputs == "7 (error 2, not_a_feed 4, ok 1)"


# --- bad configuration --------------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"output: {tmp_path / 'out'}\ninputs: [{SEEDS}]\n{text}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("config_text", "args", "expected"),
    [
        ("colour: blue\n", [], r"bad\.yaml: colour: unknown key"),
        ("language:\n  max_char: 10\n", [], r"bad\.yaml: language\.max_char: unknown key"),
        ("partition_by: [colour]\n", [], r"partition_by: unknown partition key 'colour'"),
        ("partition_by: [ingest_date]\n", [], r"partition_by: .*ingest_date"),
        (
            "",
            ["--input", "/nonexistent/feed.xml"],
            r"--input: input path '/nonexistent/feed\.xml' does not exist",
        ),
        (
            "",
            ["--input", "/nonexistent/*.xml"],
            r"--input: input pattern '/nonexistent/\*\.xml' matches no file",
        ),
        ("", ["--input", "ftp://example.com/feed.xml"], r"unsupported URL scheme 'ftp'"),
    ],
)
def test_bad_configuration_fails_with_one_line_before_the_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str, args: list[str], expected: str
) -> None:
    config = _config(tmp_path, config_text)
    assert main(["run", "--config", str(config), *args]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("newsbeam: configuration error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert captured.out == ""
    assert not (tmp_path / "out").exists()  # nothing started


def test_bad_configuration_exits_with_code_2_from_the_command(tmp_path: Path) -> None:
    config = _config(tmp_path, "partition_by: [colour]\n")
    run = run_cli("--config", str(config), output=tmp_path / "out")
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [
        f"newsbeam: configuration error: {config}: partition_by: unknown partition key 'colour'; "
        "choose from language, source_domain, source_type"
    ]
    assert not (tmp_path / "out").exists()


def test_a_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "missing.yaml: cannot read the config file" in line


# --- feeds over HTTP ----------------------------------------------------------------------------

RSS_WITH_RELATIVE_LINKS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel>
<title>Local Harbour News</title><link>/</link><language>en</language>
<item><title>Harbour ferry timetable changes for the winter season</title>
<link>/news/ferry-timetable?utm_source=rss</link><guid isPermaLink="false">ferry-1</guid>
<description>&lt;p&gt;The ferry between the two harbours will run every forty minutes from November,
the operator announced on &lt;b&gt;Tuesday&lt;/b&gt;, citing lower passenger numbers.&lt;/p&gt;</description>
<pubDate>Tue, 05 Nov 2024 08:00:00 +0100</pubDate></item>
<item><title>Fishing cooperative opens a new market hall on the quay</title>
<link>market-hall.html</link>
<description>Local fishermen will sell their catch directly to customers in a new hall near the quay,
which opens on Saturday morning with a small festival and music.</description></item>
</channel></rss>
"""

ATOM_DE = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="de">
<title>Hafenbote</title><id>urn:hafenbote</id><updated>2024-11-05T10:00:00+01:00</updated>
<entry><title>Neue Fähre für die Inselverbindung bestellt</title><id>urn:hafenbote:1</id>
<link href="https://example.org/artikel/faehre"/><updated>2024-11-05T10:00:00+01:00</updated>
<summary>Die Reederei hat eine neue Fähre bestellt, die ab dem kommenden Sommer die Inseln mit dem
Festland verbinden und deutlich weniger Treibstoff verbrauchen soll.</summary></entry>
</feed>
""".encode()


def test_feeds_over_http_through_the_cli(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rss_url = feed_server.route(
        "/news/feed.xml", Reply(200, RSS_WITH_RELATIVE_LINKS, {"Content-Type": "application/rss+xml"})
    )
    atom_url = feed_server.route("/de/atom", Reply(200, ATOM_DE, {"Content-Type": "application/atom+xml"}))
    broken_url = feed_server.route("/broken.xml", Reply(500, b"<h1>Internal Server Error</h1>"))
    config = tmp_path / "http.yaml"
    config.write_text(
        f"output: {tmp_path / 'out'}\n"
        "fetch:\n  allow_private_hosts: true\n  max_attempts: 2\n  backoff_base: 0\n",
        encoding="utf-8",
    )
    code = main(["run", "--config", str(config), "--input", rss_url, atom_url, broken_url])
    stdout = capsys.readouterr().out
    assert code == 0
    run = Run(tmp_path / "out", code, stdout, "")

    fetches = {f["source"]: f for f in run.duckdb_rows("feed_fetches")}
    assert set(fetches) == {rss_url, atom_url, broken_url}
    assert fetches[rss_url]["outcome"] == "ok" and fetches[rss_url]["articles_written"] == 2
    assert fetches[rss_url]["http_status"] == 200 and fetches[rss_url]["url"] == rss_url
    assert fetches[atom_url]["outcome"] == "ok" and fetches[atom_url]["articles_written"] == 1
    broken = fetches[broken_url]
    assert (broken["outcome"], broken["error_type"], broken["http_status"]) == ("error", "http_500", 500)
    assert broken["entries"] == 0
    assert len(feed_server.hits("/broken.xml")) == 2  # a 500 is retried, then given up
    assert_equation(list(fetches.values()))

    (letter,) = run.duckdb_rows("dead_letters")
    assert (letter["source"], letter["error_type"], letter["stage"]) == (broken_url, "http_500", "read")

    articles = {a["title"]: a for a in run.duckdb_rows("articles")}
    base = feed_server.url("")
    ferry = articles["Harbour ferry timetable changes for the winter season"]
    assert ferry["url"] == f"{base}/news/ferry-timetable?utm_source=rss"
    assert ferry["canonical_url"] == f"{base}/news/ferry-timetable"
    assert ferry["article_id_source"] == "url"
    assert ferry["text"].startswith("The ferry between the two harbours") and "<b>" not in ferry["text"]
    assert ferry["language"] == "en" and ferry["source"] == rss_url
    market = articles["Fishing cooperative opens a new market hall on the quay"]
    assert market["url"] == f"{base}/news/market-hall.html"  # relative to the feed's own URL
    assert market["article_id_source"] == "url"
    faehre = articles["Neue Fähre für die Inselverbindung bestellt"]
    assert (faehre["language"], faehre["language_declared"]) == ("de", "de")
    assert report_line(stdout, "dead letters") == "1"
    assert re.search(r"^\s+read/http_500: 1$", stdout, re.M)
