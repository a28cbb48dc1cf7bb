"""Load and validate a newsbeam YAML config; bad configuration fails here, before the pipeline starts.

Every value has its default in `configs/local.yaml` and in the models below; a config file only
needs the keys it changes. Unknown keys, wrong types, missing inputs and bad partition keys are
reported as one `ConfigError` whose lines each name the file and the key.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.feeds import check_feed_url, check_language, parse_duration
from transforms.feed_state import FeedSource, StatePolicy
from transforms.fetch import FetchSettings
from transforms.language import LanguageSettings
from transforms.read import MAX_ENTRIES_PER_FEED
from transforms.schema import PARTITIONABLE_ARTICLE_KEYS
from transforms.write import ParquetSettings


class ConfigError(ValueError):
    """Bad configuration: the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LanguageConfig(_Strict):
    max_chars: int = Field(1000, ge=50, le=100_000)
    n_trial: int = Field(3, ge=1, le=20)
    seed: int = 0
    min_letters: int = Field(3, ge=1)
    sure_confidence: float = Field(0.9, ge=0.0, le=1.0)
    min_letters_to_override: int = Field(12, ge=0, le=1000)
    declared_prior: float = Field(0.5, gt=0.0, lt=1.0)
    cache_size: int = Field(10_000, ge=0, le=10_000_000)

    def settings(self) -> LanguageSettings:
        return LanguageSettings(**self.model_dump())


class ParquetConfig(_Strict):
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"
    compression_level: int = Field(3, ge=1, le=22)
    row_group_size: int = Field(64_000, ge=1_000)
    max_buffered_rows: int = Field(10_000, ge=100)

    def settings(self) -> ParquetSettings:
        return ParquetSettings(**self.model_dump())


class FetchConfig(_Strict):
    user_agent: str = "newsbeam/0.1 (+https://github.com/newsbeam/newsbeam)"
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(15.0, gt=0)
    total_timeout: float = Field(60.0, gt=0)
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_redirects: int = Field(5, ge=0, le=20)
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_base: float = Field(0.5, ge=0)
    max_retry_after: float = Field(30.0, ge=0)
    allow_private_hosts: bool = False
    max_concurrent: int = Field(16, ge=1, le=512)  # feeds fetched at once per worker
    max_per_host: int = Field(2, ge=1, le=64)  # requests at once to one host, across workers
    max_entries_per_feed: int = Field(
        MAX_ENTRIES_PER_FEED, ge=1
    )  # of any feed, file or URL; the rest are cut

    def settings(self) -> FetchSettings:
        return FetchSettings(**self.model_dump(exclude={"max_entries_per_feed"}))


