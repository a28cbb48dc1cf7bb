"""newsbeam's rules inside feedparser: how dates and links are read, the entry cap, a faster SAX reader.

feedparser builds its SAX handlers from two module attributes (`StrictFeedParser`,
`LooseFeedParser`) and asks `xml.sax` for the first module of `PREFERRED_XML_PARSERS` on every
parse; it has no parameter for either. Instead of replacing them for the whole process at import
time, `newsbeam_handlers()` puts ours in place for the length of one `feedparser.parse` call and
restores feedparser's own after it, under a lock (feedparser is pure Python: parses in threads
wait for the interpreter lock anyway). Importing this module changes nothing in feedparser, and a
`feedparser.parse` made by other code outside the context reads as feedparser does.
"""

from __future__ import annotations

import contextvars
import threading
import xml.sax
import xml.sax.expatreader
import xml.sax.handler
import xml.sax.xmlreader
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import feedparser.api

from transforms.raw_entry import is_http_url

FEED_PARSER_OPTIONS = {"sanitize_html": False, "resolve_relative_uris": False}


class _BufferedExpatParser(xml.sax.expatreader.ExpatParser):
    """Python's expat SAX reader with `buffer_text` on: one `characters()` call per run of text
    instead of one per line and per entity. The same events with the same text reach feedparser,
    whose per-call bookkeeping was about a third of its time on feeds of escaped HTML (parse
    28% faster in benchmarks/RESULTS.md).
    """

    def reset(self) -> None:
        super().reset()
        self._parser.buffer_text = True  # type: ignore[attr-defined]  # typeshed omits _parser


def create_parser() -> xml.sax.xmlreader.XMLReader:
    """The hook `xml.sax.make_parser` calls for each module in feedparser's PREFERRED_XML_PARSERS."""
    return _BufferedExpatParser()


# An entry's `dc:date` and its other update time (atom:updated, dcterms:modified), each as
# (raw, parsed): feedparser files both as `updated`, the later one over the earlier (see _PeerRules).
DC_DATE = "newsbeam_dc_date"
OTHER_UPDATE_TIME = "newsbeam_other_update_time"


class _PeerRules:
    """Two readings of feedparser's that every other feed reader (gofeed, rss-parser) makes differently.

    Mixed in before feedparser's own handler classes, whose `_start_<element>` / `_end_<element>`
    methods it extends:

    - `dc:date` is filed as `updated` (so is `dcterms:modified`, and the later of the two
      overwrites the other); readers take dc:date as the publication date. Each is also kept under
      a name of its own, so that `_dates` can make dc:date the publication date when the entry has
      none of its own, and keep the other as the update time, in whichever order they came.
    - `<link uri="at://...">http://example.com/item</link>`: feedparser takes the attribute and
      never reads the text; RSS says the link is the element's text. The text is read too and wins
      when it is an http(s) URL (resolved like any link) and the attribute is not.
    """

    _non_http_link: str | None = None
    _ending_dc_date = False

    if TYPE_CHECKING:  # provided by feedparser's handler classes, which come after this one
        infeed: int
        inentry: int
        insource: int
        inimage: int

        def _get_context(self) -> Any: ...
        def push(self, element: str, expecting_text: int) -> None: ...
        def pop(self, element: str) -> str | None: ...

    def _end_updated(self) -> None:  # also the end of dcterms:modified, atom:updated and dc:date
        super()._end_updated()  # type: ignore[misc]
        context = self._get_context()
        just_read = (dict.get(context, "updated"), dict.get(context, "updated_parsed"))
        context[DC_DATE if self._ending_dc_date else OTHER_UPDATE_TIME] = just_read

    _end_modified = _end_updated

    def _end_dc_date(self) -> None:
        self._ending_dc_date = True
        try:
            super()._end_dc_date()  # type: ignore[misc]
        finally:
            self._ending_dc_date = False

    def _start_link(self, attrs_d: dict[str, str]) -> None:
        super()._start_link(attrs_d)  # type: ignore[misc]
        # feedparser has moved a `uri` or `url` attribute to `href` and made the alternate link of it.
        href = attrs_d.get("href")
        self._non_http_link = None
        expecting_text = (self.infeed or self.inentry or self.insource) and not self.inimage
        if href and not is_http_url(href) and attrs_d.get("rel") == "alternate" and expecting_text:
            self._non_http_link = href
            self.push("link", expecting_text)

    def _end_link(self) -> None:
        attribute, self._non_http_link = self._non_http_link, None
        if attribute is None:
            super()._end_link()  # type: ignore[misc]
            return
        context = self._get_context()
        before = context.get("link")
        text = self.pop("link")  # stores the text as the link, as it does for RSS
        if not is_http_url(text):
            if before is None:
                context.pop("link", None)
            else:
                context["link"] = before
            if context.get("links"):
                context["links"][-1]["href"] = attribute


