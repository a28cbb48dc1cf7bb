"""NormalizeArticles: raw entries to clean articles.

HTML becomes plain text (block elements give paragraph breaks; scripts and styles are dropped;
entities decoded), text is Unicode NFC without control characters and with collapsed whitespace,
URLs are canonicalized, authors and tags become clean lists, and timestamps become UTC with the
offset they were stated in and the field they came from. A date the input does not give stays null.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import apache_beam as beam
import html_text
import lxml.etree
import lxml.html
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from dateutil import parser as date_parser
from w3lib.url import canonicalize_url

from transforms.outputs import ArticleOutputs, apply_with_dead_letters
from transforms.parse import RawEntry, is_http_url
from transforms.schema import DEAD_LETTERS, SOURCE_KEY, NormalizedArticle, Stage, dead_letter, entry_ref
from transforms.urls import stripped_url

# --- text ---------------------------------------------------------------------------------------

_LOOKS_LIKE_HTML = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*[\s/>]|/[a-zA-Z]|!--)")
# C0/C1 controls other than tab and newline, plus zero-width and bidi marks that break matching.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff\u202a-\u202e]")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n\s*")
# A character reference left over after one round of decoding: the input was escaped twice
# (`&amp;amp;`, `&amp;#8217;`), which many feeds do. Only complete references, with `;`.
_LEFTOVER_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
# HTML escaped twice (`&amp;lt;p&amp;gt;`, as Reddit's feeds do) is still markup after one round:
# closing tags of common elements tell it apart from a lone `<blink>` or `<nick>` in prose.
_DECODED_MARKUP = re.compile(
    r"</(?:p|div|span|a|b|i|em|strong|li|ul|ol|h[1-6]|blockquote|table|tr|td)>", re.IGNORECASE
)


# html_text.extract_text with a parser made once per thread (lxml parsers must not be shared between
# threads, and a Beam worker runs bundles in several), and the tree cleaned in place: extract_text
# builds a new parser for every fragment and deep-copies the tree before cleaning it. Together
# 15-20% of the conversion's time; the text is the same (checked on the corpus's feeds).
_PARSERS = threading.local()


def markup_to_text(value: str) -> str:
    """html_text's plain text of an HTML string (its cleaner, its layout rules)."""
    parser = getattr(_PARSERS, "html", None)
    if parser is None:
        parser = _PARSERS.html = lxml.html.HTMLParser(recover=True, encoding="utf-8")
    body = value.strip().replace("\x00", "").encode("utf-8") or b"<html/>"
    tree = lxml.etree.fromstring(body, parser=parser)
    if tree is None:
        tree = lxml.etree.fromstring(b"<html/>", parser=parser)
    with contextlib.suppress(AssertionError):  # lxml bug 1838497, which html_text skips the same way
        html_text.cleaner(tree)
    return html_text.etree_to_text(tree, guess_layout=True)


def html_to_text(value: str | None) -> str:
    """Plain text of an HTML fragment or document, paragraphs separated by one blank line."""
    if not value:
        return ""
    if _LOOKS_LIKE_HTML.search(value):
        try:
            value = markup_to_text(value)
        except Exception:  # lxml rejects a few pathological inputs; treat them as text
            value = html.unescape(re.sub(r"<[^>]*>", " ", value))
    elif "&" in value:
        value = html.unescape(value)
    if "&" in value:
        value = _LEFTOVER_ENTITY.sub(lambda m: html.unescape(m.group(0)), value)
    closing_tags = len(_DECODED_MARKUP.findall(value))
    if closing_tags >= 3 or (closing_tags and value.lstrip().startswith("<")):
        with contextlib.suppress(Exception):  # as above: lxml rejects a few pathological inputs
            value = markup_to_text(value)
    return clean_text(value)


def clean_text(value: str) -> str:
    """NFC, no control characters, single spaces, paragraphs kept as blank-line breaks."""
    value = unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n"))
    value = _CONTROL.sub("", value.replace("\u00a0", " "))
    paragraphs = (_INLINE_SPACE.sub(" ", p).strip() for p in _PARAGRAPH_BREAK.split(value))
    # Single newlines inside a paragraph are line wraps of the source, not structure.
    return "\n\n".join(
        " ".join(line.strip() for line in p.split("\n") if line.strip()) for p in paragraphs if p
    )


def one_line(value: str | None) -> str:
    return html_to_text(value).replace("\n\n", " ").strip()


