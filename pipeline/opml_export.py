"""The feeds an output has fetched, as an OPML 2.0 subscription list with their health.

    newsbeam report output --opml feeds.opml

Every http(s) feed with fetch rows in the output is one `<outline type="rss">`, in the order of
pipeline/health.py (failing, then stale, then healthy), titled with the feed's own title. Its
health rides along in attributes of newsbeam's namespace (`newsbeam:status`, `newsbeam:reason`,
`newsbeam:lastEntry`, ...), which OPML 2.0 allows and readers ignore; so the list imports into any
feed reader, and back into newsbeam (`newsbeam run --opml feeds.opml`). Local feed files are left
out: a subscription is a URL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from lxml import etree

NAMESPACE = "urn:newsbeam:feed-health"  # an identifier only: nothing is fetched from it


def _attribute(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def feeds_opml(health: list[dict[str, Any]], generated_at: datetime | None = None) -> bytes:
    """The OPML document of the feeds in `health` (rows of `pipeline.health.feed_health`)."""
    generated_at = generated_at or datetime.now(UTC)
    root = etree.Element("opml", version="2.0", nsmap={"newsbeam": NAMESPACE})
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = "newsbeam feeds with their health"
    etree.SubElement(head, "dateCreated").text = format_datetime(generated_at)
    body = etree.SubElement(root, "body")
    for row in health:
        if not str(row["source"]).startswith(("http://", "https://")):
            continue
        title = row.get("title") or row["source"]
        outline = etree.SubElement(body, "outline", text=title, title=title, type="rss", xmlUrl=row["source"])
        health_attributes = {
            "status": row["status"],
            "reason": row.get("reason") or None,
            "lastOutcome": row.get("last_outcome"),
            "failingFor": str(row.get("failing_for") or 0),
            "lastFetch": _iso(row.get("last_fetch")),
            "lastEntry": _iso(row.get("last_entry")),
        }
        for name, value in health_attributes.items():
            if value is not None:
                outline.set(_attribute(name), str(value))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True))
