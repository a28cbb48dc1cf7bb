"""The full text of an article's page, checked against what the feed already says (pure, no Beam).

Given a fetched page (bytes or decoded HTML, with its Content-Type header and URL) and the feed's
title, summary and text, `extract_page` returns one frozen `PageExtraction`: the page's main text and
where it came from (a schema.org `articleBody`, or trafilatura), or why the feed's own text should
be kept; and what the page says about itself (`<html lang>`, `rel=canonical`, publication and
update times, authors), each with its source.

A page-only extractor knows the page; the pipeline also knows what the feed said about the article,
and uses it twice:
- to locate the text: a lead paragraph (standfirst) that the feed's summary matches but the
  extractor left out is put back in front of the text;
- to verify it: consent walls, paywall stubs and error pages come back as text, so an extraction
  shorter than the feed's text, sharing under half of the summary's word 3-grams, or adding too
  little to it is no upgrade, and the result says why. One measured exception to the 3-gram rule:
  a page whose own meta description is the summary (as for many feeds, whose summary is written for
  feeds and meta tags and appears nowhere in the article) passes if its text has the summary's words.
No per-site rules: every rule here is stated on HTML, schema.org or language in general.

`needs_full_text` is the `auto` rule of `fulltext.mode`: fetch when the feed's text is short or
looks truncated ("Read more", "[...]", a trailing ellipsis, in several languages).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import charset_normalizer
import lxml.etree
import lxml.html
import trafilatura
from trafilatura.settings import Extractor
from trafilatura.utils import HTML_PARSER
from w3lib.encoding import html_body_declared_encoding, http_content_type_encoding, read_bom, resolve_encoding

from transforms.enrich import word_tokens
from transforms.normalize import clean_list, clean_text, html_to_text, parse_timestamp
from transforms.parse import is_http_url

EXTRACTOR = "trafilatura"
EXTRACTOR_VERSION: str = trafilatura.__version__
# Bumped whenever a rule below changes what is extracted, so stored texts can be told apart.
RULES_VERSION = "1"

HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})


class TextSource(enum.StrEnum):
    """Where an article's text came from, as the `text_source` provenance column will say."""

    PAGE_JSONLD = "page:jsonld"  # the page's schema.org Article `articleBody`
    PAGE_TRAFILATURA = "page:trafilatura"  # trafilatura's main text of the page
    FEED = "feed"  # the page was no upgrade: keep the feed's text


class Rejection(enum.StrEnum):
    """Why a page's text is not used (the article keeps the feed's text)."""

    NOT_HTML = "not_html"  # a PDF, an image, plain text, ...
    EMPTY = "empty"  # nothing extractable (an empty or script-only page)
    SHORTER_THAN_FEED = "shorter_than_feed"  # an error page, a consent wall, a stub
    OFF_TOPIC = "off_topic"  # shares too little of the feed's summary (or title)
    NO_GAIN = "no_gain"  # says little beyond the feed's own text
    PAYWALL = "paywall"  # as NO_GAIN, on a page that declares itself not free (schema.org)


class Verification(enum.StrEnum):
    """How a page's text was found to be the article the feed describes."""

    SUMMARY = "summary"  # the text holds enough of the summary's word 3-grams
    # The page describes itself with the summary (meta tags), and the text has the summary's words.
    PAGE_DESCRIPTION = "page_description"
    TITLE = "title"  # no usable summary: the text holds the title's words
    NONE = "none"  # the feed gave neither: nothing to verify against


@dataclass(frozen=True)
class ExtractSettings:
    """The thresholds of the rules (defaults measured in benchmarks/EXTRACT.md)."""

    # A summary 3-gram share below this: the page is about something else (consent wall, error page)...
    min_summary_share: float = 0.5
    # ...unless the page describes itself with the summary (meta tags) and the text has this share of
    # the summary's words. False keeps the 3-gram rule alone (see benchmarks/EXTRACT.md for both).
    trust_page_description: bool = True
    min_summary_words_share: float = 0.25
    # A summary shorter than this says too little to verify with ("Click to read more."): the title does.
    min_summary_words: int = 6
    # The page must add at least this many words to the feed's text, and this share of it.
    min_gain_words: int = 20
    min_gain_ratio: float = 0.2
    # The summary is "in" the text when this share of its 3-grams is; else a matching lead is sought.
    lead_covered_share: float = 0.6
    # A lead element must hold this share of the summary's 3-grams and be at most this much longer.
    lead_match_share: float = 0.6
    lead_max_growth: float = 1.6
    # A JSON-LD articleBody replaces trafilatura's text when it is at least this much longer.
    jsonld_min_growth: float = 1.25
    # Related-article cross links ("Read more: ...") longer than this are prose, not links.
    cross_link_max_words: int = 25
    # trafilatura's `fast` mode (no readability/justext comparison): a quarter less CPU, a little less
    # text found (benchmarks/EXTRACT.md has both).
    trafilatura_fast: bool = False


