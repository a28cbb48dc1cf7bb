"""Load and validate a newsbeam YAML config into one `Settings`; bad configuration fails here, at start.

Validated once: the file and the command line's overrides together (`load_settings`), then what
the command needs (`Settings.mode_problems`: inputs for a run, http(s) feeds and a streaming
runner for `stream`, gs:// paths for `launch`). Unknown keys, wrong types, missing inputs, bad
partition keys and unreadable OPML lists are one `ConfigError` whose lines each name the file and
the key, or the flag a value came from. The feed list (`feeds:` and OPML) is read once, with the
settings (`Settings.feed_list`).

Defaults live once, in the stages' frozen settings (`FetchSettings`, `LanguageSettings`,
`ParquetSettings`, `StatePolicy`): the models below take theirs from them, and `Settings.stages`
derives the stages' settings back, in one place. `configs/local.yaml` shows the defaults for users
to edit; tests/test_config.py and tests/test_settings.py hold it equal to them.

Paths under `inputs:` and `opml:` are relative to the config file's folder (so a config and the
files it lists travel together, and the shipped config finds the shipped seeds from any directory);
`output:` and the command line's paths are relative to the working directory. The YAML loader is
bounded (pipeline/bounded_yaml.py).

Over 400 lines as one concern: every key, its rule and how a bad one is reported, in one place.
"""

from __future__ import annotations

import difflib
import glob
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from pipeline.bounded_yaml import safe_load_bounded
from pipeline.durations import parse_duration
from pipeline.feeds import FeedList, FeedListError, check_feed_url, check_language, feed_list
from transforms.credentials import redact_url
from transforms.feed_state import FeedSource, StatePolicy, state_path
from transforms.fetch import FetchSettings
from transforms.fulltext import FullTextMode, FullTextSettings
from transforms.io.parquet import ParquetSettings
from transforms.io.story_index import StorySettings
from transforms.language import LanguageSettings
from transforms.pages import PageSettings
from transforms.parse import is_http_url
from transforms.read import MAX_ENTRIES_PER_FEED, ReadSettings
from transforms.schema import PARTITIONABLE_ARTICLE_KEYS


class ConfigError(ValueError):
    """Bad configuration: the message names the file and the key."""


def check_input(item: str) -> str:
    """An input must be an http(s) URL, an existing path, a glob that matches, or an object-store URL."""
    if not item or not item.strip():
        raise ValueError("an input is empty")
    scheme = urlsplit(item).scheme
    if scheme in ("http", "https"):
        check_feed_url(item)  # the feed lists' rule: its errors never show credentials
        return item
    if scheme in ("gs", "s3", "hdfs", "azfs"):
        return item
    if len(scheme) > 1:
        raise ValueError(f"input {item!r}: unsupported URL scheme {scheme!r}")
    if any(ch in item for ch in "*?["):
        if not glob.glob(item, recursive=True):
            raise ValueError(f"input pattern {item!r} matches no file")
        return item
    if not os.path.exists(item):
        raise ValueError(f"input path {item!r} does not exist")
    return item


def check_runner(name: str) -> str:
    """newsbeam's runner names, Beam's, or a dotted class path; a "did you mean" for typos."""
    from apache_beam.runners.runner import _RUNNER_MAP

    from pipeline.runners import DATAFLOW_ALIASES, FLINK_ALIASES, LOCAL_ALIASES, PRISM_ALIASES

    key = name.strip().lower()
    ours = sorted(LOCAL_ALIASES | PRISM_ALIASES | FLINK_ALIASES | DATAFLOW_ALIASES)
    beams = sorted(_RUNNER_MAP)
    known = {*ours, *beams, *(k.removesuffix("runner") for k in beams)}
    if key in known or "." in key:
        return name
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown runner {name!r}{hint} (direct, prism, flink, dataflow, a Beam runner name "
        "such as SparkRunner, or a dotted class path)"
    )


def check_output(output: str) -> str:
    """A local output must be a folder (or not exist yet); object-store URLs are checked by the runner."""
    if not output.strip():
        raise ValueError("the output path is empty")
    if len(urlsplit(output).scheme) <= 1 and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"{output!r} is a file, not a folder; give a folder to write the datasets into")
    return output


def _check_inputs(inputs: list[str]) -> list[str]:
    return [check_input(item) for item in inputs]