def clean_list(values: Iterable[str | None]) -> list[str]:
    """Cleaned, non-empty, de-duplicated (case-insensitively) values in their first order."""
    seen: set[str] = set()
    result: list[str] = []
    for value in values:
        text = one_line(value)
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return result


# --- URLs ---------------------------------------------------------------------------------------

TRACKING_PARAMETERS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "rb_clickid",
        "s_cid",
        "cmpid",
        "ncid",
        "ocid",
        "wt_mc",
        "wt.mc_id",
        "ref_src",
        "spm",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "at_", "_ga", "_gl", "hsa_")


def is_tracking_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMETERS or lowered.startswith(TRACKING_PREFIXES)


def canonical_url(url: str | None) -> str | None:
    """Canonical form of an absolute http(s) URL, or None for anything else.

    w3lib's canonicalize_url lower-cases the host, sorts the query, normalizes percent-encoding
    and drops the fragment; here we also drop default ports and tracking parameters.
    """
    if not is_http_url(url):
        return None
    try:
        cleaned = stripped_url(url or "", keep_query_parameter=lambda name: not is_tracking_parameter(name))
        if cleaned is None:
            return None
        return str(canonicalize_url(cleaned, keep_fragments=False))
    except ValueError:  # a malformed port or host
        return None


# --- time ---------------------------------------------------------------------------------------

# Dates before the web or more than a day ahead are parse errors or placeholders, not news.
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)
_DEFAULT_A = datetime(2000, 1, 1)
_DEFAULT_B = datetime(2001, 2, 2)


