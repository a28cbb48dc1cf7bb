"""The public corpus (../shared/corpus) through the whole pipeline: robustness, accounting, language.

One `newsbeam run` reads every corpus feed in place (never copied into the repository): the Universal
Feed Parser's 2,107 test feeds, the real feeds captured by miniflux, rss-parser, feed-rs and
fastfeedparser, and a few HTML pages that are not feeds. All assertions share that one run. Explicit
globs keep SOURCE.txt, READMEs and the projects' expected-output JSON files out of the inputs.

Locally the tests skip when the corpus is missing; in CI (CI=true) they fail. The last tests hold,
without the corpus, the fixes for what the corpus revealed.
"""

from __future__ import annotations

import csv
import glob
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT, sql
from transforms.normalize import html_to_text, parse_timestamp
from transforms.parse import parse_input, undeclared_charset
from transforms.read_files import expand_pattern
from transforms.schema import Outcome

CORPUS_GLOBS = (
    "feedparser/**/*.xml",
    "feedparser/json/*.json",
    "miniflux/**/*.xml",
    "miniflux/internal/reader/encoding/testdata/*.html",  # web pages, not feeds
    "rss-parser/input/*.rss",
    "rss-parser/input/*.atom",
    "rss-parser/input/*.xml",
    "feed-rs/**/*.xml",
    "feed-rs/jsonfeed/*[0-9].json",  # not the *.serde.json expected models
    "fastfeedparser/integration/*.xml",
    "fastfeedparser/integration/json_feed_sample.json",
)
OUTCOMES = {"ok", "ok_with_warnings", "empty", "not_a_feed", "error"}
MIN_LANGUAGE_ACCURACY = 0.95


class CorpusRun:
    def __init__(self, corpus: Path, output: Path, stdout: str) -> None:
        self.corpus = corpus
        self.output = output
        self.stdout = stdout
        self.started = datetime.now(UTC)

    def rows(self, dataset: str, where: str = "true") -> list[dict[str, Any]]:
        pattern = (self.output / dataset / "**" / "*.parquet").as_posix()
        relation = sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true) WHERE {where}")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]

    def relative(self, source: str) -> str:
        return Path(source).relative_to(self.corpus).as_posix()


def corpus_files(corpus: Path) -> list[str]:
    files: set[str] = set()
    for pattern in CORPUS_GLOBS:
        files.update(glob.glob(str(corpus / pattern), recursive=True))
    return sorted(files)


@pytest.fixture(scope="module")
def corpus_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> CorpusRun:
    corpus = corpus.resolve()
    output = tmp_path_factory.mktemp("corpus") / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--output", str(output), "--input"]
        + [str(corpus / pattern) for pattern in CORPUS_GLOBS],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    # No crash: the run ends, committed, whatever the inputs hold.
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert "committed" in completed.stdout.splitlines()[0], completed.stdout
    print(completed.stdout)
    return CorpusRun(corpus, output, completed.stdout)


@pytest.mark.corpus
def test_the_corpus_is_the_one_described(corpus: Path) -> None:
    files = corpus_files(corpus.resolve())
    feedparser = [f for f in files if "/feedparser/" in f]
    assert len(feedparser) == 2107  # ../shared/corpus/README.md
    assert not [f for f in files if f.endswith((".txt", ".md", ".serde.json"))]


@pytest.mark.corpus
def test_every_file_has_exactly_one_fetch_row(corpus_run: CorpusRun) -> None:
    fetches = corpus_run.rows("feed_fetches")
    sources = Counter(f["source"] for f in fetches)
    assert [s for s, n in sources.items() if n > 1] == []
    assert sorted(sources) == corpus_files(corpus_run.corpus)
    assert f"inputs read:       {len(fetches)} (" in corpus_run.stdout