DEFAULT_SETTINGS = ExtractSettings()


@dataclass(frozen=True)
class DecodedPage:
    html: str
    charset: str
    charset_source: str  # bom, header, meta, utf-8 (valid UTF-8 whatever was declared), detected, fallback


@dataclass(frozen=True)
class PageMetadata:
    """What the page says about itself; each value with the field it came from (`page:...`)."""

    declared_language: str | None = None  # raw tag, e.g. `pt-BR`
    declared_language_source: str = "none"  # page:html_lang, page:meta_language, page:jsonld, page:og_locale
    canonical_url: str | None = None
    published_at: datetime | None = None
    published_offset_minutes: int | None = None
    published_at_source: str = "none"  # page:jsonld, page:meta
    updated_at: datetime | None = None
    updated_offset_minutes: int | None = None
    updated_at_source: str = "none"
    authors: tuple[str, ...] = ()
    authors_source: str = "none"  # page:jsonld, page:meta
    accessible_for_free: bool | None = None  # schema.org isAccessibleForFree, when stated


@dataclass(frozen=True)
class PageExtraction:
    """One page's outcome. `text` is set only when the page is an upgrade over the feed's text."""

    text_source: TextSource
    text: str | None
    rejection: Rejection | None
    reason: str  # one human-readable sentence, for the fetch record and the report
    media_type: str
    metadata: PageMetadata = field(default_factory=PageMetadata)
    charset: str | None = None
    charset_source: str | None = None
    page_words: int = 0  # words of the best page text found, also when rejected
    summary_share: float | None = None  # share of the summary's 3-grams in that text
    verification: Verification | None = None  # how the text was found to be the article (None: rejected)
    lead_added: bool = False  # a lead paragraph the extractor left out was put back
    extractor: str = EXTRACTOR
    extractor_version: str = EXTRACTOR_VERSION
    rules_version: str = RULES_VERSION

    @property
    def upgraded(self) -> bool:
        return self.text is not None


# --- media type and charset ---------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
)
_LOOKS_LIKE_HTML = re.compile(rb"<(?:!doctype\s+html|html|head|body|meta|title|div|p)[\s>/]", re.IGNORECASE)


def media_type(content_type: str | None, body: bytes) -> str:
    """The page's media type: the header's, unless the bytes are plainly something else.

    A server that calls a PDF or an image `text/html` is believed on neither; a missing or generic
    header (`application/octet-stream`) is replaced by what the bytes look like.
    """
    head = body[:1024].lstrip()
    for magic, sniffed in _MAGIC:
        if head.startswith(magic):
            return sniffed
    if head[4:12] == b"ftypisom" or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        return "image/webp" if head.startswith(b"RIFF") else "video/mp4"
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared and declared not in ("application/octet-stream", "binary/octet-stream"):
        return declared
    return "text/html" if _LOOKS_LIKE_HTML.search(head) else declared or "application/octet-stream"