@dataclass
class EntryLimit:
    """The entry cap of one `feedparser.parse` call, and what its handler counted past it."""

    limit: int | None
    beyond: int = 0  # entry elements the strict parser counted past `limit` instead of reading them


# The cap reaches the handler, which feedparser builds itself, through a context variable.
ENTRY_LIMIT: contextvars.ContextVar[EntryLimit | None] = contextvars.ContextVar("newsbeam_entry_limit")


class _EntryLimitRule:
    """Past the entry cap, the strict (SAX) handler only counts the entry elements.

    feedparser's per-element work is about 0.1 ms an entry (21 s for a 200,000-entry feed) that a
    cut entry does not need: once `limit` entries are read, each further element at the depth and
    with the name of the entry that went over is counted, and every other event is ignored, to the
    end of the document (channel elements after the cut entries are not read). The loose parser,
    which feedparser falls back to for ill-formed XML, reads everything; those entries are cut after.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = ENTRY_LIMIT.get(None) or EntryLimit(None)
        self._limit.beyond = 0  # a strict attempt that failed hands over to the loose parser
        self._sax_depth = 0
        self._sax_name: Any = None
        self._counting: tuple[int, Any] | None = None  # (depth, name) of the entry elements

    if TYPE_CHECKING:
        entries: list[Any]

    def startElementNS(self, name: Any, qname: Any, attrs: Any) -> None:
        self._sax_depth += 1
        if self._counting is not None:
            if (self._sax_depth, name) == self._counting:
                self._limit.beyond += 1
            return
        self._sax_name = name
        super().startElementNS(name, qname, attrs)  # type: ignore[misc]

    def endElementNS(self, name: Any, qname: Any) -> None:
        self._sax_depth -= 1
        if self._counting is None:
            super().endElementNS(name, qname)  # type: ignore[misc]

    def characters(self, text: str) -> None:
        if self._counting is None:
            super().characters(text)  # type: ignore[misc]

    def _start_item(self, attrs_d: dict[str, str]) -> None:
        limit = self._limit.limit
        if (
            limit is not None
            and len(self.entries) >= limit
            and isinstance(self, xml.sax.handler.ContentHandler)
        ):
            self._counting = (self._sax_depth, self._sax_name)
            self._limit.beyond = 1
            return
        super()._start_item(attrs_d)  # type: ignore[misc]

    _start_entry = _start_item


# Built once from feedparser's own classes (importing changes nothing in feedparser).
_HANDLERS = {
    name: type(name, (_EntryLimitRule, _PeerRules, getattr(feedparser.api, name)), {})
    for name in ("StrictFeedParser", "LooseFeedParser")
}
_SWAP_LOCK = threading.RLock()


@contextmanager
def newsbeam_handlers() -> Iterator[None]:
    """Within the block, `feedparser.parse` uses newsbeam's handlers and buffered SAX reader."""
    with _SWAP_LOCK:
        saved = {name: getattr(feedparser.api, name) for name in _HANDLERS}
        saved_parsers = feedparser.api.PREFERRED_XML_PARSERS
        try:
            for name, handler in _HANDLERS.items():
                setattr(feedparser.api, name, handler)
            # feedparser asks xml.sax for the first parser module of this list that it can import.
            feedparser.api.PREFERRED_XML_PARSERS = [__name__, *saved_parsers]
            yield
        finally:
            for name, handler in saved.items():
                setattr(feedparser.api, name, handler)
            feedparser.api.PREFERRED_XML_PARSERS = saved_parsers