@pytest.mark.corpus
def test_entries_equal_written_plus_duplicates_plus_dead_letters_for_every_input(
    corpus_run: CorpusRun,
) -> None:
    fetches = corpus_run.rows("feed_fetches")
    broken = [
        f["source"]
        for f in fetches
        if f["entries"] != f["articles_written"] + f["duplicates"] + f["dead_letters"]
    ]
    assert broken == []
    # The default fetch.max_entries_per_feed is above every corpus feed: nothing is cut.
    assert [f["source"] for f in fetches if f["entries_cut"]] == []
    # And the totals agree with what the readers find.
    articles = corpus_run.rows("articles")
    assert sum(f["articles_written"] for f in fetches) == len(articles)
    entry_letters = corpus_run.rows("dead_letters", "entry_ref IS NOT NULL")
    assert sum(f["dead_letters"] for f in fetches) == len(entry_letters)
    assert sum(f["entries"] for f in fetches) > 2500


@pytest.mark.corpus
def test_outcomes_are_sensible(corpus_run: CorpusRun) -> None:
    fetches = {corpus_run.relative(f["source"]): f for f in corpus_run.rows("feed_fetches")}
    assert {f["outcome"] for f in fetches.values()} <= OUTCOMES
    # Files on a local disk are always readable.
    assert [s for s, f in fetches.items() if f["outcome"] == "error"] == []
    by_folder = Counter(
        (s.split("/")[1], f["outcome"]) for s, f in fetches.items() if s.startswith("feedparser/")
    )
    # Well-formed feeds either give entries or are valid and empty; never warnings, never "not a feed".
    wellformed = {o for (folder, o) in by_folder if folder == "wellformed"}
    assert wellformed == {"ok", "empty"}, by_folder
    assert by_folder[("wellformed", "empty")] >= 500  # the corpus has ~650 valid feeds without entries
    illformed = {o for (folder, o) in by_folder if folder == "illformed"}
    assert "ok_with_warnings" in illformed and illformed <= {"ok", "ok_with_warnings", "empty", "not_a_feed"}
    for source, fetch in fetches.items():
        if fetch["outcome"] in ("ok", "ok_with_warnings"):
            assert fetch["entries"] > 0 and fetch["feed_format"], source
        if fetch["outcome"] == "ok_with_warnings":
            assert fetch["error_type"] and fetch["message"], source
        if fetch["outcome"] in ("empty", "not_a_feed"):
            assert fetch["entries"] == 0, source
    for page in glob.glob(str(corpus_run.corpus / "miniflux/internal/reader/encoding/testdata/*.html")):
        assert fetches[corpus_run.relative(page)]["outcome"] == "not_a_feed"
        assert fetches[corpus_run.relative(page)]["error_type"] == "html_page"
    assert fetches["rss-parser/input/unrecognized.rss"]["outcome"] == "not_a_feed"
    assert fetches["feed-rs/xml/xml_sample_1.xml"]["outcome"] == "not_a_feed"  # XML, but no feed
    # CDF, which feedparser reads without naming a version.
    assert fetches["feedparser/wellformed/cdf/channel_title.xml"]["outcome"] == "empty"
    assert fetches["feedparser/wellformed/cdf/item_title.xml"]["feed_format"] == "cdf"
    formats = {f["feed_format"] for f in fetches.values()}
    assert {"rss20", "atom10", "rss10", "rss091u", "json11", "cdf"} <= formats


@pytest.mark.corpus
def test_failed_inputs_have_dead_letters_and_nothing_else_does(corpus_run: CorpusRun) -> None:
    failed = {f["source"] for f in corpus_run.rows("feed_fetches", "outcome IN ('not_a_feed', 'error')")}
    input_letters = corpus_run.rows("dead_letters", "entry_ref IS NULL")
    assert Counter(d["source"] for d in input_letters) == Counter(failed)
    for letter in corpus_run.rows("dead_letters"):
        assert letter["stage"] in ("read", "parse", "normalize", "detect_language", "enrich", "write")
        assert letter["error_type"] and letter["message"] is not None
        assert len(letter["excerpt"] or "") <= 2000


