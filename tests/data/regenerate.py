"""Regenerate the golden files in tests/data/ from the shipped inputs in seeds/.

    .venv/bin/python tests/data/regenerate.py

Golden files are never edited by hand: change the code, run this, and review the diff (`git diff
tests/data/`) as part of the change. `parsed/<feed>.json` holds what `parse_input` gives for each
shipped feed; `normalized/<input>.json` holds what `normalize_entry` makes of each entry of each
shipped feed and seed file, at a fixed "now".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
sys.path.insert(0, str(PROJECT))

from transforms.normalize import normalize_entry  # noqa: E402
from transforms.parse import ParsedInput, RawEntry, parse_input, parse_seed_file  # noqa: E402

SEEDS = PROJECT / "seeds"
FEEDS = SEEDS / "feeds"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def jsonable_entries(entries: list[RawEntry]) -> list[dict[str, Any]]:
    return [{k: (str(v) if k == "source_type" else v) for k, v in sorted(e.items())} for e in entries]


def jsonable_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in sorted(record.items())}


def parse_shipped(path: Path) -> ParsedInput:
    source = path.relative_to(PROJECT).as_posix()
    body = path.read_bytes()
    return parse_seed_file(body, source) if path.suffix == ".txt" else parse_input(body, source)


def shipped_inputs() -> list[Path]:
    return sorted(FEEDS.iterdir()) + sorted(SEEDS.glob("*.txt"))


def write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    for path in shipped_inputs():
        parsed = parse_shipped(path)
        if path.parent == FEEDS:
            write(
                HERE / "parsed" / f"{path.name}.json",
                {
                    "outcome": str(parsed.outcome),
                    "feed_format": parsed.feed_format,
                    "feed_title": parsed.feed_title,
                    "entries": jsonable_entries(parsed.entries),
                },
            )
        normalized = [jsonable_record(normalize_entry(entry, NOW)) for entry in parsed.entries]
        write(HERE / "normalized" / f"{path.name}.json", normalized)
        print(f"{path.relative_to(PROJECT)}: {len(parsed.entries)} entries")


if __name__ == "__main__":
    main()
