"""Load and validate a newsbeam YAML config; bad configuration fails here, before the pipeline starts.

Every value has its default in `configs/local.yaml` and in the models below; a config file only
needs the keys it changes. Unknown keys, wrong types, missing inputs and bad partition keys are
reported as one `ConfigError` whose lines each name the file and the key.

Paths under `inputs:` and `opml:` are relative to the config file's folder (so a config and the
files it lists travel together, and the shipped config finds the shipped seeds from any directory);
`output:` and the command line's paths are relative to the working directory. The YAML loader is
bounded (aliases and the size they expand to) so that an alias bomb fails here, naming the file.
"""

from __future__ import annotations

import difflib
import glob
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.durations import parse_duration
from pipeline.feeds import check_feed_url, check_language
from transforms.feed_state import FeedSource, StatePolicy
from transforms.fetch import FetchSettings
from transforms.io.parquet import ParquetSettings
from transforms.language import LanguageSettings
from transforms.read import MAX_ENTRIES_PER_FEED
from transforms.schema import PARTITIONABLE_ARTICLE_KEYS


class ConfigError(ValueError):
    """Bad configuration: the message names the file and the key."""


# An alias bomb ("billion laughs") is a few hundred bytes whose aliases expand to billions of nodes;
# a real config has a handful of aliases and a few thousand nodes.
MAX_YAML_ALIASES = 1_000
MAX_YAML_NODES = 1_000_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a cap on aliases and on the node count they expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (`*name`): refused")
        return super().compose_node(parent, index)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return self.construct_document(node)


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases would expand past MAX_YAML_NODES nodes (counted, not built)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise yaml.YAMLError("an alias refers to a node that contains it (a recursive document)")
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        if total > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_NODES:,} nodes through its aliases "
                "(an alias bomb?): refused"
            )
        sizes[key] = total
        return total

    size(root)


def safe_load_bounded(text: str) -> Any:
    """`yaml.safe_load` with the alias and expansion bounds above; yaml.YAMLError when exceeded."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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
    cleanup_after: int = Field(86400, ge=1)  # a window's pane counter is kept this long after its end
    duration: int | None = Field(None, ge=1)  # stop after this long (also `--duration`); None: until Ctrl-C

    @field_validator("poll_interval", "window", "cleanup_after", "duration", mode="before")
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

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, name: str) -> str:
        return check_runner(name)

    @field_validator("output")
    @classmethod
    def _output_is_a_folder(cls, output: str) -> str:
        return check_output(output)

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
        check_feed_url(item)  # the feed lists' rule: its errors never show credentials
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


# Keys that once meant something: refused like any unknown key, but saying why and what to do.
REMOVED_KEYS = {
    "stream.expire_after": "removed: the streaming sink decides against the committed version index, "
    "which keeps every id; delete this key",
    "stream.dedupe_buckets": "removed: streaming de-duplication keeps no per-key state any more; "
    "delete this key",
}


FLAG_OF_KEY = {"inputs": "--input"}  # the command-line flag of an override, where not `--KEY`


def _format_errors(error: ValidationError, origin: str, from_flags: frozenset[str] = frozenset()) -> str:
    """One line per problem, naming the flag for a value given on the command line, else the file."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = REMOVED_KEYS.get(key, "unknown key")
        top = str(problem["loc"][0]) if problem["loc"] else ""
        if top in from_flags:
            lines.append(f"{FLAG_OF_KEY.get(top, f'--{top}')}: {message}")
        else:
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
            loaded = safe_load_bounded(text)
        except (yaml.YAMLError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ConfigError(f"{origin}: not valid YAML: {reason}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{origin}: the top level must be a mapping of keys to values")
        data = _paths_relative_to(loaded, Path(path).resolve().parent)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    data |= given
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, origin, frozenset(given))) from None
