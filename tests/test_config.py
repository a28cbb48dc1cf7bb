"""Configuration: bad configs fail before the pipeline starts, with one line naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, Settings, load_settings

PROJECT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsbeam.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


def test_the_shipped_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)  # its input `../seeds` is relative to the file, shown relative to the cwd
    settings = load_settings(PROJECT / "configs" / "local.yaml")
    assert settings.runner == "direct"
    assert settings.inputs == ["seeds"]
    assert settings.output == "output"
    assert settings.article_partition_keys == ("ingest_date", "language")
    assert settings.stages.language.n_trial == 3
    assert settings.stages.parquet.compression == "zstd"
    # the shipped file states every default the code has
    assert settings == Settings(inputs=["seeds"])


def test_no_file_gives_the_defaults() -> None:
    settings = load_settings(None)
    assert settings.inputs == []
    assert settings.partition_by == ["language"]


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, "# nothing here\n")) == Settings()


def test_overrides_win(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"inputs: ['{tmp_path}']\noutput: a\n")
    settings = load_settings(path, {"output": "b", "inputs": None})
    assert settings.output == "b"
    assert settings.inputs == [str(tmp_path)]


def test_an_unknown_nested_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "language:\n  n_trail: 3\n")
    assert config_error(path) == f"{path}: language.n_trail: unknown key"


def test_a_removed_streaming_key_is_refused_saying_why(tmp_path: Path) -> None:
    # stream.expire_after and stream.dedupe_buckets lost their meaning when the sink began to decide
    # against the version index: accepting them silently would be a setting that does nothing.
    path = write_config(tmp_path, "stream:\n  expire_after: 7d\n  dedupe_buckets: 64\n")
    lines = sorted(config_error(path).splitlines())
    assert [line.split(": ")[1] for line in lines] == ["stream.dedupe_buckets", "stream.expire_after"]
    assert all("removed:" in line and "delete this key" in line for line in lines)


def test_an_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "partition: [language]\n")
    assert config_error(path) == f"{path}: partition: unknown key"


def test_each_problem_gets_its_own_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "colour: red\nparquet:\n  row_group_size: 10\n")
    lines = sorted(config_error(path).splitlines())
    assert len(lines) == 2
    assert lines[0] == f"{path}: colour: unknown key"
    assert lines[1] == f"{path}: parquet.row_group_size: Input should be greater than or equal to 1000"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("language:\n  n_trial: many\n", "language.n_trial", "valid integer"),
        ("language:\n  sure_confidence: 2\n", "language.sure_confidence", "less than or equal to 1"),
        ("parquet:\n  compression: rar\n", "parquet.compression", "zstd"),
        ("fetch:\n  allow_private_hosts: perhaps\n", "fetch.allow_private_hosts", "valid boolean"),
        ("inputs: seeds\n", "inputs", "valid list"),
        ("language: fast\n", "language", "dictionary"),
    ],
)
def test_a_wrong_type(tmp_path: Path, text: str, key: str, words: str) -> None:
    message = config_error(write_config(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'newsbeam.yaml'}: {key}: ")
    assert words in message
    assert "\n" not in message


def test_a_bad_partition_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "partition_by: [colour]\n")
    assert config_error(path) == (
        f"{path}: partition_by: unknown partition key 'colour'; "
        "choose from language, source_domain, source_type"
    )


def test_ingest_date_in_partition_by(tmp_path: Path) -> None:
    path = write_config(tmp_path, "partition_by: [ingest_date, language]\n")
    message = config_error(path)
    assert message.startswith(f"{path}: partition_by: ")
    assert "`ingest_date` is always the first partition key" in message


def test_a_partition_key_twice(tmp_path: Path) -> None:
    path = write_config(tmp_path, "partition_by: [language, language]\n")
    assert config_error(path) == f"{path}: partition_by: a partition key is listed twice"


def test_a_missing_input_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    path = write_config(tmp_path, f"inputs: ['{missing}']\n")
    assert config_error(path) == f"{path}: inputs: input path '{missing}' does not exist"


def test_a_glob_matching_nothing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "feeds" / "*.xml")
    path = write_config(tmp_path, f"inputs: ['{pattern}']\n")
    assert config_error(path) == f"{path}: inputs: input pattern '{pattern}' matches no file"


def test_a_glob_that_matches(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text("<rss/>")
    pattern = str(tmp_path / "*.xml")
    assert load_settings(write_config(tmp_path, f"inputs: ['{pattern}']\n")).inputs == [pattern]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/feed.xml", "unsupported URL scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported URL scheme 'file'"),
        ("https:///no-host", "has no host"),
        ("", "an input is empty"),
    ],
)
def test_a_bad_input_url(tmp_path: Path, url: str, words: str) -> None:
    path = write_config(tmp_path, f"inputs: ['{url}']\n")
    message = config_error(path)
    assert message.startswith(f"{path}: inputs: ")
    assert words in message


def test_http_and_object_store_inputs_are_accepted_without_checking(tmp_path: Path) -> None:
    inputs = ["https://example.com/feed.xml", "gs://bucket/feeds/*.xml"]
    path = write_config(tmp_path, f"inputs: {inputs}\n")
    assert load_settings(path).inputs == inputs


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    assert config_error(path) == f"{path}: the top level must be a mapping of keys to values"


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write_config(tmp_path, "inputs: [seeds\n")
    assert config_error(path).startswith(f"{path}: not valid YAML: ")


def test_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert config_error(missing) == f"{missing}: cannot read the config file: No such file or directory"
    assert config_error(tmp_path).startswith(f"{tmp_path}: cannot read the config file: ")


def test_the_shipped_config_finds_the_seeds_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(PROJECT / "configs" / "local.yaml")
    assert settings.inputs == [str(PROJECT / "seeds")]  # relative to the config file, not to the cwd
    assert settings.output == "output"  # the output stays relative to where the user runs it


def test_config_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "feeds").mkdir(parents=True)
    (project / "feeds" / "a.xml").write_text("<rss/>", encoding="utf-8")
    (project / "list.opml").write_text("<opml><body/></opml>", encoding="utf-8")
    config = write_config(project, "inputs: [feeds/a.xml, 'https://example.com/rss']\nopml: [list.opml]\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(config, {"output": "elsewhere"})
    assert settings.inputs == ["project/feeds/a.xml", "https://example.com/rss"]  # shown relative to the cwd
    assert settings.opml == ["project/list.opml"]
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")  # outside the project: the resolved path in full
    assert load_settings(config).inputs == [str(project / "feeds" / "a.xml"), "https://example.com/rss"]


BILLION_LAUGHS = """\
runner: direct
beam_options:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_an_alias_bomb_fails_at_config_time_naming_the_file(tmp_path: Path) -> None:
    import time
    import tracemalloc

    path = write_config(tmp_path, BILLION_LAUGHS)  # 9**9 = 387 million strings once expanded
    tracemalloc.start()
    started = time.monotonic()
    try:
        message = config_error(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.startswith(f"{path}: not valid YAML: the document expands to more than 1,000,000 nodes")
    assert time.monotonic() - started < 5
    assert peak < 20 * 1024 * 1024  # counted, never built


def test_too_many_aliases_and_recursive_aliases_are_refused(tmp_path: Path) -> None:
    many = "beam_options:\n  a: &a 1\n  b: [" + ", ".join(["*a"] * 1001) + "]\n"
    assert "more than 1000 aliases" in config_error(write_config(tmp_path, many))
    recursive = "beam_options:\n  a: &a [1, *a]\n"
    assert "a recursive document" in config_error(write_config(tmp_path, recursive))


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    text = "fetch: &fetch\n  max_attempts: 2\nbeam_options:\n  labels: &l [a, b]\n  more: *l\n"
    settings = load_settings(write_config(tmp_path, text))
    assert settings.fetch.max_attempts == 2 and settings.beam_options == {
        "labels": ["a", "b"],
        "more": ["a", "b"],
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://bob:hunter2cret@/feed.xml",  # no host
        "https://bob:s3cr#et@news.example/feed.xml",  # '#' unescaped: the "port" is s3cr
        "https://bob:12#cret@news.example/feed.xml",  # parses as host bob, port 12
    ],
)
def test_a_bad_input_url_with_credentials_never_shows_them(tmp_path: Path, url: str) -> None:
    # Inputs follow the feed lists' URL rule (pipeline.feeds.check_feed_url), redaction included.
    path = write_config(tmp_path, f"inputs: ['{url}']\n")
    message = config_error(path)
    assert message.startswith(f"{path}: inputs: ")
    assert "cret" not in message and "bob" not in message and "***@" in message
