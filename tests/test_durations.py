"""One duration grammar (`90s`, `15m`, `2h`, `1d`, `2w`) for the CLI, the config and maintenance."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_settings
from pipeline.durations import parse_duration
from pipeline.maintenance import MaintenanceError, parse_age

GOOD = {"90s": 90, "15m": 900, "2h": 7200, "1d": 86400, "2w": 1_209_600, "0s": 0, "1.5h": 5400, "900": 900}
BAD = ("90days", "soon", "5 weeks", "-5m", "", "1y")


@pytest.mark.parametrize(("text", "seconds"), GOOD.items())
def test_every_reader_accepts_the_same_durations(tmp_path: Path, text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_age(text) == timedelta(seconds=seconds)  # prune --older-than, compact --grace
    config = tmp_path / "c.yaml"
    yaml = f"state:\n  max_fresh: '{text}'\nstream:\n  cleanup_after: '{text}'\n"
    config.write_text(yaml, encoding="utf-8")
    if seconds:
        settings = load_settings(config)
        assert settings.state.max_fresh == seconds and settings.stream.cleanup_after == seconds


@pytest.mark.parametrize("text", BAD)
def test_every_reader_refuses_the_same_durations(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError) as direct:
        parse_duration(text)
    with pytest.raises(MaintenanceError) as maintenance:
        parse_age(text)
    assert str(maintenance.value) == str(direct.value)
    config = tmp_path / "c.yaml"
    config.write_text(f"state:\n  max_fresh: '{text}'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"state\.max_fresh: "):
        load_settings(config)


def test_a_huge_duration_is_a_clear_error_not_an_overflow() -> None:
    with pytest.raises(MaintenanceError, match=r"'9999999d' is too long: at most 100 years"):
        parse_age("9999999d")
    with pytest.raises(ValueError, match="too long"):
        parse_duration(10**12)
    assert parse_duration("36500d") == 36500 * 86400
