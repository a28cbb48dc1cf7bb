"""Seed files: plain text articles (first line the title), in whatever encoding they were saved."""

from __future__ import annotations

import charset_normalizer

from transforms.raw_entry import ParsedInput, RawEntry
from transforms.schema import Outcome, SourceType

_CHAOS_MARGIN = 0.1


def decode_text(body: bytes) -> tuple[str, str]:
    """Decode a text file: UTF-8 (with or without BOM), else the detected encoding.

    Returns (text, encoding). Raises UnicodeDecodeError when no encoding fits (e.g. binary data).
    """
    if b"\x00" in body[:8192] and not body.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnicodeDecodeError("binary", body[:1], 0, 1, "NUL bytes: a binary file, not text")
    try:
        return body.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    matches = list(charset_normalizer.from_bytes(body))
    if not matches:
        raise UnicodeDecodeError("unknown", body[:1], 0, 1, "no text encoding fits these bytes")
    # charset_normalizer ranks by "chaos" alone; on short texts legacy code pages tie or nearly
    # tie, and the first is often wrong (cp1250 for Spanish, turning ñ into ń). Among the
    # near-best, take the most coherent (language-wise), and windows-1252 on a tie.
    near = [m for m in matches if m.chaos <= matches[0].chaos + _CHAOS_MARGIN]
    best = max(near, key=lambda m: (round(m.coherence, 3), m.encoding == "cp1252"))
    return str(best), best.encoding


def parse_seed_file(body: bytes, source: str) -> ParsedInput:
    """A seed file: first non-empty line is the title, the rest the body (paragraphs on blank lines)."""
    try:
        text, _encoding = decode_text(body)
    except UnicodeDecodeError as error:
        return ParsedInput(Outcome.ERROR, error_type="undecodable", message=error.reason)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ParsedInput(Outcome.EMPTY, feed_format="text", message="the file holds no text")
    title = lines[0].strip()
    body_text = "\n".join(lines[1:]).strip()
    entry = RawEntry(
        source=source,
        source_type=SourceType.SEED_FILE,
        ordinal=0,
        feed_title=None,
        feed_link=None,
        feed_language=None,
        entry_id=None,
        link=None,
        title=title,
        summary=None,
        content=body_text,
        content_is_html=False,
        entry_language=None,
        authors=[],
        tags=[],
        published=None,
        published_epoch=None,
        published_field=None,
        updated=None,
        updated_epoch=None,
        updated_field=None,
    )
    return ParsedInput(Outcome.OK, [entry], feed_format="text")
