"""The records newsbeam writes: articles, dead letters, feed fetches, page fetches and stories.

This module is the single source of truth for every dataset's columns. Each dataset is a tuple of
`Column`s (name, Arrow type, meaning); the Arrow schemas, the README's column tables and the
partition keys are all derived from them. The records are typed: an article is a `TypedDict` at each
step of its way (`NormalizedArticle` -> `IdentifiedArticle` -> `CheckedArticle` -> `DetectedArticle`
-> `Article`, each adding what its stage adds), a dead letter a `DeadLetter`, a fetch row a `FeedFetch`; a test holds
them and the columns together (names and types). TypedDicts rather than frozen dataclasses: at run
time a record stays a plain dict keyed by column name (cheap to pickle, read by the writers as it
is), so the types cost nothing per article; a stage returns a new dict instead of editing its input.
DoFn signatures keep `Record` (Beam checks its own type hints and knows no TypedDicts); the pure
stage functions take and return the typed records.

It imports nothing else of newsbeam's, so every stage can import it. It is longer than most
modules because it holds the three column tables, which are data.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NotRequired, TypedDict

import pyarrow as pa

# 1: the first layout. 2: `articles.version` and `feed_fetches.already_stored` added. 3:
# `feed_fetches.entries_cut` added. 4: `feed_fetches.discovered_from` added. 5: full text: the
# `page_fetches` dataset, and on articles `text_source`, the `page_*` columns, `extractor(_version)`,
# `authors_source`, `language_declared_source`, `feed_category`, `feed_tags`. Files of every version
# are read together by column name (DuckDB `union_by_name`, a pyarrow dataset with the newest schema).
# 6: the `stories` dataset (near-duplicate stories, transforms/io/story_index.py).
SCHEMA_VERSION = 6

# The datasets of an output folder, each a folder of Hive-partitioned Parquet files.
ARTICLES = "articles"
DEAD_LETTERS = "dead_letters"
FEED_FETCHES = "feed_fetches"
PAGE_FETCHES = "page_fetches"  # one row per article page requested (or refused): transforms/fulltext.py
STORIES = (
    "stories"  # one row per newly stored article: its near-duplicate story (transforms/io/story_index.py)
)
DATASETS = (ARTICLES, DEAD_LETTERS, FEED_FETCHES, PAGE_FETCHES, STORIES)

# Spark cannot read nanosecond timestamps; microseconds in UTC are read by every engine.
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    meaning: str


class Outcome(enum.StrEnum):
    """What happened to one input (a feed URL or file), one value per `feed_fetches` row."""

    OK = "ok"
    OK_WITH_WARNINGS = "ok_with_warnings"  # ill-formed (bozo) feed that still gave entries
    EMPTY = "empty"  # a valid feed with no entries
    NOT_A_FEED = "not_a_feed"  # HTML, plain text, JSON that is no JSON Feed, ...
    ERROR = "error"  # unreadable, undecodable, HTTP or network failure
    NOT_MODIFIED = "not_modified"  # HTTP 304 to a conditional GET
    # Not read this run: a feed still fresh (ttl, max-age) or backing off after failures, or a path that
    # is no regular file (a FIFO, socket or device: reading one could block for ever).
    SKIPPED = "skipped"


class SourceType(enum.StrEnum):
    FEED = "feed"  # RSS, Atom, RDF, CDF or JSON Feed, from a file or a URL
    SEED_FILE = "seed_file"  # a text file: title line, blank line, body


class Stage(enum.StrEnum):
    """Where a dead letter was made."""

    READ = "read"
    PARSE = "parse"
    NORMALIZE = "normalize"
    DETECT_LANGUAGE = "detect_language"
    ENRICH = "enrich"
    WRITE = "write"


ARTICLE_COLUMNS: tuple[Column, ...] = (
    Column(
        "article_id",
        pa.string(),
        "Stable id: hash of the canonical URL, else of feed and entry id, else of the content",
    ),
    Column("article_id_source", pa.string(), "What the id was made from: `url`, `entry_id` or `content`"),
    Column("source", pa.string(), "The feed URL or file path the article came from"),
    Column("source_type", pa.string(), "`feed` or `seed_file`"),
    Column(
        "source_domain",
        pa.string(),
        "Host of the article URL (else of the feed), lower-case, without a leading `www.` (not the registered domain: `news.bbc.co.uk` stays)",
    ),
    Column("feed_title", pa.string(), "Title of the feed the entry came from"),
    Column("feed_url", pa.string(), "The feed's own link (its home page) as the feed states it"),
    Column("entry_id", pa.string(), "The entry's own id (`guid`, Atom `id`, JSON Feed `id`)"),
    Column("url", pa.string(), "The article link as given, made absolute against the feed's URL"),
    Column(
        "canonical_url",
        pa.string(),
        "Canonical form of `url`: lower-case host, no default port, fragment or tracking parameters, sorted query",
    ),
    Column("title", pa.string(), "Title as plain text"),
    Column("summary", pa.string(), "Summary as plain text (paragraphs separated by a blank line)"),
    Column("text", pa.string(), "Full text as plain text (the body of a seed file, a feed entry's content)"),
    Column("authors", pa.list_(pa.string()), "Author names, cleaned, in feed order, no duplicates"),
    Column("tags", pa.list_(pa.string()), "Categories and tags, cleaned, in feed order, no duplicates"),
    Column("published_at", TIMESTAMP, "Publication time in UTC; null when the input gives none"),
    Column(
        "published_offset_minutes",
        pa.int16(),
        "UTC offset the publication time was stated in; null when unknown",
    ),
    Column(
        "published_at_source",
        pa.string(),
        "Which field gave `published_at` (`feed:published`, `feed:dc:date`, `feed:date_published`, ...), or `none`",
    ),
    Column("updated_at", TIMESTAMP, "Last update time in UTC; null when the input gives none"),
    Column(
        "updated_offset_minutes", pa.int16(), "UTC offset the update time was stated in; null when unknown"
    ),
    Column("updated_at_source", pa.string(), "Which field gave `updated_at`, or `none`"),
    Column("ingested_at", TIMESTAMP, "Start time of the run that wrote the article (UTC)"),
    Column("language", pa.string(), "Chosen language, ISO 639-1 (`und` when undetermined)"),
    Column(
        "language_script",
        pa.string(),
        "Script subtag where the language has several (`Hans`/`Hant` for `zh`)",
    ),
    Column(
        "language_confidence",
        pa.float32(),
        "Detector probability of the chosen language (0 when undetermined)",
    ),
    Column("language_detected", pa.string(), "What the detector said on its own (`und` when it could not)"),
    Column(
        "language_declared",
        pa.string(),
        "Language the input declared (feed `<language>`, `xml:lang`, JSON Feed `language`), ISO 639-1",
    ),
    Column(
        "language_source",
        pa.string(),
        "Which was chosen: `detected`, `declared`, `agreed` (both the same) or `none`",
    ),
    Column("word_count", pa.int32(), "Words in title and text (CJK and Thai characters count as words)"),
    Column("char_count", pa.int32(), "Characters in title and text"),
    Column("reading_time_seconds", pa.int32(), "Estimated reading time at 230 words per minute"),
    Column("content_hash", pa.string(), "sha256 of the normalized title and text"),
    Column(
        "version",
        pa.int32(),
        "1 for the first stored version of `article_id`, +1 for each changed one (null in schema 1 files: read as 1)",
    ),
    Column(
        "ingest_date",
        pa.string(),
        "Partition key (a folder name, not in the files): UTC date of `ingested_at`, `YYYY-MM-DD`; DuckDB and Polars read it as a date, pandas as a category, `pyarrow.dataset` as a string",
    ),
    Column(
        "text_source",
        pa.string(),
        "Where `text` came from: `page` (the article's page, extracted and verified), `feed_content`, `feed_summary` (the entry's only text), `seed_file`, or `none` (a title only)",
    ),
    Column("page_url", pa.string(), "The article page requested, after redirects; null when none was"),
    Column("page_status", pa.int16(), "HTTP status of the page; null when no page was requested"),
    Column("page_fetched_at", TIMESTAMP, "When the page was requested (UTC); null when none was"),
    Column(
        "page_outcome",
        pa.string(),
        "What came of the page (`ok`, `extract_rejected`, `not_html`, `robots_disallowed`, `timeout`, ...: see `page_fetches.outcome`); null when none was wanted",
    ),
    Column(
        "page_canonical_url",
        pa.string(),
        "The page's `rel=canonical` URL, as it states it (stored only: `article_id` stays the link's)",
    ),
    Column(
        "extractor",
        pa.string(),
        "What extracted `text` from the page: `trafilatura` or `schema.org:articleBody`; null when the text is the feed's",
    ),
    Column(
        "extractor_version", pa.string(), "trafilatura's version and newsbeam's rules, e.g. `2.3.1+rules.1`"
    ),
    Column(
        "authors_source",
        pa.string(),
        "Which gave `authors`: `feed`, `page:jsonld`, `page:meta`, or `none`",
    ),
    Column(
        "language_declared_source",
        pa.string(),
        "Which declared the language: `feed`, `page:html_lang`, `page:meta_language`, `page:jsonld`, `page:og_locale`, or `none`",
    ),
    Column("feed_category", pa.string(), "The `category` hint of the article's `feeds:` entry in the config"),
    Column(
        "feed_tags", pa.list_(pa.string()), "The `tags` hints of the article's `feeds:` entry in the config"
    ),
    Column("run_id", pa.string(), "Id of the run that wrote the article"),
    Column("pipeline_version", pa.string(), "newsbeam version that wrote the article"),
    Column("schema_version", pa.int16(), "Version of this schema"),
)

# The run's columns that dead letters and feed fetches end with (articles place them among theirs).
_RUN_COLUMNS: tuple[Column, ...] = (
    Column(
        "ingest_date",
        pa.string(),
        "Partition key (a folder name): UTC date of the run's start, read as in `articles`",
    ),
    Column("run_id", pa.string(), "Id of the run"),
    Column("pipeline_version", pa.string(), "newsbeam version"),
)

DEAD_LETTER_COLUMNS: tuple[Column, ...] = (
    Column("stage", pa.string(), "Stage that failed: read, parse, normalize, detect_language, enrich, write"),
    Column(
        "error_type",
        pa.string(),
        "Short machine-readable reason, e.g. `http_500`, `undecodable`, `no_content`",
    ),
    Column("message", pa.string(), "Human-readable explanation"),
    Column("source", pa.string(), "The feed URL or file path the input came from"),
    Column("source_type", pa.string(), "`feed` or `seed_file`"),
    Column(
        "entry_ref", pa.string(), "Which entry of the source failed (its id or link), null for a whole input"
    ),
    Column(
        "excerpt",
        pa.string(),
        "The start of the failing input, enough to see and replay it (at most 2,000 characters)",
    ),
    Column("failed_at", TIMESTAMP, "When the failure was recorded (UTC)"),
    *_RUN_COLUMNS,
)

FEED_FETCH_COLUMNS: tuple[Column, ...] = (
    Column("source", pa.string(), "The feed URL or file path, as in `articles.source`"),
    Column("source_type", pa.string(), "`feed` or `seed_file`"),
    Column("outcome", pa.string(), "ok, ok_with_warnings, empty, not_a_feed, error, not_modified, skipped"),
    Column(
        "feed_format",
        pa.string(),
        "rss20, atom10, rss10, json11, ... as the parser names it; `text` for seed files",
    ),
    Column("feed_title", pa.string(), "Title of the feed"),
    Column("error_type", pa.string(), "Reason when the outcome is not ok"),
    Column(
        "error_class",
        pa.string(),
        "Family of the error: http, timeout, network, body, policy, content (null when none)",
    ),
    Column("message", pa.string(), "Parser warning or error message"),
    Column("url", pa.string(), "URL requested (HTTP sources)"),
    Column("final_url", pa.string(), "URL after redirects (HTTP sources)"),
    Column("discovered_from", pa.string(), "The HTML page listed as a feed that named this feed (discovery)"),
    Column("http_status", pa.int16(), "Final HTTP status (HTTP sources)"),
    Column("etag", pa.string(), "`ETag` the server sent (HTTP sources)"),
    Column("last_modified", pa.string(), "`Last-Modified` the server sent (HTTP sources)"),
    Column("attempts", pa.int16(), "Requests made for the feed, retries included (HTTP sources)"),
    Column("bytes", pa.int64(), "Size of the body read"),
    Column("entries", pa.int32(), "Entries found in the input (`entries_cut` of them not read)"),
    Column(
        "entries_cut",
        pa.int32(),
        "Entries beyond `fetch.max_entries_per_feed`, not read; a `too_many_entries` dead letter says so",
    ),
    Column("articles_written", pa.int32(), "Entries written as articles in this run"),
    Column("duplicates", pa.int32(), "Entries dropped as duplicates of another entry in this run"),
    Column(
        "already_stored",
        pa.int32(),
        "Entries not written because an earlier run stored the same version (same id and content)",
    ),
    Column("dead_letters", pa.int32(), "Entries that failed a later stage (each has a dead letter)"),
    Column("started_at", TIMESTAMP, "When reading the input started (UTC)"),
    Column("elapsed_ms", pa.int32(), "Time spent reading and parsing the input"),
    *_RUN_COLUMNS,
)

PAGE_FETCH_COLUMNS: tuple[Column, ...] = (
    Column("url", pa.string(), "The article page as the article links it (redacted)"),
    Column("final_url", pa.string(), "The page after redirects"),
    Column("source", pa.string(), "The feed whose article linked the page, as in `articles.source`"),
    Column(
        "article_id",
        pa.string(),
        "The article the page was fetched for (a page shared by several is fetched once)",
    ),
    Column(
        "reason",
        pa.string(),
        "Why the page was wanted: `short` or `truncated` (`fulltext.mode: auto`), `always`",
    ),
    Column(
        "outcome",
        pa.string(),
        "ok, extract_rejected, not_html, too_large, robots_disallowed, robots_unreachable, crawl_delay_too_long, http_error, timeout, private_address, redirect_loop, network_error, bad_url, bad_body, crash",
    ),
    Column(
        "rejection",
        pa.string(),
        "Why an extracted text was no upgrade: off_topic, shorter_than_feed, no_gain, paywall, empty",
    ),
    Column(
        "robots",
        pa.string(),
        "robots.txt's decision: allowed, disallowed, no_robots (4xx: allowed), unreachable (5xx or no answer: disallowed)",
    ),
    Column(
        "crawl_delay_seconds", pa.float32(), "The Crawl-delay (or Request-rate) robots.txt asks of newsbeam"
    ),
    Column("http_status", pa.int16(), "Final HTTP status of the page"),
    Column("content_type", pa.string(), "Content-Type the server sent"),
    Column(
        "media_type",
        pa.string(),
        "The media type as read from the header and the bytes (`text/html`, `application/pdf`, ...)",
    ),
    Column("charset", pa.string(), "The charset the page was decoded with"),
    Column(
        "charset_source",
        pa.string(),
        "Where the charset came from: bom, utf-8, header, meta, detected, fallback",
    ),
    Column("bytes", pa.int64(), "Size of the body read (after decoding)"),
    Column("page_words", pa.int32(), "Words of the best text found on the page, also when rejected"),
    Column("attempts", pa.int16(), "Requests made for the page, retries included"),
    Column("elapsed_ms", pa.int32(), "Time the request took, retries and redirects included"),
    Column("waited_ms", pa.int32(), "Time waited before the request for the host's limits (slots, spacing)"),
    Column(
        "error_type",
        pa.string(),
        "The fetcher's reason when the page failed (`http_404`, `read_timeout`, ...)",
    ),
    Column("message", pa.string(), "Human-readable explanation (the rejection's reason, the error)"),
    Column("fetched_at", TIMESTAMP, "When the page was requested (UTC)"),
    Column(
        "extractor_version",
        pa.string(),
        "trafilatura's version and newsbeam's rules, when the page was extracted",
    ),
    *_RUN_COLUMNS,
)

STORY_COLUMNS: tuple[Column, ...] = (
    Column(
        "article_id", pa.string(), "The article (`articles.article_id`); one row per article, never changed"
    ),
    Column(
        "story_id",
        pa.string(),
        "The story: the `article_id` of its first article (commit order, then `published_at`, then `article_id`)",
    ),
    Column(
        "near_duplicate_of",
        pa.string(),
        "The most similar earlier article the article joined the story through; null for a story's first",
    ),
    Column(
        "story_similarity",
        pa.float32(),
        "Estimated similarity to `near_duplicate_of` (MinHash Jaccard, or containment for a teaser); null for a first",
    ),
    Column("published_at", TIMESTAMP, "The article's publication time (UTC), as in `articles`"),
    Column("source_domain", pa.string(), "The article's `source_domain`, as in `articles`"),
    Column("run_id", pa.string(), "Id of the run (or stream) whose commit assigned the story"),
    Column(
        "ingest_date",
        pa.string(),
        "Partition key (a folder name): the article's `ingest_date`, read as in `articles`",
    ),
)

# `ingest_date` always comes first; the keys after it are configurable among these.
PARTITIONABLE_ARTICLE_KEYS: tuple[str, ...] = ("language", "source_domain", "source_type")
DEFAULT_ARTICLE_PARTITION_KEYS: tuple[str, ...] = ("ingest_date", "language")


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(c.name, c.type, metadata={"meaning": c.meaning}) for c in columns],
        metadata={"newsbeam.schema_version": str(SCHEMA_VERSION)},
    )


ARTICLE_SCHEMA = arrow_schema(ARTICLE_COLUMNS)
DEAD_LETTER_SCHEMA = arrow_schema(DEAD_LETTER_COLUMNS)
FEED_FETCH_SCHEMA = arrow_schema(FEED_FETCH_COLUMNS)
PAGE_FETCH_SCHEMA = arrow_schema(PAGE_FETCH_COLUMNS)
STORY_SCHEMA = arrow_schema(STORY_COLUMNS)

ARTICLE_FIELDS = tuple(c.name for c in ARTICLE_COLUMNS)

Record = dict[str, Any]

# Keys an article carries on its way that are not columns (the writers read only the columns).
SOURCE_KEY: Final = "source_key"  # what identifies the source in ids: see `NormalizedArticle.source_key`
CARRIED_KEYS = frozenset({"ordinal", SOURCE_KEY, "language_declared_raw", "already_stored"})
# After EnrichArticles, with stories on: the article's near-duplicate fingerprint (`FingerprintedArticle`).
STORY_PRINT: Final = "story_print"


class NormalizedArticle(TypedDict):
    """What NormalizeArticles makes of one raw entry (transforms/normalize.py)."""

    source: str
    source_type: str
    ordinal: int  # the entry's position in its input (not a column)
    feed_title: str | None
    feed_url: str | None
    entry_id: str | None
    url: str | None
    canonical_url: str | None
    title: str | None
    summary: str | None
    text: str | None
    authors: list[str]
    tags: list[str]
    published_at: datetime | None
    published_offset_minutes: int | None
    published_at_source: str
    updated_at: datetime | None
    updated_offset_minutes: int | None
    updated_at_source: str
    # The language the input declared, as written; DetectLanguage reads and removes it (not a column).
    language_declared_raw: NotRequired[str | None]
    # Set by the read stage on the entries of a file: its resolved path, so that the spelling of the
    # path does not change ids; `source` otherwise (not a column).
    source_key: NotRequired[str]
    feed_category: NotRequired[str | None]  # the hints of the feed's `feeds:` entry (only when given)
    feed_tags: NotRequired[list[str]]


class IdentifiedArticle(NormalizedArticle):
    """With its id and content hash (`identify_article`, transforms/enrich.py)."""

    article_id: str
    article_id_source: str
    content_hash: str


class CheckedArticle(IdentifiedArticle):
    """Past the known-revision check (transforms/dedupe.py): what the full-text stage gets."""

    # The store has this (article_id, content_hash) already: a later stage need not fetch its page
    # (not a column; the sink still decides). Streaming drops such articles instead of marking them.
    already_stored: bool
    version: NotRequired[int]  # streaming: the provisional version the commit of its pane decides


class FullTextArticle(CheckedArticle):
    """With its text's provenance, and the page's text when it was an upgrade (transforms/fulltext.py)."""

    text_source: str
    page_url: str | None
    page_status: int | None
    page_fetched_at: datetime | None
    page_outcome: str | None
    page_canonical_url: str | None
    extractor: str | None
    extractor_version: str | None
    authors_source: str
    language_declared_source: str


class DetectedArticle(FullTextArticle):
    """With its language and where that came from (transforms/language.py)."""

    language: str
    language_script: str | None
    language_confidence: float
    language_detected: str
    language_declared: str | None
    language_source: str


class Article(DetectedArticle):
    """A whole article row: with counts and the run's columns (`enrich_article`, transforms/enrich.py)."""

    source_domain: str | None
    word_count: int
    char_count: int
    reading_time_seconds: int
    ingested_at: datetime
    ingest_date: str
    run_id: str
    pipeline_version: str
    schema_version: int