def _decodes(body: bytes, encoding: str) -> str | None:
    try:
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(body: bytes, content_type: str | None = None) -> DecodedPage:
    """The page as text: BOM, then valid UTF-8, then the header's charset, `<meta charset>`, detection.

    Bytes that are valid UTF-8 are UTF-8 whatever the page declares (a common mistake is declaring
    ISO-8859-1 for UTF-8 bytes; the converse is all but impossible by chance). A declaration is
    used only when the bytes decode under it; `latin1` means windows-1252, as browsers read it.
    """
    bom_encoding, bom = read_bom(body)
    if bom_encoding and bom:
        text = _decodes(body[len(bom) :], bom_encoding)
        if text is not None:
            return DecodedPage(text, bom_encoding, "bom")
    text = _decodes(body, "utf-8")
    if text is not None:
        return DecodedPage(text, "utf-8", "utf-8")
    for label, source in (
        (http_content_type_encoding(content_type), "header"),
        (html_body_declared_encoding(body[:8192]), "meta"),
    ):
        encoding = resolve_encoding(label) if label else None
        if encoding and encoding != "utf-8" and (text := _decodes(body, encoding)) is not None:
            return DecodedPage(text, encoding, source)
    best = charset_normalizer.from_bytes(body[:65536]).best()
    if best is not None and (text := _decodes(body, best.encoding)) is not None:
        return DecodedPage(text, best.encoding, "detected")
    return DecodedPage(body.decode("utf-8", errors="replace"), "utf-8", "fallback")


_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_INVALID_XML_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_INVALID_XML_BYTES = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20))


def _parses_as_is(utf8_body: bytes) -> bool:
    # bytes.translate is a C loop: ten times faster than a regular expression scan of a large page.
    return (
        len(utf8_body.translate(None, _INVALID_XML_BYTES)) == len(utf8_body)
        # U+FFFE and U+FFFF are no characters in XML (one scan for their rare common prefix first)
        and (
            b"\xef\xbf" not in utf8_body or not (b"\xef\xbf\xbe" in utf8_body or b"\xef\xbf\xbf" in utf8_body)
        )
        and utf8_body.lstrip()[:5] != b"<?xml"
    )


def parse_html(html: str, utf8_body: bytes | None = None) -> lxml.html.HtmlElement | None:
    """The page's tree, parsed with trafilatura's parser settings, or None when there is no HTML.

    `utf8_body` is the same page as the valid UTF-8 bytes it was decoded from: parsed as they are
    when they need no cleaning, which saves encoding the text again (3% of an extraction).
    """
    if utf8_body is not None and _parses_as_is(utf8_body):
        source = utf8_body
    else:
        source = _INVALID_XML_CHARS.sub("", _XML_DECLARATION.sub("", html, count=1)).encode(
            "utf-8", "surrogatepass"
        )
    if not source.strip():
        return None
    try:
        tree = lxml.html.fromstring(source, parser=HTML_PARSER)
    except (lxml.etree.ParserError, ValueError):
        return None
    return tree if isinstance(tree, lxml.html.HtmlElement) else None


# --- words and n-grams --------------------------------------------------------------------------