def _optional_duration(value: Any) -> int | None:
    return None if value is None else parse_duration(value)


def _optional_language(value: str | None) -> str | None:
    return check_language(value) if value else None


def _at_least_a_second(value: Any) -> int:
    seconds = parse_duration(value)
    if seconds < 1:  # 0 would log a line on every turn of the display's loop
        raise ValueError(f"{value!r}: give at least 1s")
    return seconds


# Values that read a grammar: durations (`15m`), feed URLs, language codes.
Duration = Annotated[int, BeforeValidator(parse_duration)]
OptionalDuration = Annotated[int | None, BeforeValidator(_optional_duration)]
FeedUrl = Annotated[str, AfterValidator(check_feed_url)]
LanguageCode = Annotated[str | None, AfterValidator(_optional_language)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The stages' own frozen settings hold the defaults; the models below take theirs from them.
_LANGUAGE = LanguageSettings()
_PARQUET = ParquetSettings()
_FETCH = FetchSettings()
_STATE = StatePolicy()
_FULLTEXT = FullTextSettings()
_PAGES = PageSettings()
_STORIES = StorySettings()


class LanguageConfig(_Strict):
    max_chars: int = Field(_LANGUAGE.max_chars, ge=50, le=100_000)
    n_trial: int = Field(_LANGUAGE.n_trial, ge=1, le=20)
    seed: int = _LANGUAGE.seed
    min_letters: int = Field(_LANGUAGE.min_letters, ge=1)
    sure_confidence: float = Field(_LANGUAGE.sure_confidence, ge=0.0, le=1.0)
    min_letters_to_override: int = Field(_LANGUAGE.min_letters_to_override, ge=0, le=1000)
    declared_prior: float = Field(_LANGUAGE.declared_prior, gt=0.0, lt=1.0)
    cache_size: int = Field(_LANGUAGE.cache_size, ge=0, le=10_000_000)


class ParquetConfig(_Strict):
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"
    compression_level: int = Field(_PARQUET.compression_level, ge=1, le=22)
    row_group_size: int = Field(_PARQUET.row_group_size, ge=1_000)
    max_buffered_rows: int = Field(_PARQUET.max_buffered_rows, ge=100)


class FetchConfig(_Strict):
    user_agent: str = _FETCH.user_agent
    connect_timeout: float = Field(_FETCH.connect_timeout, gt=0)
    read_timeout: float = Field(_FETCH.read_timeout, gt=0)
    total_timeout: float = Field(_FETCH.total_timeout, gt=0)
    max_bytes: int = Field(_FETCH.max_bytes, ge=1024)
    max_redirects: int = Field(_FETCH.max_redirects, ge=0, le=20)
    max_attempts: int = Field(_FETCH.max_attempts, ge=1, le=10)
    backoff_base: float = Field(_FETCH.backoff_base, ge=0)
    max_retry_after: float = Field(_FETCH.max_retry_after, ge=0)
    allow_private_hosts: bool = _FETCH.allow_private_hosts
    max_concurrent: int = Field(_FETCH.max_concurrent, ge=1, le=512)  # feeds fetched at once per worker
    max_per_host: int = Field(_FETCH.max_per_host, ge=1, le=64)  # requests at once to one host
    max_entries_per_feed: int = Field(MAX_ENTRIES_PER_FEED, ge=1)  # of any feed, file or URL


class FullTextConfig(_Strict):
    """Article pages for entries of http(s) feeds (transforms/fulltext.py): when, and how politely."""

    mode: FullTextMode = _FULLTEXT.mode  # off, auto (a short or truncated feed text), always
    min_words: int = Field(_FULLTEXT.min_words, ge=0, le=100_000)  # `auto`: shorter is a teaser
    max_page_bytes: int = Field(_PAGES.max_page_bytes, ge=1024)
    max_per_host: int = Field(_PAGES.max_per_host, ge=1, le=64)  # page requests at once to one host
    min_interval: float = Field(_PAGES.min_interval_seconds, ge=0)  # seconds between starts to a host
    max_crawl_delay: float = Field(_PAGES.max_crawl_delay_seconds, ge=0)  # a longer one: not fetched


class FeedConfig(_Strict):
    """One `feeds:` entry: a feed URL and optional hints."""

    url: FeedUrl
    name: str | None = None
    language: LanguageCode = None  # ISO 639-1 hint, used when the feed declares none
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    poll_interval: OptionalDuration = None  # seconds, or "15m", "2h", "1d": not polled more often
    fulltext: FullTextMode | None = None  # this feed's `fulltext.mode`; None: the config's

    def source(self) -> FeedSource:
        return FeedSource(
            url=self.url,
            name=self.name,
            language=self.language,
            category=self.category,
            tags=tuple(self.tags),
            poll_interval=self.poll_interval,
            fulltext=self.fulltext.value if self.fulltext else None,
        )


class StateConfig(_Strict):
    """Per-feed state between runs (conditional GET, ttl, failure backoff)."""

    enabled: bool = True
    path: str | None = None  # default OUTPUT/_state/feeds.parquet
    honour_ttl: bool = _STATE.honour_ttl
    max_fresh: Duration = _STATE.max_fresh_seconds  # a feed's ttl / max-age is shortened to this ("1d")
    backoff_after: int = Field(_STATE.backoff_after, ge=1)  # consecutive failures before a skip
    backoff_base: Duration = _STATE.backoff_base_seconds  # first skip after failures; doubled per failure
    backoff_max: Duration = _STATE.backoff_max_seconds
    force: bool = False  # poll every feed now, ignoring ttl and backoff (`--force`)


class StreamConfig(_Strict):
    """The streaming job (`newsbeam stream`): polling, windows on fetch time, de-duplication."""

    poll_interval: Duration = Field(300, ge=1)  # seconds or "5m": feeds without their own poll_interval
    window: Duration = Field(300, ge=1)  # fixed windows on fetch time, seconds or "5m"
    cleanup_after: Duration = Field(86400, ge=1)  # a window's pane counter is kept this long after its end
    duration: OptionalDuration = Field(None, ge=1)  # stop after this long (`--duration`); None: until Ctrl-C


class StoriesConfig(_Strict):
    """Near-duplicate stories (transforms/io/story_index.py): assigned at each commit."""

    enabled: bool = _STORIES.enabled  # also `--stories` / `--no-stories` per run
    threshold: float = Field(_STORIES.threshold, gt=0.0, le=1.0)  # similarity to join a story
    window: Duration = Field(_STORIES.window_seconds, ge=1)  # how far back a match may reach ("7d")


class StageSettings(NamedTuple):
    """The frozen settings each stage takes, all derived from one `Settings` (`Settings.stages`)."""

    fetch: FetchSettings
    language: LanguageSettings
    parquet: ParquetSettings
    state_policy: StatePolicy
    read: ReadSettings  # the batch source: fetch settings, feed hints, per-feed state
    fulltext: FullTextSettings  # article pages: mode, per-feed modes, politeness
    stories: StorySettings  # near-duplicate stories: on or off, threshold, window


# What each command needs beyond valid keys (`Settings.mode_problems`).
Mode = Literal["batch", "stream", "launch"]


class Settings(_Strict):
    """A whole newsbeam config file.

    Valid keys make valid settings; what a command needs on top (inputs for a run, http(s) feeds
    and a streaming runner for `stream`, gs:// paths for `launch`) is `mode_problems`. The feed
    list (`feeds:` and the OPML files) is read once, on first use, and kept with the settings.
    """

    runner: Annotated[str, AfterValidator(check_runner)] = "direct"
    output: Annotated[str, AfterValidator(check_output)] = "output"
    inputs: Annotated[list[str], AfterValidator(_check_inputs)] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=lambda: ["language"])
    language: LanguageConfig = LanguageConfig()
    parquet: ParquetConfig = ParquetConfig()
    fetch: FetchConfig = FetchConfig()
    feeds: list[FeedConfig] = Field(default_factory=list)
    opml: list[str] = Field(default_factory=list)  # OPML subscription lists (also `--opml`)
    state: StateConfig = StateConfig()
    stream: StreamConfig = StreamConfig()
    fulltext: FullTextConfig = FullTextConfig()
    stories: StoriesConfig = StoriesConfig()
    progress_interval: Annotated[int, BeforeValidator(_at_least_a_second)] = 15  # seconds or "15s": a
    # run not on a terminal logs its progress this often
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

    @property
    def article_partition_keys(self) -> tuple[str, ...]:
        return ("ingest_date", *self.partition_by)

    @cached_property
    def feed_list(self) -> FeedList:
        """`feeds:` then each OPML file, without duplicates; FeedListError for an unreadable file."""
        listed = [(f"feeds[{index}]", feed.source()) for index, feed in enumerate(self.feeds)]
        return feed_list(listed, self.opml)

    @cached_property
    def stages(self) -> StageSettings:
        fetch = FetchSettings(**self.fetch.model_dump(exclude={"max_entries_per_feed"}))
        state = self.state
        policy = StatePolicy(
            honour_ttl=state.honour_ttl,
            max_fresh_seconds=state.max_fresh,
            backoff_after=state.backoff_after,
            backoff_base_seconds=state.backoff_base,
            backoff_max_seconds=state.backoff_max,
        )
        read = ReadSettings(
            fetch=fetch,
            feeds={feed.url: feed for feed in self.feed_list.feeds},
            state_path=(state.path or state_path(self.output)) if state.enabled else None,
            state_policy=policy,
            force=state.force,
            max_entries_per_feed=self.fetch.max_entries_per_feed,
        )
        return StageSettings(
            fetch=fetch,
            language=LanguageSettings(**self.language.model_dump()),
            parquet=ParquetSettings(**self.parquet.model_dump()),
            state_policy=policy,
            read=read,
            fulltext=self._fulltext(fetch),
            stories=StorySettings(self.stories.enabled, self.stories.threshold, self.stories.window),
        )

    def _fulltext(self, fetch: FetchSettings) -> FullTextSettings:
        config = self.fulltext
        pages = PageSettings(
            fetch=fetch,
            max_page_bytes=config.max_page_bytes,
            max_per_host=config.max_per_host,
            min_interval_seconds=config.min_interval,
            max_crawl_delay_seconds=config.max_crawl_delay,
        )
        # Keyed as articles name their source: the URL redacted.
        feed_modes = {
            redact_url(feed.url): FullTextMode(feed.fulltext)
            for feed in self.feed_list.feeds
            if feed.fulltext
        }
        return FullTextSettings(
            pages=pages, mode=config.mode, min_words=config.min_words, feed_modes=feed_modes
        )

    def mode_problems(self, mode: Mode) -> list[tuple[str, str]]:
        """What `mode` needs that these settings lack, as (key, problem); reads the feed list."""
        from pipeline.runners import DATAFLOW_ALIASES, LOCAL_ALIASES

        feeds = self.feed_list.feeds
        runner = self.runner.strip().lower()
        problems: list[tuple[str, str]] = []
        if mode == "stream":
            if runner in LOCAL_ALIASES:
                problems.append(
                    (
                        "runner",
                        f"{self.runner!r} runs batch pipelines only (an unbounded one never emits its "
                        "windows there); use `prism` locally (`make prism`), or FlinkRunner / DataflowRunner",
                    )
                )
            not_urls = [item for item in self.inputs if not is_http_url(item)]
            if not_urls:
                problems.append(
                    (
                        "inputs",
                        f"the streaming job polls http(s) feeds; {', '.join(map(repr, not_urls))} "
                        "is not one (use `newsbeam run` for files)",
                    )
                )
            elif not self.inputs and not feeds:
                problems.append(
                    ("inputs", "no feeds to poll; list them under `feeds:` or `inputs:`, or give --opml")
                )
            return problems
        if not self.inputs and not feeds:
            problems.append(("inputs", "no inputs; give --input or list them in the config"))
        if mode == "launch":
            if runner not in DATAFLOW_ALIASES:
                problems.append(("runner", f"`launch` submits to Dataflow; got {self.runner!r} (use `run`)"))
            if not self.output.startswith("gs://"):
                problems.append(
                    (
                        "output",
                        f"{self.output!r} is not a gs:// URL; Dataflow workers cannot write a local folder",
                    )
                )
            local = [item for item in self.inputs if "://" not in item]
            if local:
                problems.append(("inputs", f"Dataflow workers cannot read local paths: {', '.join(local)}"))
        return problems

    def check_mode(self, mode: Mode, origin: str = "settings") -> Settings:
        """These settings when `mode` can run with them; else ConfigError, one line per problem."""
        try:
            problems = self.mode_problems(mode)
        except FeedListError as error:
            raise ConfigError(_line("opml", str(error), origin, frozenset())) from None
        if problems:
            raise ConfigError(
                "\n".join(_line(key, message, origin, frozenset()) for key, message in problems)
            )
        return self


