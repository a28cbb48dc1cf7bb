"""Feed lists: `feeds:` entries in the config and OPML files, with their duplicates and bad entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import ConfigError, load_settings
from pipeline.durations import parse_duration
from pipeline.feeds import (
    FeedListError,
    canonical_feed_url,
    check_feed_url,
    load_opml,
    unique_feeds,
)
from tests.conftest import sql
from tests.feedserver import FeedServer, Reply
from transforms.feed_state import FeedSource

OPML = Path(__file__).resolve().parent / "data" / "opml"


def test_nested_outlines_give_feeds_with_their_folder_as_category() -> None:
    loaded = load_opml(OPML / "nested.opml")
    by_url = {feed.url: feed for feed in loaded.feeds}
    assert list(by_url) == [
        "https://top.example/feed.xml",
        "https://world.example/rss",
        "https://monde.example/une.xml",
        "http://city.example/feed",
        "https://dev.example/atom.xml",
        "https://hint.example/feed",
    ]
    assert by_url["https://top.example/feed.xml"].category is None
    world = by_url["https://world.example/rss"]
    assert (world.name, world.category, world.language) == ("World Desk", "News/World", "en")
    monde = by_url["https://monde.example/une.xml"]  # lower-case `xmlurl` as some exporters write it
    assert (monde.language, monde.tags) == ("fr", ("politique", "monde"))
    assert by_url["http://city.example/feed"].category == "News/Local"  # `XMLURL` too
    assert by_url["https://hint.example/feed"].language is None  # a bad hint is dropped, the feed kept


def test_duplicates_and_bad_entries_are_reported_with_their_line() -> None:
    problems = load_opml(OPML / "nested.opml").problems
    assert len(problems) == 6
    text = "\n".join(problems)
    assert "line 21: outline 'No URL' has no xmlUrl" in text
    assert "line 22: 'javascript:alert(1)' is not an http(s) URL" in text
    assert "line 23: 'ftp://files.example/feed.xml' is not an http(s) URL" in text
    assert "line 24: 'http:///feed.xml' has no host" in text
    assert "line 15: duplicate of" in text and "HTTP://CITY.example:80/feed#latest" in text
    assert "line 20: duplicate of" in text and "line 10" in text
    assert all(p.startswith(str(OPML / "nested.opml")) for p in problems)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("not_opml.xml", "not an OPML file (the root element is <rss>)"),
        ("no_body.opml", "without <body>"),
        ("truncated.opml", "not well-formed XML"),
        ("missing.opml", "cannot read the OPML file"),
    ],
)
def test_a_file_that_is_no_opml_fails_naming_the_file(name: str, words: str) -> None:
    with pytest.raises(FeedListError) as caught:
        load_opml(OPML / name)
    assert str(caught.value).startswith(str(OPML / name)) and words in str(caught.value)


def test_external_entities_are_never_resolved() -> None:
    with pytest.raises(FeedListError) as caught:
        load_opml(OPML / "external_entity.opml")
    assert "root:" not in str(caught.value)


def test_canonical_form_and_first_listing_wins() -> None:
    assert canonical_feed_url("HTTP://News.Example:80/feed#top") == "http://news.example/feed"
    assert canonical_feed_url("https://news.example:8443") == "https://news.example:8443/"
    merged = unique_feeds(
        [
            ("config", FeedSource("https://a.example/feed", name="from config")),
            ("opml", FeedSource("https://A.example:443/feed", name="from opml")),
        ]
    )
    assert [f.name for f in merged.feeds] == ["from config"]
    assert merged.problems == [
        "opml: duplicate of config (https://a.example/feed): https://A.example:443/feed"
    ]


def test_durations() -> None:
    assert [parse_duration(v) for v in (900, "900", "15m", "2h", "1d", "30 s", 1.5)] == [
        900,
        900,
        900,
        7200,
        86400,
        30,
        1,
    ]
    for bad in ("soon", "-5m", "5 weeks"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_config_feeds_with_hints(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            {
                "feeds": [
                    {
                        "url": "https://a.example/feed",
                        "name": "A",
                        "language": "pt-BR",
                        "poll_interval": "15m",
                    },
                    {"url": "https://b.example/feed", "category": "Tech", "tags": ["python", "beam"]},
                ],
                "opml": [str(OPML / "flat.opml")],
            },
        )
    )
    feeds = settings.feed_list
    assert [f.url for f in feeds.feeds] == [
        "https://a.example/feed",
        "https://b.example/feed",
        "https://one.example/feed",
        "https://two.example/feed",
    ]
    assert (feeds.feeds[0].language, feeds.feeds[0].poll_interval) == ("pt", 900)
    assert feeds.feeds[1].tags == ("python", "beam")
    assert feeds.problems == []


@pytest.mark.parametrize(
    ("entry", "key", "words"),
    [
        ({"url": "https://a.example/feed", "colour": "red"}, "feeds.0.colour", "unknown key"),
        ({"url": "ftp://a.example/feed"}, "feeds.0.url", "is not an http(s) URL"),
        ({"url": "https:///feed"}, "feeds.0.url", "has no host"),
        ({"url": "http://a.example:99999/"}, "feeds.0.url", "not a valid URL"),
        ({"name": "no url"}, "feeds.0.url", "Field required"),
        (
            {"url": "https://a.example/feed", "language": "english!"},
            "feeds.0.language",
            "not a language code",
        ),
        (
            {"url": "https://a.example/feed", "poll_interval": "often"},
            "feeds.0.poll_interval",
            "not a duration",
        ),
    ],
)
def test_bad_feed_entries_fail_naming_the_key(
    tmp_path: Path, entry: dict[str, object], key: str, words: str
) -> None:
    path = write(tmp_path, {"feeds": [entry]})
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ") and words in message, message


def test_state_settings_take_durations(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"state": {"backoff_base": "5m", "max_fresh": "2h"}}))
    policy = settings.stages.state_policy
    assert (policy.backoff_base_seconds, policy.max_fresh_seconds) == (300, 7200)
    with pytest.raises(ConfigError, match=r"state\.backof: unknown key"):
        load_settings(write(tmp_path, {"state": {"backof": 5}}))


RSS = (
    '<?xml version="1.0"?><rss version="2.0"><channel>{title}<link>http://n.example/</link>'
    "<item><title>{name} reports a new bridge over the river opened by the mayor this morning</title>"
    "<link>http://n.example/{name}/1</link><description>The new bridge connects the old town with the "
    "station and shortens the way to work for thousands of people.</description></item></channel></rss>"
)


@pytest.mark.e2e
def test_run_with_opml_fetches_each_feed_once_and_reports_bad_entries(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = feed_server.route("/one", Reply(200, RSS.format(title="<title>One</title>", name="one").encode()))
    untitled = feed_server.route("/two", Reply(200, RSS.format(title="", name="two").encode()))
    opml = tmp_path / "subscriptions.opml"
    opml.write_text(
        f"""<?xml version="1.0"?><opml version="2.0"><body>
        <outline text="Folder">
          <outline text="One" xmlUrl="{one}"/>
          <outline text="Two, named here" xmlUrl="{untitled}" language="de"/>
        </outline>
        <outline text="One again" xmlUrl="{one.replace("http://", "HTTP://")}#again"/>
        <outline text="Gopher" xmlUrl="gopher://old.example/feed"/>
        </body></opml>""",
        encoding="utf-8",
    )
    config = {
        "runner": "direct",
        "output": str(tmp_path / "out"),
        "inputs": [],
        "fetch": {"allow_private_hosts": True},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", "--config", str(tmp_path / "c.yaml"), "--opml", str(opml), "--run-id", "opml"]) == 0
    stderr = capsys.readouterr().err
    assert "duplicate of" in stderr and "'gopher://old.example/feed' is not an http(s) URL" in stderr

    files = [str(p) for p in (tmp_path / "out" / "feed_fetches").glob("**/*.parquet")]
    fetched = sql(f"SELECT source, outcome FROM read_parquet({files!r}) ORDER BY source").fetchall()
    assert fetched == [(one, "ok"), (untitled, "ok")]
    assert [r.path for r in feed_server.requests].count("/one") == 1
    articles = [str(p) for p in (tmp_path / "out" / "articles").glob("**/*.parquet")]
    titles = dict(
        sql(f"SELECT source, feed_title FROM read_parquet({articles!r}, hive_partitioning = true)").fetchall()
    )
    assert titles == {one: "One", untitled: "Two, named here"}  # the OPML name where the feed has none


def test_a_missing_opml_file_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out")}), encoding="utf-8")
    assert main(["run", "--config", str(config), "--opml", str(tmp_path / "nope.opml")]) == 2
    assert "nope.opml: cannot read the OPML file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url",
    [
        "https://bob:s3cr#et@news.example/feed",  # '#' ends the authority: "port" s3cr
        "https://bob:s3?cret@news.example/feed",
        "https://bob:se/cret@news.example/feed",
        "https://bob:pa ss@news.example/feed",
        "https://bob:12#cret@news.example/feed",  # parses: host bob, port 12, fragment "cret@..."
        "https://bob:12?cret@news.example/feed",
    ],
)
def test_a_password_with_an_unescaped_delimiter_is_refused_without_showing_it(
    url: str, tmp_path: Path
) -> None:
    # A password holding '#', '?', '/' or a space unescaped breaks the URL's authority where
    # redact_url cannot see a userinfo: the error must still not quote the password.
    with pytest.raises(ValueError) as raised:
        check_feed_url(url)
    message = str(raised.value)
    assert "cret" not in message and "pa ss" not in message and "bob" not in message
    assert "news.example" in message
    opml = tmp_path / "feeds.opml"
    escaped = url.replace("&", "&amp;").replace('"', "&quot;")
    opml.write_text(f'<opml version="2.0"><body><outline xmlUrl="{escaped}"/></body></opml>')
    listed = load_opml(opml)
    assert listed.feeds == []
    assert len(listed.problems) == 1 and "cret" not in listed.problems[0]


def test_credentials_encoded_as_they_should_be_still_pass() -> None:
    url = "https://bob:s3cr%23et%2F%3F%40@news.example/feed?x=1#top"
    assert check_feed_url(url) == url
    assert check_feed_url("https://medium.com/@someone/feed") == "https://medium.com/@someone/feed"
    assert check_feed_url("https://news.example/feed?contact=a@b.example") == (
        "https://news.example/feed?contact=a@b.example"
    )