def _shingles(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def casefolded_tokens(text: str | None) -> list[str]:
    return word_tokens((text or "").casefold())


def ngram_share(reference: str | Sequence[str], text: str | Sequence[str], n: int = 3) -> float:
    """Share of the reference's word n-grams that also occur in the text (1.0 for an empty reference).

    Words are case-folded; scripts written without spaces count each character as a word, so the
    rule holds for Japanese or Thai as it does for English.
    """
    reference_tokens = casefolded_tokens(reference) if isinstance(reference, str) else reference
    n = min(n, len(reference_tokens))  # a reference shorter than n words is one n-gram, itself
    if n == 0:
        return 1.0
    wanted = _shingles(reference_tokens, n)
    text_tokens = casefolded_tokens(text) if isinstance(text, str) else text
    # Only the text's n-grams made of the reference's words can match: the others are never built.
    vocabulary = set(reference_tokens)
    marked = [token if token in vocabulary else None for token in text_tokens]
    found = {gram for gram in zip(*(marked[i:] for i in range(n)), strict=False) if None not in gram}
    return len(wanted & found) / len(wanted)


# --- the auto rule --------------------------------------------------------------------------------

# What feeds append to a teaser, by language; matched at the end of the text only.
TRUNCATION_MARKERS: tuple[str, ...] = (
    "read more",
    "read the full story",
    "read the full article",
    "read full article",
    "continue reading",
    "keep reading",
    "full story",
    "appeared first on",
    "weiterlesen",
    "mehr lesen",
    "lesen sie mehr",
    "zum artikel",
    "lire la suite",
    "lire plus",
    "en savoir plus",
    "leer más",
    "seguir leyendo",
    "sigue leyendo",
    "leia mais",
    "continue lendo",
    "continuar lendo",
    "leggi tutto",
    "continua a leggere",
    "leggi di più",
    "lees meer",
    "verder lezen",
    "czytaj dalej",
    "czytaj więcej",
    "läs mer",
    "les mer",
    "læs mere",
    "lue lisää",
    "tovább",
    "devamını oku",
    "devamı",
    "читать далее",
    "читать дальше",
    "подробнее",
    "續きを読む",
    "続きを読む",
    "阅读全文",
    "閱讀全文",
    "더보기",
    "اقرأ المزيد",
    "अधिक पढ़ें",
    "और पढ़ें",
)
_TRAILING_JUNK = " \t\n\r.:!»«›‹>→…-–—|[]()\"'"
_ELLIPSIS_END = re.compile(r"(?:\.\.\.|…)\s*[\]\)]?\s*$|\[\s*(?:\.\.\.|…)\s*\]\s*$|\[\s*(?:\.\.\.|…)\s*\]")
_WORDS_AFTER_MARKER = 12  # "The post X appeared first on Y.": the marker may have a few words after it


def looks_truncated(text: str | None) -> bool:
    """Whether a feed's text ends as a teaser does: "Read more", "[...]", a trailing ellipsis."""
    if not text:
        return False
    stripped = text.strip()
    if _ELLIPSIS_END.search(stripped[-200:]):
        return True
    tail = stripped[-160:].casefold().rstrip(_TRAILING_JUNK)
    for marker in TRUNCATION_MARKERS:
        at = tail.rfind(marker)
        if at >= 0 and (at == 0 or not tail[at - 1].isalnum()):
            after = tail[at + len(marker) :]
            if not after.strip(_TRAILING_JUNK) or (
                marker == "appeared first on" and len(after.split()) <= _WORDS_AFTER_MARKER
            ):
                return True
    return False


def needs_full_text(feed_text: str | None, min_words: int) -> str | None:
    """The `auto` rule: why the page should be fetched (`short`, `truncated`), or None to keep the feed's."""
    if len(word_tokens(feed_text or "")) < min_words:
        return "short"
    if looks_truncated(feed_text):
        return "truncated"
    return None


# --- page metadata --------------------------------------------------------------------------------

_ARTICLE_TYPES = frozenset(
    {
        "article",
        "newsarticle",
        "reportagenewsarticle",
        "analysisnewsarticle",
        "opinionnewsarticle",
        "reviewnewsarticle",
        "backgroundnewsarticle",
        "askpublicnewsarticle",
        "blogposting",
        "liveblogposting",
        "socialmediaposting",
        "report",
        "techarticle",
        "scholarlyarticle",
        "satiricalarticle",
        "advertisercontentarticle",
    }
)
_JSONLD_SCRIPTS = lxml.etree.XPath(
    "//script[translate(normalize-space(@type), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    " = 'application/ld+json']"
)
_CDATA = re.compile(r"^\s*(?://\s*)?<!\[CDATA\[|(?://\s*)?\]\]>\s*$|^\s*<!--|-->\s*$")


def _types(node: dict[str, Any]) -> set[str]:
    value = node.get("@type")
    values = value if isinstance(value, list) else [value]
    return {str(v).rsplit("/", 1)[-1].casefold() for v in values if isinstance(v, str)}


def _walk_jsonld(node: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > 6:
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk_jsonld(item, depth + 1)
    elif isinstance(node, dict):
        yield node
        for key in ("@graph", "mainEntity", "mainEntityOfPage", "hasPart", "itemListElement"):
            if key in node:
                yield from _walk_jsonld(node[key], depth + 1)


def jsonld_articles(tree: lxml.html.HtmlElement) -> list[dict[str, Any]]:
    """The page's schema.org Article objects (any Article type), in page order."""
    found: list[dict[str, Any]] = []
    for script in _JSONLD_SCRIPTS(tree):
        if not script.text:
            continue
        try:
            data = json.loads(_CDATA.sub("", script.text), strict=False)
        except ValueError:
            continue
        found.extend(node for node in _walk_jsonld(data) if _types(node) & _ARTICLE_TYPES)
    return found


def meta_tags(tree: lxml.html.HtmlElement) -> dict[str, str]:
    """The `<meta>` values by case-folded `property`, `name`, `itemprop` or `http-equiv`; first wins."""
    tags: dict[str, str] = {}
    for meta in tree.iterfind(".//meta"):
        content = (meta.get("content") or "").strip()
        if not content:
            continue
        for attribute in ("property", "name", "itemprop", "http-equiv"):
            key = (meta.get(attribute) or "").strip().casefold()
            if key:
                tags.setdefault(key, content)
    return tags


def _first_str(values: Iterable[Any]) -> str | None:
    return next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)