@pytest.mark.corpus
def test_dates_are_plausible_and_have_provenance(corpus_run: CorpusRun) -> None:
    latest = corpus_run.started + timedelta(days=1)
    for article in corpus_run.rows("articles"):
        for name in ("published", "updated"):
            moment = article[f"{name}_at"]
            if moment is None:
                assert article[f"{name}_at_source"] == "none"
                assert article[f"{name}_offset_minutes"] is None
                continue
            assert datetime(1990, 1, 1, tzinfo=UTC) <= moment <= latest, article["source"]
            assert article[f"{name}_at_source"].startswith("feed:")
            offset = article[f"{name}_offset_minutes"]
            assert offset is None or -1080 <= offset <= 1080


def _real_feeds(corpus: Path) -> list[dict[str, str]]:
    with (corpus / "real-feeds.tsv").open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


@pytest.mark.corpus
def test_real_feeds_give_all_their_entries_as_clean_text(corpus_run: CorpusRun) -> None:
    fetches = {corpus_run.relative(f["source"]): f for f in corpus_run.rows("feed_fetches")}
    for feed in _real_feeds(corpus_run.corpus):
        fetch = fetches[feed["path"]]
        assert fetch["outcome"] in ("ok", "ok_with_warnings"), feed["path"]
        assert fetch["entries"] == int(feed["items_or_entries"]), feed["path"]
        assert fetch["articles_written"] >= 0.9 * fetch["entries"], feed["path"]
    sources = ", ".join(f"'{corpus_run.corpus / feed['path']}'" for feed in _real_feeds(corpus_run.corpus))
    for article in corpus_run.rows("articles", f"source IN ({sources})"):
        for column in ("title", "summary", "text"):
            value = article[column] or ""
            # No markup (some feeds escape their HTML twice) and no mojibake from a wrong encoding.
            assert not re.search(r"</(p|div|a|span|b|i|li|ul)>|<br\s*/?>|<p>", value), (
                article["source"],
                value,
            )
            assert not re.search(r"&(#[0-9]+|[a-z]+);", value), (article["source"], value)
            assert "\ufffd" not in value and "Ã" not in value, (article["source"], value)


@pytest.mark.corpus
def test_real_feeds_get_their_known_language(corpus_run: CorpusRun) -> None:
    """At least 95% right, scored apart where the detector chose and where the declaration did."""
    truth = {
        str(corpus_run.corpus / feed["path"]): feed["language"] for feed in _real_feeds(corpus_run.corpus)
    }
    sources = ", ".join(f"'{s}'" for s in truth)
    scores: dict[str, list[bool]] = {"detected": [], "declared": []}
    for article in corpus_run.rows("articles", f"source IN ({sources})"):
        chosen_by = "declared" if article["language_source"] == "declared" else "detected"
        if article["language_source"] == "none":
            chosen_by = "detected"  # `und`: the detector could not tell, and it counts as wrong
        scores[chosen_by].append(article["language"] == truth[article["source"]])
    total = scores["detected"] + scores["declared"]
    assert len(total) >= 300
    for chosen_by, right in scores.items():
        print(f"{chosen_by}: {sum(right)}/{len(right)} right")
        if right:
            assert sum(right) / len(right) >= MIN_LANGUAGE_ACCURACY, (chosen_by, sum(right), len(right))
    assert len(scores["detected"]) >= 300  # most real articles are long enough to detect
    assert sum(total) / len(total) >= MIN_LANGUAGE_ACCURACY


@pytest.mark.corpus
def test_feeds_without_an_encoding_declaration_are_decoded(corpus_run: CorpusRun) -> None:
    """Legacy CJK, Thai, Hebrew and Cyrillic bytes with no declared encoding (feedparser's chardet cases)."""
    expected = {
        "eucjp.xml": "ja",
        "euckr.xml": "ko",
        "tis620.xml": "th",
        "windows1255.xml": "he",
        "koi8r.xml": "ru",
    }
    folder = corpus_run.corpus / "feedparser/illformed/chardet"
    for name, language in expected.items():
        articles = corpus_run.rows("articles", f"source = '{folder / name}'")
        assert articles, name
        for article in articles:
            assert article["language"] == language, (name, article["title"], article["text"])


