"""URLs with credentials: redacted wherever they are recorded, sent as basic auth to their origin only.

Credentials in a URL (`https://user:password@host/feed`) are sent as basic auth, only to that
URL's origin, and never recorded: `redact_url()` is the one function every dataset, state file,
manifest and message uses for a URL (`https://***@host/feed`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

# The userinfo of a URL: after the scheme, up to the last "@" before the path (a password may
# hold an unescaped "@"; "/", "?", "#" and spaces end the authority).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")


def redact_url(text: str) -> str:
    """A URL (or a message quoting URLs) as it may be recorded: `user:password@` becomes `***@`.

    The one redaction rule for every dataset, state file, manifest, log line and report. Text
    without credentials (file paths, URLs without userinfo, redacted URLs) comes back unchanged.
    """
    return _USERINFO.sub(r"\g<scheme>***@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its userinfo, and the (user, password) it held, percent-decoded (an escape
    that is no UTF-8, such as `%FF`, kept as a surrogate: `basic_auth` sends its byte)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _colon, password = userinfo.partition(":")
    plain = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return plain, (unquote(user, errors="surrogateescape"), unquote(password, errors="surrogateescape"))


def basic_auth(credentials: tuple[str, str]) -> requests.auth.HTTPBasicAuth:
    """(user, password) as the bytes Basic auth sends: UTF-8 (RFC 7617), escaped bytes as they are.

    requests would encode text as Latin-1, which cannot hold '€' and fails quoting the character.
    """
    user, password = credentials
    return requests.auth.HTTPBasicAuth(
        user.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape")
    )


def carry_credentials(target: str, listed: str) -> str:
    """`target` (where the listed feed moved) with the listed URL's credentials when it is on the
    same origin, so that a moved feed is still fetched with them; else `target` as it is."""
    plain, credentials = split_credentials(listed)
    if credentials is None or split_credentials(target)[1] is not None or not same_origin(plain, target):
        return target
    userinfo = urlsplit(listed).netloc.rpartition("@")[0]
    parts = urlsplit(target)
    return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def same_origin(first: str, second: str) -> bool:
    """Whether credentials given for `first` may go to `second`: the same scheme, host and port,
    or the upgrade from http on port 80 to https on 443 of the same host (as requests allows)."""
    try:
        a, b = _origin(first), _origin(second)
    except ValueError:
        return False
    return a == b or (a[1] == b[1] and a[0::2] == ("http", 80) and b[0::2] == ("https", 443))