def _paths_relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The config's `inputs:` and `opml:` paths resolved against its folder (URLs and absolute paths kept).

    A resolved path under the working directory is written relative to it, as a user would type it
    there (it becomes the articles' `source`).
    """

    def resolve(item: Any) -> Any:
        if not isinstance(item, str) or not item.strip() or len(urlsplit(item).scheme) > 1:
            return item
        if os.path.isabs(os.path.expanduser(item)):
            return item
        resolved = os.path.normpath(folder / item)
        relative = os.path.relpath(resolved)
        return resolved if relative == ".." or relative.startswith(f"..{os.sep}") else relative

    resolved = dict(data)
    for key in ("inputs", "opml"):
        if isinstance(resolved.get(key), list):
            resolved[key] = [resolve(item) for item in resolved[key]]
    return resolved


# Keys that once meant something: refused like any unknown key, but saying why and what to do.
REMOVED_KEYS = {
    "stream.expire_after": "removed: the streaming sink decides against the committed version index, "
    "which keeps every id; delete this key",
    "stream.dedupe_buckets": "removed: streaming de-duplication keeps no per-key state any more; "
    "delete this key",
}


# The command-line flag of each key the CLI overrides (nested keys dotted). An override of any
# other key (from Python) is named `overrides: KEY`.
FLAG_OF_KEY = {
    "inputs": "--input",
    "output": "--output",
    "runner": "--runner",
    "opml": "--opml",
    "state.force": "--force",
    "stream.duration": "--duration",
    "fulltext.mode": "--fulltext",
    "stories.enabled": "--stories",
    "progress_interval": "--progress-interval",
}


def _line(key: str, message: str, origin: str, from_flags: frozenset[str]) -> str:
    """One problem, naming the flag for a value given on the command line, else the file and key."""
    given = next((k for k in from_flags if key == k or key.startswith(f"{k}.")), None)
    if given is None:
        return f"{origin}: {key}: {message}"
    if given in FLAG_OF_KEY:
        return f"{FLAG_OF_KEY[given]}: {message}"
    return f"overrides: {key}: {message}"


def _format_errors(error: ValidationError, origin: str, from_flags: frozenset[str] = frozenset()) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = REMOVED_KEYS.get(key, "unknown key")
        lines.append(_line(key, message, origin, from_flags))
    return "\n".join(lines)


def _with_override(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`data` with the dotted `key` set (`state.force`), sections merged, never mutated."""
    head, _, rest = key.partition(".")
    if not rest:
        return {**data, head: value}
    section = data.get(head, {})
    if not isinstance(section, dict):  # a bad section stays for validation to name
        return data
    return {**data, head: _with_override(section, rest, value)}


def _read_config(path: str | Path) -> dict[str, Any]:
    origin = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{origin}: cannot read the config file: {error.strerror}") from error
    try:
        loaded = safe_load_bounded(text)
    except (yaml.YAMLError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ConfigError(f"{origin}: not valid YAML: {reason}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys to values")
    return _paths_relative_to(loaded, Path(path).resolve().parent)


def load_settings(
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    mode: Mode | None = None,
    absolute_output: bool = False,
) -> Settings:
    """Settings from a YAML file (or defaults when None) with overrides applied on top, validated once.

    `overrides` are keys of the file (dotted for nested ones: `state.force`); None values are
    skipped. They are validated with the file, and a bad one is named by its command-line flag.
    With `mode`, what that command needs is checked too (`Settings.mode_problems`); with
    `absolute_output`, a local output is made absolute (so every message says where it is).
    The OPML files are read here, once: a missing or broken one fails naming the file.
    """
    origin = "defaults" if path is None else str(path)
    data = {} if path is None else _read_config(path)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    for key, value in given.items():
        data = _with_override(data, key, value)
    if absolute_output:
        output = data.get("output", Settings.model_fields["output"].default)
        if isinstance(output, str) and output.strip() and len(urlsplit(output).scheme) <= 1:
            data["output"] = os.path.abspath(output)
    from_flags = frozenset(given)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, origin, from_flags)) from None
    try:
        problems = settings.mode_problems(mode) if mode else []
        _ = settings.feed_list
    except FeedListError as error:
        raise ConfigError(_line("opml", str(error), origin, from_flags)) from None
    if problems:
        raise ConfigError("\n".join(_line(key, message, origin, from_flags) for key, message in problems))
    return settings