@pytest.mark.corpus
def test_html_escaped_twice_becomes_text(corpus_run: CorpusRun) -> None:
    """Reddit's Atom feed escapes its HTML twice (`&amp;lt;div&amp;gt;`)."""
    articles = corpus_run.rows(
        "articles", f"source = '{corpus_run.corpus / 'rss-parser/input/reddit-atom.rss'}'"
    )
    assert len(articles) >= 20
    for article in articles:
        text = article["text"] or ""
        assert "<div" not in text and "</p>" not in text and "SC_OFF" not in text, text[:200]


@pytest.mark.corpus
def test_relative_links_in_feed_files_resolve_against_the_url_the_feed_states(corpus_run: CorpusRun) -> None:
    expected = {
        "rss-parser/input/gulp-atom.atom": "https://github.com/gulpjs/gulp/releases/tag/v3.9.0",
        "feed-rs/atom/atom_relative.xml": "https://example.com/blog/2003/12/13/atom03",  # rel="self"
        "feed-rs/atom/atom_xml_base.xml": "https://numi.st/post/2022/travel-uke",  # xml:base
    }
    for path, url in expected.items():
        articles = corpus_run.rows("articles", f"source = '{corpus_run.corpus / path}'")
        assert url in {a["url"] for a in articles}, path
        assert {a["article_id_source"] for a in articles} == {"url"}, path
    # Whatever stays relative (no base anywhere) never makes an id.
    for article in corpus_run.rows("articles", "url IS NOT NULL AND NOT regexp_matches(url, '^https?://')"):
        assert article["canonical_url"] is None and article["article_id_source"] != "url", article["url"]


@pytest.mark.corpus
def test_dates_with_portuguese_names_are_read(corpus_run: CorpusRun) -> None:
    """UOL writes `Seg, 24 Set 2018 19:42:40 -0300`, which neither feedparser nor RFC 822 reads."""
    articles = corpus_run.rows(
        "articles", f"source = '{corpus_run.corpus / 'rss-parser/input/uolNoticias.rss'}'"
    )
    assert len(articles) == 15
    for article in articles:
        assert article["published_offset_minutes"] == -180
        assert article["published_at"].astimezone(UTC).date() == datetime(2018, 9, 24, tzinfo=UTC).date()


@pytest.mark.corpus
def test_entries_without_a_title_are_articles_and_entries_without_anything_are_dead_letters(
    corpus_run: CorpusRun,
) -> None:
    # RSS 0.92 items may have a description and no title (the spec's own sample does).
    spec = corpus_run.corpus / "feed-rs/rss0/rss_0.92_spec_1.xml"
    untitled = corpus_run.rows("articles", f"source = '{spec}' AND title IS NULL")
    assert len(untitled) >= 3
    assert all(a["text"] and a["word_count"] > 3 and a["language"] == "en" for a in untitled)
    # An entry with neither title nor text (feedparser's one-element tests) is a dead letter, counted.
    empty = corpus_run.rows("dead_letters", "stage = 'normalize'")
    assert empty and {d["error_type"] for d in empty} == {"no_content"}
    assert all(d["entry_ref"] for d in empty)


# --- fixes for what the corpus revealed, held without it ----------------------------------------


def test_html_escaped_twice_is_converted_but_tags_quoted_in_prose_stay() -> None:
    reddit = (
        "<!-- SC_OFF -->&lt;div class=&quot;md&quot;&gt;&lt;p&gt;Hey Reddit, "
        "&lt;a href=&quot;/r/x&quot;&gt;here&lt;/a&gt; I am.&lt;/p&gt;&lt;p&gt;Second.&lt;/p&gt;&lt;/div&gt;"
    )
    assert html_to_text(reddit) == "Hey Reddit, here I am.\n\nSecond."
    assert html_to_text(
        "&amp;lt;p&amp;gt;Double &amp;lt;b&amp;gt;escaped&amp;lt;/b&amp;gt;&amp;lt;/p&amp;gt;"
    ) == ("Double escaped")
    # feedparser's own test: the tag is the subject of the sentence, not markup.
    assert html_to_text("History of the &lt;blink&gt; tag") == "History of the <blink> tag"
    # An IRC quote (iBash.org.ru in the corpus): nick names in angle brackets.
    assert (
        html_to_text("&lt;L29Ah&gt; [[ clang++ == *g++ ]] &amp;&amp; echo")
        == "<L29Ah> [[ clang++ == *g++ ]] && echo"
    )