class FingerprintedArticle(Article):
    """With its fingerprint for stories (transforms/story_prints.py): not a column, the commit reads it."""

    story_print: bytes


class StoryRow(TypedDict):
    """A `stories` row (transforms/io/story_index.py)."""

    article_id: str
    story_id: str
    near_duplicate_of: str | None
    story_similarity: float | None
    published_at: datetime | None
    source_domain: str | None
    run_id: str
    ingest_date: str


class DeadLetter(TypedDict):
    """A dead letter; the run's columns are added when it is written."""

    stage: str
    error_type: str
    message: str
    source: str
    source_type: str
    entry_ref: str | None
    excerpt: str | None
    failed_at: datetime
    ingest_date: NotRequired[str]
    run_id: NotRequired[str]
    pipeline_version: NotRequired[str]


class FeedFetch(TypedDict, total=False):
    """A `feed_fetches` row: the read stage fills what it knows, the accounting the counts."""

    source: str
    source_type: str
    outcome: str
    feed_format: str | None
    feed_title: str | None
    error_type: str | None
    error_class: str | None
    message: str | None
    url: str | None
    final_url: str | None
    discovered_from: str | None
    http_status: int | None
    etag: str | None
    last_modified: str | None
    attempts: int | None
    bytes: int | None
    entries: int
    entries_cut: int
    articles_written: int
    duplicates: int
    already_stored: int
    dead_letters: int
    started_at: datetime | None
    elapsed_ms: int | None
    ingest_date: str
    run_id: str
    pipeline_version: str


