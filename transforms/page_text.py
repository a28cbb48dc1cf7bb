"""The candidate main texts of an article page, and the word n-grams that compare texts (pure, no Beam).

trafilatura's main text; a schema.org `articleBody`; a lead paragraph (standfirst) that the feed's
summary matches and the extractor left out; short related-article cross links dropped. The thresholds
of every rule of the extraction are in `ExtractSettings`, here because these rules are its first users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lxml.html
import trafilatura
from trafilatura.settings import Extractor

from transforms.enrich import word_tokens
from transforms.normalize import clean_text, html_to_text


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