EUC_JP_RSS = (
    "<rss version='2.0'><channel><title>ニュース</title>"
    "<item><title>図書館が夜間開館を試験的に導入へ</title>"
    "<description>市立図書館は来月から平日の夜間開館を試験的に始めると発表した。</description></item>"
    "</channel></rss>"
)


def test_a_feed_in_a_legacy_cjk_encoding_without_declaration_is_decoded() -> None:
    body = EUC_JP_RSS.encode("euc_jp")
    assert undeclared_charset(body, None) in ("euc_jp", "euc_jis_2004")
    parsed = parse_input(body, "feed.xml")
    assert parsed.outcome == Outcome.OK
    assert parsed.entries[0]["title"] == "図書館が夜間開館を試験的に導入へ"
    # Declared encodings, charsets from HTTP and UTF-8 are left alone.
    declared = b'<?xml version="1.0" encoding="euc-jp"?>' + body
    assert undeclared_charset(declared, None) is None
    assert undeclared_charset(body, "application/rss+xml; charset=euc-jp") is None
    assert undeclared_charset(EUC_JP_RSS.encode("utf-8"), None) is None


def test_undeclared_latin_bytes_keep_feedparsers_windows_1252_reading() -> None:
    # charset-normalizer would guess cp1250 or cp1257 for short French or Portuguese text.
    rss = "<rss version='2.0'><channel><title>Le Cercle Psy</title><item><title>Présentation du café</title>"
    rss += "<description>Une réflexion sur l'été, à lire.</description></item></channel></rss>"
    body = rss.encode("latin-1")
    assert undeclared_charset(body, None) is None
    assert parse_input(body, "feed.xml").entries[0]["title"] == "Présentation du café"


def test_cdf_is_a_feed_format_and_an_empty_cdf_channel_is_empty() -> None:
    empty = parse_input(b"<!-- a comment -->\n<CHANNEL>\n  <TITLE>Example feed</TITLE>\n</CHANNEL>", "c.cdf")
    assert (empty.outcome, empty.feed_format, empty.feed_title) == (Outcome.EMPTY, "cdf", "Example feed")
    one = parse_input(
        b'<CHANNEL HREF="http://example.com/"><ITEM HREF="http://example.com/1"><TITLE>One</TITLE></ITEM></CHANNEL>',
        "c.cdf",
    )
    assert (one.outcome, one.feed_format, len(one.entries)) == (Outcome.OK, "cdf", 1)
    assert parse_input(b"<catalog><book id='1'/></catalog>", "x.xml").outcome == Outcome.NOT_A_FEED