class FeedConfig(_Strict):
    """One `feeds:` entry: a feed URL and optional hints."""

    url: str
    name: str | None = None
    language: str | None = None  # ISO 639-1 hint, used when the feed declares none
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    poll_interval: int | None = None  # seconds, or "15m", "2h", "1d": not polled more often

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return check_feed_url(url)

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str | None) -> str | None:
        return check_language(value) if value else None

    @field_validator("poll_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int | None:
        return None if value is None else parse_duration(value)

    def source(self) -> FeedSource:
        return FeedSource(
            url=self.url,
            name=self.name,
            language=self.language,
            category=self.category,
            tags=tuple(self.tags),
            poll_interval=self.poll_interval,
        )


class StateConfig(_Strict):
    """Per-feed state between runs (conditional GET, ttl, failure backoff)."""

    enabled: bool = True
    path: str | None = None  # default OUTPUT/_state/feeds.parquet
    honour_ttl: bool = True
    max_fresh: int = 86400  # a feed's ttl / max-age is shortened to this (seconds or "1d")
    backoff_after: int = Field(2, ge=1)  # consecutive failures before a feed is skipped
    backoff_base: int = 600  # first skip after failures; doubled per further failure
    backoff_max: int = 86400
    force: bool = False  # poll every feed now, ignoring ttl and backoff (`--force`)

    @field_validator("max_fresh", "backoff_base", "backoff_max", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    def policy(self) -> StatePolicy:
        return StatePolicy(
            honour_ttl=self.honour_ttl,
            max_fresh_seconds=self.max_fresh,
            backoff_after=self.backoff_after,
            backoff_base_seconds=self.backoff_base,
            backoff_max_seconds=self.backoff_max,
        )


class StreamConfig(_Strict):
    """The streaming job (`newsbeam stream`): polling, windows on fetch time, de-duplication."""

    poll_interval: int = Field(300, ge=1)  # seconds or "5m": feeds without their own poll_interval
    window: int = Field(300, ge=1)  # fixed windows on fetch time, seconds or "5m"
    expire_after: int = Field(7 * 86400, ge=1)  # forget an article id not seen for this long
    dedupe_buckets: int = Field(1024, ge=1, le=1_000_000)  # keys the de-duplication state is spread over
    cleanup_after: int = Field(86400, ge=1)  # a window's pane counter is kept this long after its end
    duration: int | None = Field(None, ge=1)  # stop after this long (also `--duration`); None: until Ctrl-C

    @field_validator("poll_interval", "window", "expire_after", "cleanup_after", "duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int | None:
        return None if value is None else parse_duration(value)


class Settings(_Strict):
    """A whole newsbeam config file."""

    runner: str = "direct"
    output: str = "output"
    inputs: list[str] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=lambda: ["language"])
    language: LanguageConfig = LanguageConfig()
    parquet: ParquetConfig = ParquetConfig()
    fetch: FetchConfig = FetchConfig()
    feeds: list[FeedConfig] = Field(default_factory=list)
    opml: list[str] = Field(default_factory=list)  # OPML subscription lists (also `--opml`)
    state: StateConfig = StateConfig()
    stream: StreamConfig = StreamConfig()
    beam_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("partition_by")
    @classmethod
    def _known_partition_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if key == "ingest_date":
                raise ValueError(
                    "`ingest_date` is always the first partition key; list only the keys after it"
                )
            if key not in PARTITIONABLE_ARTICLE_KEYS:
                raise ValueError(
                    f"unknown partition key {key!r}; choose from {', '.join(PARTITIONABLE_ARTICLE_KEYS)}"
                )
        if len(set(keys)) != len(keys):
            raise ValueError("a partition key is listed twice")
        return keys

    @field_validator("inputs")
    @classmethod
    def _inputs_exist(cls, inputs: list[str]) -> list[str]:
        for item in inputs:
            check_input(item)
        return inputs

    @field_validator("opml")
    @classmethod
    def _opml_files_exist(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not os.path.isfile(path):
                raise ValueError(f"OPML file {path!r} does not exist")
        return paths

    @property
    def article_partition_keys(self) -> tuple[str, ...]:
        return ("ingest_date", *self.partition_by)


def check_input(item: str) -> None:
    """An input must be an http(s) URL, an existing path, a glob that matches, or an object-store URL."""
    if not item or not item.strip():
        raise ValueError("an input is empty")
    scheme = urlsplit(item).scheme
    if scheme in ("http", "https"):
        if not urlsplit(item).hostname:
            raise ValueError(f"input URL {item!r} has no host")
        return
    if scheme in ("gs", "s3", "hdfs", "azfs"):
        return
    if len(scheme) > 1:
        raise ValueError(f"input {item!r}: unsupported URL scheme {scheme!r}")
    if any(ch in item for ch in "*?["):
        if not glob.glob(item, recursive=True):
            raise ValueError(f"input pattern {item!r} matches no file")
        return
    if not os.path.exists(item):
        raise ValueError(f"input path {item!r} does not exist")


def _format_errors(error: ValidationError, origin: str) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{origin}: {key}: {message}")
    return "\n".join(lines)


def load_settings(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from a YAML file (or defaults when None) with CLI overrides applied on top."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{origin}: cannot read the config file: {error.strerror}") from error
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{origin}: not valid YAML: {error}") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{origin}: the top level must be a mapping of keys to values")
        data = loaded
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, origin)) from None
