"""One `Settings`, validated once: modes, overrides by flag, defaults in one home, no import circles.

Each command's needs (inputs for a run, http(s) feeds and a streaming runner for `stream`, gs://
paths for `launch`) are checked with the config, every problem on its own line; command-line
values are validated with the file and named by their flag; the frozen settings of the stages are
derived from `Settings` in one place; the feed list (OPML) is read once per run.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline.feeds
from pipeline.cli import main, raised_in_job
from pipeline.config import ConfigError, FetchConfig, LanguageConfig, ParquetConfig, Settings, load_settings
from pipeline.feeds import MAX_OPML_BYTES, FeedListError, canonical_feed_url, load_opml
from tests.conftest import PROJECT, SEEDS
from tests.feedserver import FeedServer, Reply
from transforms.feed_state import StatePolicy
from transforms.fetch import FetchSettings
from transforms.io.lock import CommitLockLost, CommitLockTimeout
from transforms.io.parquet import ParquetSettings
from transforms.language import LanguageSettings
from transforms.normalize import canonical_url

GOOD_FEED = SEEDS / "feeds" / "rss2_en.xml"


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def problems(path: Path | None, overrides: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, overrides, **kwargs)
    return str(caught.value).splitlines()


# --- modes -------------------------------------------------------------------------------------


def test_a_stream_config_gets_every_problem_at_once_each_naming_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"runner": "direct", "inputs": [str(GOOD_FEED)]})
    assert load_settings(path).runner == "direct"  # valid keys: a batch run could use them
    lines = problems(path, mode="stream")
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}: runner: 'direct' runs batch pipelines only")
    assert lines[1].startswith(f"{path}: inputs: the streaming job polls http(s) feeds")


def test_a_launch_needs_gs_paths_and_the_dataflow_runner(tmp_path: Path) -> None:
    path = write(tmp_path, {"inputs": [str(GOOD_FEED)], "output": str(tmp_path / "out")})
    lines = problems(path, mode="launch")
    assert [line.split(": ")[1] for line in lines] == ["runner", "output", "inputs"], lines
    assert "not a gs:// URL" in lines[1] and "cannot read local paths" in lines[2]


def test_a_run_without_inputs_fails_at_load_and_python_settings_are_checked_too(tmp_path: Path) -> None:
    assert problems(None, mode="batch") == [
        "defaults: inputs: no inputs; give --input or list them in the config"
    ]
    with pytest.raises(ConfigError, match="inputs: no inputs"):
        Settings(output=str(tmp_path)).check_mode("batch")
    assert Settings(inputs=[str(GOOD_FEED)]).check_mode("batch").inputs == [str(GOOD_FEED)]


# --- overrides are validated with the file, named by their flag ---------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"stream.duration": "often"}, "--duration: 'often' is not a duration"),
        ({"progress_interval": "0.5"}, "--progress-interval: '0.5': give at least 1s"),
        ({"opml": ["/nonexistent/list.opml"]}, "--opml: /nonexistent/list.opml: cannot read the OPML file"),
    ],
)
def test_a_bad_value_from_a_flag_is_named_by_the_flag(overrides: dict[str, Any], expected: str) -> None:
    lines = problems(None, overrides)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_an_override_from_python_is_named_as_one() -> None:
    assert problems(None, {"fetch.max_attempts": 0}) == [
        "overrides: fetch.max_attempts: Input should be greater than or equal to 1"
    ]


def test_a_nested_override_keeps_the_rest_of_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, {"state": {"backoff_base": "5m"}, "stream": {"window": "10m"}})
    settings = load_settings(path, {"state.force": True, "stream.duration": "90s"})
    assert (settings.state.force, settings.state.backoff_base) == (True, 300)
    assert (settings.stream.duration, settings.stream.window) == (90, 600)


def test_absolute_output_is_made_before_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, {"output": "out"}, absolute_output=True).output == str(tmp_path / "out")
    assert load_settings(None, {"output": "s3://b/out"}, absolute_output=True).output == "s3://b/out"


# --- defaults in one home; stage settings derived in one place ---------------------------------


@pytest.mark.parametrize(
    ("model", "stage", "renamed"),
    [
        (LanguageConfig, LanguageSettings, {}),
        (ParquetConfig, ParquetSettings, {}),
        (FetchConfig, FetchSettings, {}),
    ],
)
def test_the_config_models_take_their_defaults_from_the_stages(
    model: Any, stage: Any, renamed: dict[str, str]
) -> None:
    defaults = model().model_dump()
    for field in dataclasses.fields(stage):
        assert defaults[renamed.get(field.name, field.name)] == getattr(stage(), field.name), field.name


def test_the_stage_settings_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        output=str(tmp_path),
        fetch=FetchConfig(connect_timeout=2, max_entries_per_feed=7),
        state={"backoff_after": 4, "force": True},
        language={"n_trial": 5},
    )
    stages = settings.stages
    assert stages.read.fetch is stages.fetch and stages.fetch.connect_timeout == 2
    assert stages.read.max_entries_per_feed == 7 and stages.read.force
    assert stages.read.state_path == f"{tmp_path}/_state/feeds.parquet"
    assert stages.state_policy == dataclasses.replace(StatePolicy(), backoff_after=4)
    assert stages.language.n_trial == 5


def test_the_shipped_configs_repeat_only_the_defaults() -> None:
    """A value the shipped files show for the user to edit is the default, or the test says why not."""
    defaults = Settings().model_dump()
    for name in ("local.yaml", "streaming.yaml"):
        shipped = load_settings(PROJECT / "configs" / name).model_dump()
        for section in ("language", "parquet", "fetch", "state", "stream", "stories"):
            assert shipped[section] == defaults[section], (name, section)


# --- the feed list: read once, bounded -----------------------------------------------------------


def test_a_run_reads_its_opml_file_once(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feed_server.route("/feed", Reply(200, GOOD_FEED.read_bytes()))
    opml = tmp_path / "list.opml"
    opml.write_text(f'<opml version="2.0"><body><outline text="a" xmlUrl="{url}"/></body></opml>')
    reads: list[str] = []
    real = pipeline.feeds.load_opml

    def counted(path: str | Path) -> pipeline.feeds.FeedList:
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(pipeline.feeds, "load_opml", counted)
    config = write(tmp_path, {"output": str(tmp_path / "out"), "fetch": {"allow_private_hosts": True}})
    assert main(["run", "-q", "--config", str(config), "--opml", str(opml)]) == 0
    assert reads == [str(opml)]


def test_an_opml_file_past_the_cap_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.opml"
    big.write_bytes(b'<opml version="2.0"><body>' + b" " * MAX_OPML_BYTES + b"</body></opml>")
    with pytest.raises(FeedListError, match="larger than"):
        load_opml(big)


# --- one URL rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "feed", "article"),
    [
        ("HTTPS://News.Example.:443/a?b=1#top", "https://news.example/a?b=1", "https://news.example/a?b=1"),
        ("http://[::1]:8080/feed", "http://[::1]:8080/feed", "http://[::1]:8080/feed"),
        ("https://bob:pw@news.example", "https://news.example/", "https://news.example/"),
    ],
)
def test_feeds_and_articles_share_the_host_port_and_fragment_rule(url: str, feed: str, article: str) -> None:
    assert canonical_feed_url(url) == feed
    assert canonical_url(url) == article


# --- no import circles ---------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """The modules of ours a module imports anywhere (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("pipeline", "transforms")}


