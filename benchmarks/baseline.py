"""The baseline: the script a user would write instead of newsbeam, one process.

feedparser with its defaults, seeded langdetect `detect_langs` on title plus text (HTML tags
stripped), and one `pyarrow.parquet.write_table` at the end. Run as a benchmark step:

    python -m benchmarks.baseline OUTPUT.parquet COPY_FOLDER...
"""

from __future__ import annotations

import html
import re
import sys
import time
from pathlib import Path
from typing import Any

import feedparser
import pyarrow as pa
import pyarrow.parquet as pq
from langdetect import DetectorFactory, detect_langs
from langdetect.lang_detect_exception import LangDetectException

from benchmarks.corpus import list_inputs
from benchmarks.measure import report

_TAG = re.compile(r"<[^>]+>")


def plain(value: str) -> str:
    return html.unescape(_TAG.sub(" ", value))


def language(text: str) -> tuple[str, float]:
    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return "und", 0.0
    return best.lang, best.prob


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    DetectorFactory.seed = 0
    output, folders = Path(argv[0]), argv[1:]
    rows: list[dict[str, Any]] = []
    for path, is_seed in list_inputs(folders):
        if is_seed:
            title, _, body = path.read_text(encoding="utf-8").partition("\n")
            entries = [{"title": title.strip(), "text": body.strip(), "link": None}]
        else:
            parsed = feedparser.parse(str(path))
            entries = []
            for entry in parsed.entries:
                content = entry.get("content")
                text = content[0].get("value", "") if content else entry.get("summary", "")
                entries.append(
                    {"title": entry.get("title", ""), "text": plain(text), "link": entry.get("link")}
                )
        for entry in entries:
            lang, confidence = language(f"{entry['title']}\n{entry['text']}")
            rows.append(
                {
                    "source": str(path),
                    "url": entry["link"],
                    "title": entry["title"],
                    "text": entry["text"],
                    "language": lang,
                    "confidence": confidence,
                }
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), output)
    report({"articles": len(rows), "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main(sys.argv[1:])
