"""The one duration grammar of newsbeam: `90s`, `15m`, `2h`, `1d`, `2w`, or a number of seconds.

The CLI (`--grace`, `--older-than`, `--duration`), the config (`poll_interval`, `state.*`, `stream.*`)
and maintenance all read durations through `parse_duration`, so a value accepted in one place is
accepted everywhere. Anything past a century is refused here with a clear message instead of
overflowing a date computation later.
"""

from __future__ import annotations

import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SECONDS = 100 * 365 * 86400  # a century: longer is a typo, and dates around it overflow
_DURATION = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE)
GRAMMAR = "a number and a unit s, m, h, d or w (90s, 15m, 2h, 1d, 2w), or a number of seconds"


def parse_duration(value: int | float | str) -> int:
    """Whole seconds from 900, "900", "90s", "15m", "1.5h", "1d" or "2w"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: use {GRAMMAR}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r}: a duration cannot be negative")
        seconds = float(value)
    else:
        found = _DURATION.match(value)
        if found is None:
            negative = value.strip().startswith("-")
            raise ValueError(
                f"{value!r}: a duration cannot be negative"
                if negative
                else f"{value!r} is not a duration: use {GRAMMAR}"
            )
        unit = found.group("unit").lower()
        if unit and unit not in UNIT_SECONDS:
            raise ValueError(f"{value!r} is not a duration (unknown unit {unit!r}): use {GRAMMAR}")
        seconds = float(found.group("amount")) * UNIT_SECONDS.get(unit, 1)
    if seconds > MAX_SECONDS:
        raise ValueError(f"the duration {value!r} is too long: at most 100 years ({MAX_SECONDS // 86400}d)")
    return int(seconds)
