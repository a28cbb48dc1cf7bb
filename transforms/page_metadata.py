"""What an article page says about itself: language, canonical URL, times, authors (pure, no Beam).

Each value comes with the field it came from (`page:jsonld`, `page:meta`, `page:html_lang`, ...), so
that the pipeline can record where every field of an article came from. schema.org Article objects
are read from JSON-LD (any Article type, inside `@graph` and other containers), the rest from
`<meta>` tags and the `<html>` element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import lxml.etree
import lxml.html

from transforms.normalize import clean_list, parse_timestamp
from transforms.raw_entry import is_http_url


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