class PageFetchRow(TypedDict):
    """A `page_fetches` row (`page_fetch_row`, transforms/fulltext.py); the run's columns added at write."""

    url: str
    final_url: str | None
    source: str
    article_id: str
    reason: str
    outcome: str
    rejection: str | None
    robots: str | None
    crawl_delay_seconds: float | None
    http_status: int | None
    content_type: str | None
    media_type: str | None
    charset: str | None
    charset_source: str | None
    bytes: int
    page_words: int | None
    attempts: int
    elapsed_ms: int
    waited_ms: int
    error_type: str | None
    message: str | None
    fetched_at: datetime
    extractor_version: str | None
    ingest_date: str
    run_id: str
    pipeline_version: str


EXCERPT_CHARS = 2000


# --- text that Arrow and Beam accept -----------------------------------------------------------
#
# Arrow strings and Beam's coders need valid UTF-8, but Python strings may hold lone surrogates:
# JSON's `\ud800` escape decodes to one, and so does an undecodable byte of a file name
# (surrogateescape, how `os` hands out such names). Two rules, each used in one kind of place:
# - content (what articles and fetch rows say about their input) is repaired as a UTF-8 decoder
#   repairs ill-formed input: each lone surrogate becomes U+FFFD (`valid_text`);
# - diagnostics (dead-letter messages, excerpts, refs) show what was there: `\ud800` (`escaped_text`).
# File paths have a rule of their own (transforms/read.py: `path_as_text`).


