"""The one rule for the canonical form of an http(s) URL, shared by feed lists and articles.

Two listings of one feed, and two links to one article, are the same when they differ only in
the case of the scheme and host, a trailing dot of the host, a default port, the fragment or the
credentials. Feeds use this form as it is (their query is part of what they are); articles also
drop tracking parameters and let w3lib sort and re-encode the query (`transforms/normalize.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def stripped_url(url: str, keep_query_parameter: Callable[[str], bool] | None = None) -> str | None:
    """`url` with scheme and host lower-cased, the host's trailing dot, a default port, the fragment
    and any credentials removed, and `/` for an empty path; None when it has no host.

    With `keep_query_parameter`, only the query's `name=value` pairs whose name it accepts stay
    (empty pairs go too). ValueError for a port that is not a number.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    query = parts.query
    if keep_query_parameter is not None:
        query = "&".join(
            pair for pair in query.split("&") if pair and keep_query_parameter(pair.split("=", 1)[0])
        )
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))