def test_an_ill_formed_feed_names_its_warning_and_without_entries_is_malformed() -> None:
    truncated = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Cut</title><item><title>Half'
    parsed = parse_input(truncated, "cut.xml")
    assert (parsed.outcome, parsed.error_type, len(parsed.entries)) == (
        Outcome.OK_WITH_WARNINGS,
        "SAXParseException",
        1,
    )
    # Cut short before any entry: a broken input (a dead letter), not a quiet feed.
    empty_channel = parse_input(b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>', "x.xml")
    assert empty_channel.outcome == Outcome.NOT_A_FEED
    assert empty_channel.error_type == "malformed_feed" and "no element found" in (
        empty_channel.message or ""
    )


def test_a_listed_file_that_cannot_be_read_is_still_an_input(tmp_path: Path) -> None:
    """Beam's local match skips what it cannot stat; the dangling link must reach the reader."""
    (tmp_path / "feed.xml").write_text("<rss/>")
    (tmp_path / "gone.xml").symlink_to(tmp_path / "nowhere.xml")
    expected = [str(tmp_path / "feed.xml"), str(tmp_path / "gone.xml")]
    assert list(expand_pattern(str(tmp_path / "*.xml"))) == expected
    assert list(expand_pattern(str(tmp_path))) == expected


def test_relative_links_of_a_feed_file_resolve_against_its_self_link_else_its_home_page() -> None:
    atom = b"""<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
    <link href="https://example.org/home/"/><link rel="self" href="https://feeds.example.org/a/feed.xml"/>
    <entry><title>One</title><id>urn:1</id><link href="story-1.html"/></entry>
    <entry><title>Two</title><id>urn:2</id><link href="/root/story-2"/></entry></feed>"""
    parsed = parse_input(atom, "/data/feed.xml")
    assert [e["link"] for e in parsed.entries] == [
        "https://feeds.example.org/a/story-1.html",
        "https://feeds.example.org/root/story-2",
    ]
    rss = b"""<rss version="2.0"><channel><title>t</title><link>https://example.net/news/</link>
    <item><title>One</title><link>/a/1</link></item></channel></rss>"""
    assert parse_input(rss, "/data/feed.xml").entries[0]["link"] == "https://example.net/a/1"
    # Fetched over HTTP, the URL it came from wins over what the feed says about itself.
    fetched = parse_input(atom, "u", base_url="http://127.0.0.1:8000/x/feed")
    assert fetched.entries[1]["link"] == "http://127.0.0.1:8000/root/story-2"
    # No absolute base anywhere: the link stays as it is.
    bare = b"<rss version='2.0'><channel><title>t</title><item><link>/a/1</link></item></channel></rss>"
    assert parse_input(bare, "/data/feed.xml").entries[0]["link"] == "/a/1"


@pytest.mark.parametrize(
    ("raw", "utc", "offset"),
    [
        ("Seg, 24 Set 2018 19:42:40 -0300", datetime(2018, 9, 24, 22, 42, 40, tzinfo=UTC), -180),
        ("Mo, 03 Mär 2024 10:00:00 +0100", datetime(2024, 3, 3, 9, 0, tzinfo=UTC), 60),
        ("jeu., 15 août 2024 12:00:00 +0200", datetime(2024, 8, 15, 10, 0, tzinfo=UTC), 120),
        ("Lun, 1 Dic 2023 00:00:00 GMT", datetime(2023, 12, 1, 0, 0, tzinfo=UTC), 0),
        ("Sun, 03 Mar 2024 18:45:00 +0530", datetime(2024, 3, 3, 13, 15, tzinfo=UTC), 330),
    ],
)
def test_rfc822_dates_with_foreign_day_and_month_names(raw: str, utc: datetime, offset: int) -> None:
    assert parse_timestamp(raw, None, datetime(2026, 1, 1, tzinfo=UTC)) == (utc, offset)


def test_words_that_merely_look_like_foreign_months_make_no_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_timestamp("Out of office", None, now) == (None, None)
    assert parse_timestamp("Seg, 32 Set 2018 19:42:40 -0300", None, now) == (None, None)


@pytest.mark.corpus
def test_a_capped_real_feed_gives_the_first_entries_as_they_are_and_counts_the_rest(corpus: Path) -> None:
    # Past the cap the strict parser only counts entries: what it reads must not change.
    for feed in _real_feeds(corpus.resolve()):
        body = (corpus / feed["path"]).read_bytes()
        whole, capped = parse_input(body, feed["path"]), parse_input(body, feed["path"], max_entries=3)
        assert capped.entries == whole.entries[:3], feed["path"]
        assert len(capped.entries) + capped.entries_cut == len(whole.entries), feed["path"]
        assert (capped.feed_title, capped.feed_format) == (whole.feed_title, whole.feed_format), feed["path"]