def declared_language(
    tree: lxml.html.HtmlElement, meta: dict[str, str], articles: Sequence[dict[str, Any]]
) -> tuple[str | None, str]:
    """(raw tag, source): `<html lang>`, else `Content-Language`, JSON-LD `inLanguage`, `og:locale`."""
    for value, source in (
        (tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang"), "page:html_lang"),
        (meta.get("content-language"), "page:meta_language"),
        (_first_str(a.get("inLanguage") for a in articles), "page:jsonld"),
        (meta.get("og:locale"), "page:og_locale"),  # `ja_JP`: declared_language() reads `_` as `-`
    ):
        tag = (value or "").split(",")[0].strip()
        if tag:
            return tag, source
    return None, "none"


def canonical_link(tree: lxml.html.HtmlElement, page_url: str | None) -> str | None:
    """The page's `rel=canonical` URL, absolute (http(s) only)."""
    for link in tree.iterfind(".//link"):
        href = (link.get("href") or "").strip()
        if href and "canonical" in (link.get("rel") or "").casefold().split():
            candidate = urljoin(page_url or "", href)
            return candidate if is_http_url(candidate) else None
    return None


def _page_time(
    jsonld_key: str,
    meta_keys: Sequence[str],
    articles: Sequence[dict[str, Any]],
    meta: dict[str, str],
    now: datetime,
) -> tuple[datetime | None, int | None, str]:
    candidates = [(_first_str(a.get(jsonld_key) for a in articles), "page:jsonld")]
    candidates.extend((meta.get(key), "page:meta") for key in meta_keys)
    for raw, source in candidates:
        if raw:
            utc, offset = parse_timestamp(raw, None, now)
            if utc is not None:
                return utc, offset, source
    return None, None, "none"


def _names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [name for item in value for name in _names(item)]
    if isinstance(value, dict):
        return _names(value.get("name"))
    if isinstance(value, str) and not is_http_url(value.strip()):  # `article:author` is often a profile URL
        return [value]
    return []


def page_authors(articles: Sequence[dict[str, Any]], meta: dict[str, str]) -> tuple[tuple[str, ...], str]:
    for article in articles:
        names = clean_list(_names(article.get("author")))
        if names:
            return tuple(names), "page:jsonld"
    names = clean_list(_names([meta.get(key) for key in ("author", "article:author", "dc.creator")]))
    return (tuple(names), "page:meta") if names else ((), "none")


def accessible_for_free(articles: Sequence[dict[str, Any]]) -> bool | None:
    """schema.org `isAccessibleForFree` of the page's article, when it states it (paywall markup)."""
    for article in articles:
        value = article.get("isAccessibleForFree")
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().casefold() in ("true", "false"):
            return value.strip().casefold() == "true"
    return None


def page_metadata(
    tree: lxml.html.HtmlElement,
    page_url: str | None,
    now: datetime,
    articles: Sequence[dict[str, Any]],
    meta: dict[str, str] | None = None,
) -> PageMetadata:
    """Language, canonical URL, times and authors as the page declares them, each with its source."""
    meta = meta_tags(tree) if meta is None else meta
    language, language_source = declared_language(tree, meta, articles)
    published, published_offset, published_source = _page_time(
        "datePublished", ("article:published_time", "datepublished", "og:published_time"), articles, meta, now
    )
    updated, updated_offset, updated_source = _page_time(
        "dateModified", ("article:modified_time", "datemodified", "og:updated_time"), articles, meta, now
    )
    authors, authors_source = page_authors(articles, meta)
    return PageMetadata(
        declared_language=language,
        declared_language_source=language_source,
        canonical_url=canonical_link(tree, page_url),
        published_at=published,
        published_offset_minutes=published_offset,
        published_at_source=published_source,
        updated_at=updated,
        updated_offset_minutes=updated_offset,
        updated_at_source=updated_source,
        authors=authors,
        authors_source=authors_source,
        accessible_for_free=accessible_for_free(articles),
    )


# --- the text -------------------------------------------------------------------------------------


def trafilatura_text(tree: lxml.html.HtmlElement, page_url: str | None, fast: bool = False) -> str:
    """trafilatura's main text of the tree (which it copies), paragraphs separated by blank lines."""
    options = Extractor(output_format="python", comments=False, fast=fast, url=page_url)
    document = trafilatura.bare_extraction(tree, options=options)
    text = getattr(document, "text", None) or ""
    return clean_text(text.replace("\n", "\n\n"))


def jsonld_body(articles: Sequence[dict[str, Any]]) -> str:
    """The longest `articleBody` of the page's Article objects, as plain text."""
    bodies = [a["articleBody"] for a in articles if isinstance(a.get("articleBody"), str)]
    texts = [html_to_text(body) for body in bodies]
    return max(texts, key=len, default="")


# Elements a lead paragraph is; inline elements inside them (`<a>`, `<strong>`) are part of their text.
_BLOCK_TAGS = frozenset(
    {"p", "div", "section", "header", "article", "aside", "li", "td", "dd", "h1", "h2", "h3", "h4", "h5"}
)
_NOT_CONTENT = frozenset({"script", "style", "noscript", "template", "head", "title", "svg", "button"})


def _block_of(element: Any) -> Any:
    while element is not None and element.tag not in _BLOCK_TAGS:
        element = element.getparent()
    return element


_PROBES = 4


def _probes(summary: str) -> list[str]:
    """A few strings any element repeating the summary contains: its longest words, as written."""
    words = sorted({w for w in word_tokens(summary) if len(w) >= 4}, key=len, reverse=True)[:_PROBES]
    if words:
        return words
    compact = "".join(summary.split())  # a script without spaces: a few 4-character pieces
    step = max(len(compact) // _PROBES, 1)
    return [compact[i : i + 4] for i in range(0, max(len(compact) - 3, 1), step)][:_PROBES]


def find_lead(
    tree: lxml.html.HtmlElement, summary: str, settings: ExtractSettings = DEFAULT_SETTINGS
) -> str | None:
    """The page element that says what the summary says (a standfirst), as text, or None.

    The text nodes holding the summary's longest word (found by XPath, in C) name the candidate
    blocks; the block holding at least `lead_match_share` of the summary's 3-grams and not
    much longer than the summary is the lead: a paragraph, never the whole article around it.
    """
    summary_tokens = casefolded_tokens(summary)
    probes = [p for p in _probes(summary) if p.strip()]
    if len(summary_tokens) < settings.min_summary_words or not probes:
        return None
    body = tree.find(".//body")
    root = body if body is not None else tree
    # The page's text in one C call: without most of the probes, there is no lead to look for.
    page_text = root.text_content()
    present = [probe for probe in probes if probe in page_text]
    if len(present) * 2 < len(probes):
        return None
    candidates: dict[Any, None] = {}
    for node in root.xpath(".//text()[contains(., $probe)]", probe=present[0]):
        holder = node.getparent()
        if holder is not None and node.is_tail:
            holder = holder.getparent()
        if holder is None or holder.tag in _NOT_CONTENT:
            continue
        block = _block_of(holder)
        if block is not None:
            candidates.setdefault(block)
            if (parent := _block_of(block.getparent())) is not None:  # a lead of several paragraphs
                candidates.setdefault(parent)
    reference = _shingles(summary_tokens, 3)
    longest = int(len(summary_tokens) * settings.lead_max_growth) + 5
    best: tuple[float, int, str] | None = None
    most_chars = len(summary) * settings.lead_max_growth + 40
    for block in candidates:
        raw = block.text_content()
        if len(raw) > most_chars * 2:  # a cheap bound before the exact one
            continue
        text = clean_text(raw)
        tokens = casefolded_tokens(text)
        if len(tokens) > longest or len(tokens) * 2 < len(summary_tokens):
            continue
        share = len(reference & _shingles(tokens, 3)) / len(reference)
        if share >= settings.lead_match_share and (best is None or (share, -len(tokens)) > best[:2]):
            best = (share, -len(tokens), text)
    return best[2] if best else None


# Headings of related-article links inside the text body, by language; a short paragraph that starts
# with one is a cross link ("Read more: ...", "À lire aussi"), not the article.
CROSS_LINK_MARKERS: tuple[str, ...] = (
    "read more:",
    "read also",
    "see also",
    "related:",
    "related articles",
    "lesen sie auch",
    "mehr zum thema",
    "auch interessant",
    "à lire aussi",
    "a lire aussi",
    "lire aussi",
    "voir aussi",
    "le puede interesar",
    "lea también",
    "lee también",
    "te puede interesar",
    "leia também",
    "leia mais:",
    "veja também",
    "leggi anche",
    "czytaj też",
    "czytaj także",
    "zobacz też",
    "zobacz także",
    "läs också",
    "les også",
    "lue myös",
    "lees ook",
    "читайте также",
)


def drop_cross_links(text: str, settings: ExtractSettings = DEFAULT_SETTINGS) -> str:
    paragraphs = text.split("\n\n")
    kept = [
        p
        for p in paragraphs
        if not (
            p.casefold().lstrip(" »›>•-–—*").startswith(CROSS_LINK_MARKERS)
            and len(word_tokens(p)) <= settings.cross_link_max_words
        )
    ]
    return "\n\n".join(kept)


def page_descriptions(meta: dict[str, str], articles: Sequence[dict[str, Any]]) -> list[str]:
    """How the page describes itself: `og:description`, `description`, `twitter:description`, JSON-LD."""
    found = [meta[key] for key in ("og:description", "description", "twitter:description") if key in meta]
    found.extend(a["description"] for a in articles if isinstance(a.get("description"), str))
    return [html_to_text(text) for text in found if text]


def _content_words(tokens: Iterable[str]) -> set[str]:
    # Short words are mostly function words of any language; a character of an unspaced script counts.
    return {token for token in tokens if len(token) >= 4 or (len(token) == 1 and not token.isascii())}


def verify(
    page_tokens: Sequence[str],
    summary_tokens: Sequence[str],
    title_tokens: Sequence[str],
    descriptions: Sequence[str],
    settings: ExtractSettings = DEFAULT_SETTINGS,
) -> tuple[Verification | None, float | None]:
    """How the text is verified as the feed's article (None: it is not), and the summary's 3-gram share."""
    if len(summary_tokens) >= settings.min_summary_words:
        share = ngram_share(summary_tokens, page_tokens)
        if share >= settings.min_summary_share:
            return Verification.SUMMARY, share
        # Many feeds' summaries are written for the feed and the page's meta tags and appear nowhere in
        # the article; a page that describes itself with the summary is the article, if the text is on
        # its topic (a consent wall or error page shares few of the summary's words).
        wanted = _content_words(summary_tokens)
        words_share = len(wanted & set(page_tokens)) / len(wanted) if wanted else 0.0
        if (
            settings.trust_page_description
            and words_share >= settings.min_summary_words_share
            and any(ngram_share(summary_tokens, d) >= settings.min_summary_share for d in descriptions)
        ):
            return Verification.PAGE_DESCRIPTION, share
        return None, share
    if title_tokens:
        share = ngram_share(title_tokens, page_tokens, n=1)
        return (Verification.TITLE if share >= settings.min_summary_share else None), None
    return Verification.NONE, None


def _verdict(
    page_tokens: Sequence[str],
    feed_tokens: Sequence[str],
    summary_tokens: Sequence[str],
    title_tokens: Sequence[str],
    descriptions: Sequence[str],
    accessible_for_free: bool | None,
    settings: ExtractSettings,
) -> tuple[Rejection | None, str, Verification | None, float | None]:
    """Whether a page text is an upgrade over the feed's: (rejection or None, reason, verification, share)."""
    if not page_tokens:
        return Rejection.EMPTY, "the page has no extractable text", None, None
    if len(page_tokens) < len(feed_tokens):
        reason = f"the page's text ({len(page_tokens)} words) is shorter than the feed's ({len(feed_tokens)})"
        return Rejection.SHORTER_THAN_FEED, reason, None, None
    verification, share = verify(page_tokens, summary_tokens, title_tokens, descriptions, settings)
    if verification is None:
        if share is None:
            reason = f"the page's text has under {settings.min_summary_share:.0%} of the title's words"
        else:
            reason = (
                f"the page's text shares {share:.0%} of the summary's word 3-grams "
                f"(under {settings.min_summary_share:.0%}) and the page does not describe itself with it"
            )
        return Rejection.OFF_TOPIC, reason, None, share
    gain = len(page_tokens) - len(feed_tokens)
    needed = max(settings.min_gain_words, int(settings.min_gain_ratio * len(feed_tokens)))
    if gain < needed:
        kind = Rejection.PAYWALL if accessible_for_free is False else Rejection.NO_GAIN
        stated = " on a page that declares itself not free" if kind is Rejection.PAYWALL else ""
        reason = f"the page adds {gain} words to the feed's text (under {needed}){stated}"
        return kind, reason, verification, share
    return None, "", verification, share


def extract_page(
    page: bytes | str,
    *,
    content_type: str | None,
    page_url: str | None,
    feed_title: str | None,
    feed_summary: str | None,
    now: datetime,
    feed_text: str | None = None,
    settings: ExtractSettings = DEFAULT_SETTINGS,
) -> PageExtraction:
    """The page's text and metadata, or why the feed's text (`feed_text`, else its summary) stays.

    `now` bounds plausible dates (as for feed dates); nothing here reads the clock or the network.
    """
    body = page.encode("utf-8") if isinstance(page, str) else page
    kind = "text/html" if isinstance(page, str) else media_type(content_type, body)
    if kind not in HTML_MEDIA_TYPES:
        reason = f"the page is {kind}, not HTML"
        return PageExtraction(TextSource.FEED, None, Rejection.NOT_HTML, reason, kind)
    decoded = DecodedPage(page, "utf-8", "str") if isinstance(page, str) else decode_html(body, content_type)
    tree = parse_html(decoded.html, body if decoded.charset_source == "utf-8" else None)
    if tree is None:
        return PageExtraction(
            TextSource.FEED,
            None,
            Rejection.EMPTY,
            "the page has no HTML to extract from",
            kind,
            charset=decoded.charset,
            charset_source=decoded.charset_source,
        )
    articles = jsonld_articles(tree)
    meta = meta_tags(tree)
    metadata = page_metadata(tree, page_url, now, articles, meta)
    summary_tokens = casefolded_tokens(feed_summary)
    title_tokens = casefolded_tokens(feed_title)
    feed_tokens = casefolded_tokens(feed_text if feed_text is not None else feed_summary)

    text, source = (
        drop_cross_links(trafilatura_text(tree, page_url, settings.trafilatura_fast), settings),
        TextSource.PAGE_TRAFILATURA,
    )
    text_tokens = casefolded_tokens(text)
    structured = drop_cross_links(jsonld_body(articles), settings)
    structured_tokens = casefolded_tokens(structured)
    # trafilatura's text is the rule (the publisher's articleBody is often a teaser, or lacks paragraph
    # breaks so cross links cannot be told from prose); the articleBody when trafilatura clearly missed part.
    if structured_tokens and len(structured_tokens) >= settings.jsonld_min_growth * len(text_tokens):
        text, source, text_tokens = structured, TextSource.PAGE_JSONLD, structured_tokens
    lead_added = False
    if (
        len(summary_tokens) >= settings.min_summary_words
        and ngram_share(summary_tokens, text_tokens) < settings.lead_covered_share
    ):
        lead = find_lead(tree, feed_summary or "", settings)
        if lead and (lead_tokens := casefolded_tokens(lead)):
            text = f"{lead}\n\n{text}" if text else lead
            text_tokens = lead_tokens + text_tokens
            lead_added = True

    rejection, reason, verification, share = _verdict(
        text_tokens,
        feed_tokens,
        summary_tokens,
        title_tokens,
        page_descriptions(meta, articles),
        metadata.accessible_for_free,
        settings,
    )
    return PageExtraction(
        text_source=TextSource.FEED if rejection else source,
        text=None if rejection else text,
        rejection=rejection,
        reason=reason or f"the page's text ({len(text_tokens)} words) from {source.value}",
        media_type=kind,
        metadata=metadata,
        charset=decoded.charset,
        charset_source=decoded.charset_source,
        page_words=len(text_tokens),
        summary_share=share,
        verification=verification,
        lead_added=lead_added,
    )
