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

The parts live by concern: `page_html` (media type, charset, parse), `page_metadata` (what the page
declares), `page_text` (candidate texts, n-grams and the rules' thresholds); this module decides.
The `auto` rule of `fulltext.mode` is `teasers.needs_full_text`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trafilatura

from transforms.normalize import html_to_text
from transforms.page_html import HTML_MEDIA_TYPES, DecodedPage, decode_html, media_type, parse_html
from transforms.page_metadata import PageMetadata, jsonld_articles, meta_tags, page_metadata
from transforms.page_text import (
    DEFAULT_SETTINGS,
    ExtractSettings,
    casefolded_tokens,
    drop_cross_links,
    find_lead,
    jsonld_body,
    ngram_share,
    trafilatura_text,
)

EXTRACTOR = "trafilatura"
EXTRACTOR_VERSION: str = trafilatura.__version__
# Bumped whenever a rule below changes what is extracted, so stored texts can be told apart.
RULES_VERSION = "1"


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
