"""Feed lists: the `feeds:` entries of a config file and OPML subscription lists, as one list of feeds.

OPML is what every feed reader exports (`newsbeam run --opml subscriptions.opml`). Outlines nest
in folders; a feed's folder path becomes its category (`News/World`). Real exports carry
duplicates and junk, so an OPML file that parses gives its good feeds and a list of problems
(duplicate, no URL, not http(s)) that the CLI prints; a file that is not OPML at all is an error.
Config entries are stricter: a bad URL there fails the config at start (see pipeline/config.py).

Feeds are de-duplicated by a light canonical form of their URL (lower-case scheme and host, no
default port, no fragment, no credentials); the first listing wins, config entries before OPML
ones. Problems name feed URLs redacted (`transforms.fetch.redact_url`).

An OPML file is data from elsewhere: at most MAX_OPML_BYTES are read, entities are never
expanded, nothing is fetched. The parse is lxml's strict one rather than `listparser`'s, which was
tried: it reads through lxml's lenient HTML parser (a truncated file or an RSS file gives an empty
list instead of an error), merges duplicate URLs silently, ignores `language` and gives no line
numbers, so the problems above could not be reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from transforms.feed_state import FeedSource
from transforms.fetch import redact_url
from transforms.urls import stripped_url

MAX_OPML_BYTES = 10 * 1024 * 1024  # a reader's export of thousands of feeds is well under 1 MB
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}([-_][a-zA-Z0-9]{2,8})*$")


class FeedListError(ValueError):
    """A feed list that cannot be read at all (a missing file, not XML, not OPML)."""


def check_feed_url(url: str) -> str:
    """The URL stripped, or ValueError naming what is wrong with it (the URL redacted)."""
    url = url.strip()
    if not url:
        raise ValueError("the feed URL is empty")
    shown = _shown_url(url)
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError as error:
        raise ValueError(f"{shown!r} is not a valid URL: {_parse_error(url, error)}") from None
    if _userinfo_cut_short(url, parts.netloc):
        raise ValueError(
            f"{shown!r} is not a valid URL: an '@' follows the host, as when a password holds an "
            "unescaped '#', '?' or '/' (percent-encode them: %23, %3F, %2F)"
        )
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{shown!r} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host")
    if not port_ok or any(ch.isspace() for ch in url):
        raise ValueError(f"{shown!r} is not a valid URL")
    return url


def check_language(value: str) -> str:
    if not _LANGUAGE.match(value):
        raise ValueError(f"{value!r} is not a language code such as `en` or `pt-BR`")
    return value.split("-")[0].split("_")[0].lower()


def _before_path(url: str) -> str:
    """What follows `scheme://` up to the first '/': where a person wrote the credentials."""
    return url.partition("://")[2].partition("/")[0]


def _shown_url(url: str) -> str:
    """`url` as an error may quote it. With an '@' anywhere after `scheme://`, everything up to the
    last '@' is hidden: a password with an unescaped '#', '?', '/' or space ends the authority
    before its '@', where `redact_url` (which follows the URL's syntax) sees no userinfo."""
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return redact_url(url)


def _parse_error(url: str, error: ValueError) -> str:
    """urlsplit's complaint, unless the URL may hold credentials: it quotes pieces (a password
    taken for a port), so then only what kind of problem it is."""
    if "@" in url:
        return "its host or port cannot be read"
    return redact_url(str(error))


def _userinfo_cut_short(url: str, netloc: str) -> bool:
    """Whether the URL holds `user:password@` that its syntax does not read as one: an '@' before
    the path while the authority urlsplit found (`user:12` of `https://user:12#x@host/`) has none."""
    return "@" not in netloc and ":" in netloc and "@" in _before_path(url)


def canonical_feed_url(url: str) -> str:
    """The form two listings of one feed share (`transforms.urls.stripped_url`): a feed is recorded
    without credentials, so two listings that differ only in them would be one `source`."""
    return stripped_url(url) or url.strip()


@dataclass
class FeedList:
    feeds: list[FeedSource] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, naming the file and the entry


def unique_feeds(listings: Iterable[tuple[str, FeedSource]]) -> FeedList:
    """Feeds without duplicates (first listing wins); each duplicate is reported with its origin."""
    result = FeedList()
    seen: dict[str, str] = {}
    for origin, feed in listings:
        key = canonical_feed_url(feed.url)
        if key in seen:
            result.problems.append(f"{origin}: duplicate of {seen[key]}: {redact_url(feed.url)}")
            continue
        seen[key] = f"{origin} ({redact_url(feed.url)})"
        result.feeds.append(feed)
    return result


def _outline_attribute(outline: etree._Element, *names: str) -> str | None:
    # OPML attribute names vary in case between exporters (xmlUrl, xmlurl, XMLURL).
    lowered = {str(k).lower(): str(v) for k, v in outline.attrib.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None and value.strip():
            return value.strip()
    return None


def load_opml(path: str | Path) -> FeedList:
    """The feeds of an OPML file, nested outlines flattened with their folder path as category."""
    origin = str(path)
    try:
        with Path(path).open("rb") as stream:
            data = stream.read(MAX_OPML_BYTES + 1)
    except OSError as error:
        raise FeedListError(f"{origin}: cannot read the OPML file: {error.strerror}") from None
    if len(data) > MAX_OPML_BYTES:
        raise FeedListError(f"{origin}: larger than {MAX_OPML_BYTES:,} bytes: not read")
    # No entities, no network, no huge trees: an OPML file is data from elsewhere.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise FeedListError(f"{origin}: not well-formed XML: {error}") from None
    if etree.QName(root).localname.lower() != "opml":
        raise FeedListError(
            f"{origin}: not an OPML file (the root element is <{etree.QName(root).localname}>)"
        )
    body = next((child for child in root if etree.QName(child).localname.lower() == "body"), None)
    if body is None:
        raise FeedListError(f"{origin}: an OPML file without <body>")

    problems: list[str] = []
    listings: list[tuple[str, FeedSource]] = []

    def walk(element: etree._Element, folders: tuple[str, ...]) -> None:
        for outline in element:
            if not isinstance(outline.tag, str) or etree.QName(outline).localname.lower() != "outline":
                continue
            title = _outline_attribute(outline, "title", "text")
            url = _outline_attribute(outline, "xmlUrl", "url")
            where = f"{origin}: line {outline.sourceline}"
            if url is None:
                is_feed_type = (_outline_attribute(outline, "type") or "").lower() in ("rss", "atom", "feed")
                if is_feed_type and len(outline) == 0:
                    problems.append(f"{where}: outline {title or '(untitled)'!r} has no xmlUrl")
                walk(outline, (*folders, title) if title else folders)
                continue
            try:
                url = check_feed_url(url)
            except ValueError as error:
                problems.append(f"{where}: {error}")
                continue
            language = _outline_attribute(outline, "language")
            try:
                language = check_language(language) if language else None
            except ValueError:
                language = None  # a hint only: a bad one is dropped, the feed kept
            tags = _outline_attribute(outline, "category")
            listings.append(
                (
                    where,
                    FeedSource(
                        url=url,
                        name=title,
                        language=language,
                        category="/".join(folders) or None,
                        tags=tuple(t.strip() for t in (tags or "").split(",") if t.strip()),
                    ),
                )
            )
            if len(outline):  # a feed outline with children: rare, but keep what they list
                walk(outline, (*folders, title) if title else folders)

    walk(body, ())
    feeds = unique_feeds(listings)
    return FeedList(feeds.feeds, problems + feeds.problems)


def feed_list(listed: Sequence[tuple[str, FeedSource]], opml_paths: Sequence[str | Path]) -> FeedList:
    """The `listed` feeds (origin, feed) first, then each OPML file's, without duplicates."""
    listings = list(listed)
    problems: list[str] = []
    for path in opml_paths:
        loaded = load_opml(path)
        problems += loaded.problems
        listings += [(str(path), feed) for feed in loaded.feeds]
    merged = unique_feeds(listings)
    return FeedList(merged.feeds, problems + merged.problems)
