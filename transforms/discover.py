"""Feed discovery: the feeds an HTML page names in its `<link rel="alternate">` elements.

A page URL given as a feed (`https://example.com/`) is read as feed readers read it: the page's
head names its feeds (`<link rel="alternate" type="application/rss+xml" href="/feed">`), and those
are fetched instead, through the same fetcher with the same caps and address rules. Bounded: at
most `limit` feeds per page, each once, never the page itself; a discovered URL that is an HTML
page again is not followed (no discovery from a discovered page). Pure functions; the read stage
does the fetching.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from transforms.raw_entry import is_http_url

FEED_MEDIA_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/feed+json", "application/json"}
)
HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})
FEEDS_DISCOVERED = "feeds_discovered"  # the page's fetch row: its feeds were read instead


class _AlternateLinks(HTMLParser):
    """Collects the href of every `<link rel="alternate">` of a feed type, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): (value or "").strip() for name, value in attrs}
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        if tag != "link" or "alternate" not in values.get("rel", "").lower().split():
            return
        media_type = values.get("type", "").split(";")[0].strip().lower()
        if media_type in FEED_MEDIA_TYPES and values.get("href"):
            self.hrefs.append(values["href"])


def is_html(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in HTML_MEDIA_TYPES


def discover_feeds(html: bytes, page_url: str, *, limit: int) -> list[str]:
    """The absolute http(s) URLs of the page's feeds, first `limit`, without repeats or the page."""
    collector = _AlternateLinks()
    # Only the head matters; a page's first 1 MiB holds it (the body is capped by the fetcher).
    collector.feed(html[: 1024 * 1024].decode("utf-8", "replace"))
    collector.close()
    base = urljoin(page_url, collector.base) if collector.base else page_url
    page = urldefrag(page_url).url
    found: list[str] = []
    for href in collector.hrefs:
        url = urldefrag(urljoin(base, href)).url
        if is_http_url(url) and url != page and url not in found:
            found.append(url)
        if len(found) >= limit:
            break
    return found