def valid_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD; unchanged (and fast) when it is valid."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def escaped_text(text: str) -> str:
    """`text` with each lone surrogate written as its escape (`\\ud800`), to show what was there."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def entry_ref(entry: Mapping[str, Any]) -> str:
    """How every stage names one entry of its source: its own id, else its link, else `#<ordinal>`.

    One rule for raw entries (`link`) and articles (`url`): a dead letter with a ref is one entry of
    its source and is counted in that source's books; only a whole input's dead letter has none.
    """
    return escaped_text(
        str(entry.get("entry_id") or entry.get("link") or entry.get("url") or f"#{entry.get('ordinal', 0)}")
    )


def excerpt(data: object, limit: int = EXCERPT_CHARS) -> str | None:
    """The start of a failing input, bounded, decoded leniently so that any bytes fit."""
    if data is None:
        return None
    if isinstance(data, bytes):
        data = data[: limit * 4].decode("utf-8", errors="replace")
    elif not isinstance(data, str):  # a record field of the wrong type is what failed: show it
        data = repr(data)
    return escaped_text(data[:limit])


def dead_letter(
    stage: Stage,
    error_type: str,
    message: str,
    source: str,
    source_type: str,
    *,
    entry_ref: str | None = None,
    data: bytes | str | None = None,
) -> Record:
    """A dead-letter record (the keys of `DeadLetter`); the run columns are added when written.

    Typed `Record`, not `DeadLetter`: the writers complete it in place with the run's columns.

    Its text is made valid UTF-8 (`escaped_text`): a dead letter must always be writable.
    """
    return {
        "stage": str(stage),
        "error_type": escaped_text(error_type),
        "message": escaped_text(message[:1000]),
        "source": escaped_text(source),
        "source_type": source_type,
        "entry_ref": escaped_text(entry_ref) if entry_ref is not None else None,
        "excerpt": excerpt(data),
        "failed_at": datetime.now(UTC),
    }


def failed_article(stage: Stage, error: Exception, article: Mapping[str, Any]) -> Record:
    """The dead letter of an article that a stage could not process."""
    return dead_letter(
        stage,
        type(error).__name__,
        str(error),
        article["source"],
        article["source_type"],
        entry_ref=entry_ref(article),
        data=article.get("title"),
    )


@dataclass(frozen=True)
class RunInfo:
    """What every record of one run shares."""

    run_id: str
    started_at: datetime  # UTC
    pipeline_version: str

    @property
    def ingest_date(self) -> str:
        return self.started_at.strftime("%Y-%m-%d")

    def stamp(self, record: Record) -> Record:
        """The record with this run's columns (for dead letters and fetch rows)."""
        return {
            **record,
            "ingest_date": self.ingest_date,
            "run_id": self.run_id,
            "pipeline_version": self.pipeline_version,
        }


def markdown_table(columns: tuple[Column, ...]) -> str:
    """The README's column table for one dataset (a test keeps the README in step)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | `{c.type}` | {c.meaning} |" for c in columns]
    return "\n".join(lines)