def test_no_module_of_ours_imports_itself_through_others() -> None:
    graph = {
        ".".join(path.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__"): _imports(path)
        for package in ("pipeline", "transforms")
        for path in (PROJECT / package).rglob("*.py")
    }
    circles = []

    def visit(module: str, trail: tuple[str, ...]) -> None:
        for imported in sorted(graph.get(module, ())):
            if imported in trail:
                circles.append((*trail[trail.index(imported) :], imported))
            elif imported not in done:
                visit(imported, (*trail, imported))
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, (module,))
    assert circles == []


# --- lock failures inside the job ---------------------------------------------------------------


def test_lock_failures_are_known_by_their_class_wherever_they_were_raised() -> None:
    assert raised_in_job(CommitLockTimeout("held"), (CommitLockTimeout,))
    wrapped = RuntimeError("the job failed")
    wrapped.__cause__ = CommitLockLost("taken over")
    assert raised_in_job(wrapped, (CommitLockTimeout, CommitLockLost))
    remote = RuntimeError(
        "Pipeline failed:\nTraceback ...\ntransforms.io.lock.CommitLockTimeout: held by b\n"
    )
    assert raised_in_job(remote, (CommitLockTimeout,))
    # A message that only mentions the name, or a class that is not one of them, is not a lock failure.
    assert not raised_in_job(RuntimeError("feed 'CommitLockTimeout news' failed"), (CommitLockTimeout,))
    assert not raised_in_job(RuntimeError("transforms.store.CommitLockLost: x"), (CommitLockTimeout,))


def test_a_failure_that_only_mentions_a_lock_is_no_lock_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pipeline.run

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("feed 'CommitLockTimeout news' failed")

    monkeypatch.setattr(pipeline.run, "run_batch", failing)
    assert main(["run", "--input", str(GOOD_FEED), "--output", str(tmp_path / "out")]) == 1
    assert "failed, nothing committed: RuntimeError" in capsys.readouterr().err