def parse_timestamp(
    raw: str | None, parsed_epoch: int | None, now: datetime
) -> tuple[datetime | None, int | None]:
    """(UTC time, offset in minutes it was stated in) from a raw date string.

    Tries RFC 822 (RSS), then ISO 8601 (Atom, JSON Feed), then a general parser; falls back to
    the feed parser's own UTC reading (offset unknown). Implausible dates give (None, None).
    """
    moment: datetime | None = None
    if raw and raw.strip():
        moment = _parse_date_string(raw.strip()) or _parse_date_string(english_date_names(raw.strip()))
    if moment is None and parsed_epoch is not None:
        try:
            # Naive on purpose: the parser's reading is UTC, but the offset it was stated in is lost.
            moment = datetime.fromtimestamp(parsed_epoch, tz=UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            moment = None
    if moment is None:
        return None, None
    offset: int | None = None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a date without zone: read as UTC, offset unknown
    else:
        delta = moment.utcoffset()
        offset = int(delta.total_seconds() // 60) if delta is not None else None
    utc = moment.astimezone(UTC)
    if not EARLIEST_PLAUSIBLE <= utc <= now + FUTURE_TOLERANCE:
        return None, None
    if offset is not None and not -1080 <= offset <= 1080:
        offset = None
    return utc, offset


def _parse_date_string(raw: str) -> datetime | None:
    try:
        moment = email.utils.parsedate_to_datetime(raw)
        # "-0000" means "zone unknown" in RFC 2822; parsedate_to_datetime then returns naive.
        return moment
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        pass
    try:
        # dateutil fills what the string lacks from `default`: parse with two defaults that differ
        # in year, month and day, and accept only when the date came wholly from the string.
        moment = date_parser.parse(raw, default=_DEFAULT_A)
        if date_parser.parse(raw, default=_DEFAULT_B).date() != moment.date():
            return None
        return moment
    except (ValueError, OverflowError, TypeError, date_parser.ParserError):
        return None


# Month abbreviations of RFC 822 dates written in another language (UOL writes "Seg, 24 Set 2018"):
# Portuguese, Spanish, French, German, Italian and Dutch, where they differ from English.
_LOCAL_MONTHS = {
    **dict.fromkeys(("gen", "ene", "janv"), "Jan"),
    **dict.fromkeys(("fev", "févr", "fevr"), "Feb"),
    **dict.fromkeys(("mär", "mrz", "mrt"), "Mar"),
    **dict.fromkeys(("abr", "avr"), "Apr"),
    **dict.fromkeys(("mai", "mag", "mei"), "May"),
    **dict.fromkeys(("giu", "juin"), "Jun"),
    **dict.fromkeys(("lug", "juil"), "Jul"),
    **dict.fromkeys(("ago", "août", "aout"), "Aug"),
    **dict.fromkeys(("set", "sept"), "Sep"),
    **dict.fromkeys(("out", "ott", "okt"), "Oct"),
    **dict.fromkeys(("dez", "dic", "déc"), "Dec"),
}
_LEADING_WEEKDAY = re.compile(r"^\s*[^\W\d]{2,}\.?,\s*")
_WORD = re.compile(r"[^\W\d]+\.?")


def english_date_names(raw: str) -> str:
    """An RFC 822-like date with its weekday dropped and a foreign month name made English."""
    without_weekday = _LEADING_WEEKDAY.sub("", raw)
    return _WORD.sub(lambda m: _LOCAL_MONTHS.get(m.group(0).rstrip(".").lower(), m.group(0)), without_weekday)


# --- one entry ----------------------------------------------------------------------------------


class EmptyEntryError(ValueError):
    """An entry with neither a title nor any text: nothing to keep."""


def normalize_entry(entry: RawEntry, now: datetime) -> NormalizedArticle:
    """The normalized article fields of one raw entry (language and ids come in later stages)."""
    title = one_line(entry.get("title"))
    text = html_to_text(entry.get("content"))
    # A fifth of the benchmark's entries repeat their content as the summary: convert it once.
    raw_summary = entry.get("summary")
    summary = text if raw_summary and raw_summary == entry.get("content") else html_to_text(raw_summary)
    if not text:
        text = summary
    if summary == text and entry.get("content"):
        summary = ""
    if not title and not text:
        raise EmptyEntryError("the entry has neither a title nor any text")

    url = entry.get("link")
    published_at, published_offset = parse_timestamp(
        entry.get("published"), entry.get("published_epoch"), now
    )
    updated_at, updated_offset = parse_timestamp(entry.get("updated"), entry.get("updated_epoch"), now)
    article: NormalizedArticle = {
        "source": entry["source"],
        "source_type": entry["source_type"],
        "ordinal": entry.get("ordinal", 0),
        "feed_title": one_line(entry.get("feed_title")) or None,
        "feed_url": entry.get("feed_link"),
        "entry_id": (entry.get("entry_id") or "").strip() or None,
        "url": url,
        "canonical_url": canonical_url(url),
        "title": title or None,
        "summary": summary or None,
        "text": text or None,
        "authors": clean_list(entry.get("authors") or []),
        "tags": clean_list(entry.get("tags") or []),
        "published_at": published_at,
        "published_offset_minutes": published_offset,
        "published_at_source": f"feed:{entry.get('published_field')}" if published_at else "none",
        "updated_at": updated_at,
        "updated_offset_minutes": updated_offset,
        "updated_at_source": f"feed:{entry.get('updated_field')}" if updated_at else "none",
        "language_declared_raw": entry.get("entry_language") or entry.get("feed_language"),
    }
    # The hints of a `feeds:` entry, only where the config gives them (null columns otherwise).
    hints = cast(Mapping[str, Any], entry)  # set by the read stage, not the parser
    if hints.get("feed_category"):
        article["feed_category"] = hints["feed_category"]
    if hints.get("feed_tags"):
        article["feed_tags"] = list(hints["feed_tags"])
    key = hints.get(SOURCE_KEY)  # set by the read stage, not the parser
    if key:
        article[SOURCE_KEY] = key
    return article


class _NormalizeFn(beam.DoFn):
    def __init__(self, now: datetime | None) -> None:
        self._now = now
        self._normalized = Metrics.counter("normalize", "articles")
        self._failed = Metrics.counter("normalize", "dead_letters")

    def process(self, entry: RawEntry) -> Iterator[Any]:
        try:
            # None (the streaming job, which runs for days): "now" is the time of each entry's normalization.
            article = normalize_entry(entry, self._now or datetime.now(UTC))
        except Exception as error:
            self._failed.inc()
            error_type = "no_content" if isinstance(error, EmptyEntryError) else type(error).__name__
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    Stage.NORMALIZE,
                    error_type,
                    str(error),
                    entry["source"],
                    entry["source_type"],
                    entry_ref=entry_ref(entry),
                    data=repr({k: entry.get(k) for k in ("title", "link", "summary")}),
                ),
            )
            return
        self._normalized.inc()
        yield article


class NormalizeArticles(beam.PTransform[Any, Any]):
    """Raw entries -> (normalized articles, dead letters); `now` bounds plausible dates (None: clock time)."""

    def __init__(self, now: datetime | None) -> None:
        super().__init__()
        self._now = now

    def expand(self, entries: PCollection[Any]) -> ArticleOutputs:
        return apply_with_dead_letters(entries, "Normalize", _NormalizeFn(self._now))
