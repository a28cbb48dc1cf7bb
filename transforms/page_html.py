"""An article page's bytes as an HTML tree: its media type, its charset, its parse (pure, no Beam).

Pages come with wrong headers: a PDF served as `text/html`, UTF-8 bytes declared ISO-8859-1, legacy
bytes declared as nothing. `media_type` believes the bytes over the header where they are plainly
something else, `decode_html` finds the charset (BOM, valid UTF-8, header, `<meta charset>`,
detection), `parse_html` parses with trafilatura's parser settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import charset_normalizer
import lxml.etree
import lxml.html
from trafilatura.utils import HTML_PARSER
from w3lib.encoding import html_body_declared_encoding, http_content_type_encoding, read_bom, resolve_encoding

HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})


@dataclass(frozen=True)
class DecodedPage:
    html: str
    charset: str
    charset_source: str  # bom, header, meta, utf-8 (valid UTF-8 whatever was declared), detected, fallback


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
)
_LOOKS_LIKE_HTML = re.compile(rb"<(?:!doctype\s+html|html|head|body|meta|title|div|p)[\s>/]", re.IGNORECASE)


def media_type(content_type: str | None, body: bytes) -> str:
    """The page's media type: the header's, unless the bytes are plainly something else.

    A server that calls a PDF or an image `text/html` is believed on neither; a missing or generic
    header (`application/octet-stream`) is replaced by what the bytes look like.
    """
    head = body[:1024].lstrip()
    for magic, sniffed in _MAGIC:
        if head.startswith(magic):
            return sniffed
    if head[4:12] == b"ftypisom" or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        return "image/webp" if head.startswith(b"RIFF") else "video/mp4"
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared and declared not in ("application/octet-stream", "binary/octet-stream"):
        return declared
    return "text/html" if _LOOKS_LIKE_HTML.search(head) else declared or "application/octet-stream"


def _decodes(body: bytes, encoding: str) -> str | None:
    try:
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(body: bytes, content_type: str | None = None) -> DecodedPage:
    """The page as text: BOM, then valid UTF-8, then the header's charset, `<meta charset>`, detection.

    Bytes that are valid UTF-8 are UTF-8 whatever the page declares (a common mistake is declaring
    ISO-8859-1 for UTF-8 bytes; the converse is all but impossible by chance). A declaration is
    used only when the bytes decode under it; `latin1` means windows-1252, as browsers read it.
    """
    bom_encoding, bom = read_bom(body)
    if bom_encoding and bom:
        text = _decodes(body[len(bom) :], bom_encoding)
        if text is not None:
            return DecodedPage(text, bom_encoding, "bom")
    text = _decodes(body, "utf-8")
    if text is not None:
        return DecodedPage(text, "utf-8", "utf-8")
    for label, source in (
        (http_content_type_encoding(content_type), "header"),
        (html_body_declared_encoding(body[:8192]), "meta"),
    ):
        encoding = resolve_encoding(label) if label else None
        if encoding and encoding != "utf-8" and (text := _decodes(body, encoding)) is not None:
            return DecodedPage(text, encoding, source)
    best = charset_normalizer.from_bytes(body[:65536]).best()
    if best is not None and (text := _decodes(body, best.encoding)) is not None:
        return DecodedPage(text, best.encoding, "detected")
    return DecodedPage(body.decode("utf-8", errors="replace"), "utf-8", "fallback")


_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_INVALID_XML_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_INVALID_XML_BYTES = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20))


def _parses_as_is(utf8_body: bytes) -> bool:
    # bytes.translate is a C loop: ten times faster than a regular expression scan of a large page.
    return (
        len(utf8_body.translate(None, _INVALID_XML_BYTES)) == len(utf8_body)
        # U+FFFE and U+FFFF are no characters in XML (one scan for their rare common prefix first)
        and (
            b"\xef\xbf" not in utf8_body or not (b"\xef\xbf\xbe" in utf8_body or b"\xef\xbf\xbf" in utf8_body)
        )
        and utf8_body.lstrip()[:5] != b"<?xml"
    )


def parse_html(html: str, utf8_body: bytes | None = None) -> lxml.html.HtmlElement | None:
    """The page's tree, parsed with trafilatura's parser settings, or None when there is no HTML.

    `utf8_body` is the same page as the valid UTF-8 bytes it was decoded from: parsed as they are
    when they need no cleaning, which saves encoding the text again (3% of an extraction).
    """
    if utf8_body is not None and _parses_as_is(utf8_body):
        source = utf8_body
    else:
        source = _INVALID_XML_CHARS.sub("", _XML_DECLARATION.sub("", html, count=1)).encode(
            "utf-8", "surrogatepass"
        )
    if not source.strip():
        return None
    try:
        tree = lxml.html.fromstring(source, parser=HTML_PARSER)
    except (lxml.etree.ParserError, ValueError):
        return None
    return tree if isinstance(tree, lxml.html.HtmlElement) else None
