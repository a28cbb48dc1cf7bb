"""One exception hierarchy for what goes wrong reading one source: fetching it, or parsing it.

Each error names its `error_type` (the `feed_fetches` column) and whether a retry may help. They
are raised inside the fetcher and the parsers and caught at the edge of the DoFn that called them,
where they become values (a `FetchResult`, a `ParsedInput`, a dead letter): one bad feed never
stops the run, as in lemon24/reader's `ReaderError` tree.
"""

from __future__ import annotations

# error_type -> error_class: a coarse family to group feed health by.
_ERROR_CLASSES = {
    "connect_timeout": "timeout",
    "read_timeout": "timeout",
    "timeout": "timeout",
    "connection_error": "network",
    "tls_error": "network",
    "dns_error": "network",
    "too_large": "body",
    "bad_encoding": "body",
    "bad_url": "policy",
    "bad_scheme": "policy",
    "bad_redirect": "policy",
    "bad_redirect_scheme": "policy",
    "private_address": "policy",
    "private_redirect": "policy",
    "redirect_loop": "policy",
    "too_many_redirects": "policy",
}


class SourceError(Exception):
    """A failure of one source, named by `error_type`; the base of every fetch and parse error."""

    def __init__(self, error_type: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


class FetchError(SourceError):
    """The bytes of a source could not be had: network, HTTP, policy, size or encoding."""


class ParseError(SourceError):
    """The bytes were had but hold no readable feed: `outcome` says which (`not_a_feed` or `error`)."""

    def __init__(self, error_type: str, message: str, *, outcome: str = "not_a_feed") -> None:
        super().__init__(error_type, message)
        self.outcome = outcome


def error_class(error_type: str | None) -> str | None:
    """The family of a fetch error: http, timeout, network, body, policy (or content for the rest)."""
    if error_type is None:
        return None
    if error_type.startswith("http_"):
        return "http"
    return _ERROR_CLASSES.get(error_type, "content")
