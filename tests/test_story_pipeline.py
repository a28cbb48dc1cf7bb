"""Near-duplicate stories through the pipelines: assigned at the commit against the durable index.

Feeds of two outlets are served by a real local HTTP server; the runs are real `run_batch` runs (and
the CLI in worker processes, and a killed commit), and what they committed is read back with DuckDB:
the `stories` dataset joined to `articles`, and the index under `OUTPUT/_state/stories/`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from pipeline import Settings, run_batch
from tests import story_texts
from tests.conftest import PROJECT
from tests.feedserver import FeedServer, Reply
from transforms.io.parquet import read_table_file
from transforms.io.story_index import MAX_DELTAS, StorySettings, index_files

pytestmark = pytest.mark.e2e

RSS = {"Content-Type": "application/rss+xml"}
WIRE, BRIDGE, FOOTER, AT = story_texts.WIRE, story_texts.OTHER, story_texts.FOOTER, story_texts.AT


def rss(outlet: str, *items: tuple[str, str, list[str], float]) -> bytes:
    """An RSS feed of (slug, title, paragraphs, hours after AT) items linking to `http://<outlet>/<slug>`."""
    body = "".join(
        f"<item><title>{title}</title><link>http://{outlet}/{slug}</link><guid>http://{outlet}/{slug}</guid>"
        f"<pubDate>{format_datetime(AT + timedelta(hours=hours))}</pubDate>"
        f"<description>{' '.join(paragraphs)}</description></item>"
        for slug, title, paragraphs, hours in items
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{outlet}</title>'
        f"<link>http://{outlet}/</link><language>en</language>{body}</channel></rss>"
    ).encode()


ORIGINAL = ("rates", "Central bank raises rates again", WIRE, 0.0)
COPY = (
    "economy/rates-up",
    "Rates rise again as central bank acts",
    ["By Anna Berg", *WIRE[:2], *WIRE[3:], FOOTER],
    3.0,
)
FOOTBRIDGE_A = ("bridge", "Footbridge opens downtown", [*BRIDGE, FOOTER], 1.0)
FOOTBRIDGE_B = (
    "city/bridge",
    "New bridge links harbour and station",
    ["By Tom Hale", *BRIDGE[:3], FOOTER],
    2.0,
)
RATES_WITH_FOOTER = ("money/rates", "Central bank raises rates once more", [*WIRE[:3], FOOTER], 4.0)


def settings(feeds: list[str], output: Path, **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "inputs": feeds,
            "output": str(output),
            "fetch": {"allow_private_hosts": True},
            "fulltext": {"mode": "off"},
            "state": {"enabled": False},
            **extra,
        }
    )


def stories(output: Path) -> dict[str, dict[str, Any]]:
    """url -> its stories row (and the story's first article's url), read with DuckDB."""
    if not (output / "stories").exists():
        return {}
    query = f"""
        SELECT a.url, s.*, first.url AS story_url
        FROM read_parquet('{output}/stories/**/*.parquet', hive_partitioning = true) s
        JOIN (SELECT DISTINCT article_id, url FROM read_parquet('{output}/articles/**/*.parquet',
              hive_partitioning = true, union_by_name = true)) a USING (article_id)
        JOIN (SELECT DISTINCT article_id, url FROM read_parquet('{output}/articles/**/*.parquet',
              hive_partitioning = true, union_by_name = true)) first ON first.article_id = s.story_id
    """
    with duckdb.connect() as connection:
        relation = connection.sql(query)
        names = relation.columns
        rows = [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
    by_url = {row["url"]: row for row in rows}
    assert len(by_url) == len(rows), "an article has two stories rows"
    return by_url


def story_of(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        url.removeprefix("http://"): row["story_url"].removeprefix("http://") for url, row in found.items()
    }


def serve(server: FeedServer, path: str, outlet: str, *items: tuple[str, str, list[str], float]) -> str:
    return server.route(path, Reply(200, rss(outlet, *items), RSS))


def test_copies_split_across_two_runs_get_one_story_and_a_rerun_changes_nothing(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    first = serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A)
    second = serve(feed_server, "/b.xml", "b.test", COPY, RATES_WITH_FOOTER)
    run_batch(settings([first], output))
    after_first = stories(output)
    assert story_of(after_first) == {"a.test/rates": "a.test/rates", "a.test/bridge": "a.test/bridge"}
    run_batch(settings([second], output))
    found = stories(output)
    assert story_of(found) == {
        "a.test/rates": "a.test/rates",
        "a.test/bridge": "a.test/bridge",
        "b.test/economy/rates-up": "a.test/rates",  # the edited copy, a run later
        "b.test/money/rates": "a.test/rates",  # the same footer as the bridge story: joined by its text only
    }
    copy = found["http://b.test/economy/rates-up"]
    assert copy["near_duplicate_of"] == found["http://a.test/rates"]["article_id"]
    assert 0.5 <= copy["story_similarity"] <= 1.0
    assert copy["source_domain"] == "b.test" and copy["published_at"] == AT + timedelta(hours=3)
    assert found["http://a.test/rates"]["near_duplicate_of"] is None
    # A rerun of the same inputs: nothing new is stored, no story changes and no row is added.
    index_before = sorted(index_files(str(output)))
    run_batch(settings([first, second], output))
    assert stories(output) == found
    assert sorted(index_files(str(output))) == index_before


def test_unrelated_articles_with_the_same_boilerplate_footer_are_not_joined(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    feed = serve(feed_server, "/a.xml", "a.test", RATES_WITH_FOOTER, FOOTBRIDGE_A, FOOTBRIDGE_B)
    run_batch(settings([feed], output))
    assert story_of(stories(output)) == {
        "a.test/money/rates": "a.test/money/rates",
        "a.test/bridge": "a.test/bridge",
        "a.test/city/bridge": "a.test/bridge",
    }


def test_no_stories_for_a_run_with_stories_off(feed_server: FeedServer, tmp_path: Path) -> None:
    output = tmp_path / "out"
    feed = serve(feed_server, "/a.xml", "a.test", ORIGINAL, COPY)
    run_batch(settings([feed], output, stories={"enabled": False}))
    assert not (output / "stories").exists() and index_files(str(output)) == []
    run_batch(settings([feed], output, stories={"threshold": 1.0}, state={"enabled": False}))
    assert stories(output) == {}  # nothing new stored: no article gets a row later


def test_the_window_bounds_how_far_back_a_copy_joins(feed_server: FeedServer, tmp_path: Path) -> None:
    output = tmp_path / "out"
    late = ("late/rates", "Central bank raises rates again", WIRE[1:], 24 * 3)
    feed = serve(feed_server, "/a.xml", "a.test", ORIGINAL, late)
    run_batch(settings([feed], output, stories={"window": "2d"}))
    assert story_of(stories(output)) == {
        "a.test/rates": "a.test/rates",
        "a.test/late/rates": "a.test/late/rates",
    }


# --- worker processes, concurrent runs and crashes: the CLI in processes of its own ----------------


def write_config(tmp_path: Path, feeds: list[str], output: Path) -> Path:
    config = {
        "inputs": feeds,
        "output": str(output),
        "fetch": {"allow_private_hosts": True},
        "fulltext": {"mode": "off"},
        "state": {"enabled": False},
    }
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_cli(config: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "-q", "--config", str(config), *extra],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT), **(env or {})},
        start_new_session=True,  # its own process group: a kill reaches its workers too
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish_cli(process: subprocess.Popen[bytes]) -> None:
    out = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, out[-4000:]


def test_copies_read_by_two_worker_processes_in_one_run_get_one_story(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    feeds = [
        serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A),
        serve(feed_server, "/b.xml", "b.test", COPY, FOOTBRIDGE_B),
    ]
    workers = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    finish_cli(start_cli(write_config(tmp_path, feeds, output), *workers))
    assert story_of(stories(output)) == {
        "a.test/rates": "a.test/rates",
        "b.test/economy/rates-up": "a.test/rates",
        "a.test/bridge": "a.test/bridge",
        "b.test/city/bridge": "a.test/bridge",
    }


def test_two_concurrent_runs_into_one_output_see_each_others_stories(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    one = start_cli(write_config(tmp_path, [serve(feed_server, "/a.xml", "a.test", ORIGINAL)], output))
    two = start_cli(write_config(tmp_path, [serve(feed_server, "/b.xml", "b.test", COPY)], output))
    finish_cli(one)
    finish_cli(two)
    found = stories(output)
    # Whichever committed first started the story ("earlier" is commit order); the other joined it.
    assert len(found) == 2 and len({row["story_id"] for row in found.values()}) == 1
    firsts = [row for row in found.values() if row["near_duplicate_of"] is None]
    assert len(firsts) == 1 and firsts[0]["story_id"] == firsts[0]["article_id"]
    assert len({row["run_id"] for row in found.values()}) == 2


def story_rows(output: Path) -> list[tuple[Any, ...]]:
    return sorted(
        (row["url"], row["story_url"], row["near_duplicate_of"], row["story_similarity"], row["run_id"])
        for row in stories(output).values()
    )


def index_state(output: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(Path(p).relative_to(output)), Path(p).stat().st_size) for p in index_files(str(output))
    )


@pytest.mark.parametrize("point", ["commit.locked", "commit.manifest_written"])
def test_a_crash_in_the_commit_leaves_the_stories_as_before_and_the_next_run_gives_the_same_answer(
    feed_server: FeedServer, tmp_path: Path, point: str
) -> None:
    base = tmp_path / "base"
    first = serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A)
    second = serve(feed_server, "/b.xml", "b.test", COPY, FOOTBRIDGE_B, RATES_WITH_FOOTER)
    run_batch(settings([first], base))
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    run_batch(settings([second], reference), run_id="B")
    expected = story_rows(reference)
    assert len(expected) == 5 and len({row[1] for row in expected}) == 2

    output = tmp_path / "out"
    shutil.copytree(base, output)
    before, index_before = story_rows(output), index_state(output)
    marker = tmp_path / "paused"
    env = {"NEWSBEAM_PAUSE_AT": point, "NEWSBEAM_PAUSE_MARKER": str(marker)}
    process = start_cli(write_config(tmp_path, [second], output), "--run-id", "B", env=env)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the fault point"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert story_rows(output) == before and index_state(output) == index_before
    run_batch(settings([second], output), run_id="B")  # rolls the decided commit forward, or redoes it
    assert story_rows(output) == expected


# --- compact and prune keep the index in step ------------------------------------------------------


def test_compact_merges_each_buckets_deltas_and_prune_drops_what_the_window_left_behind(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    from pipeline.maintenance import compact, prune

    output = tmp_path / "out"
    first = serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A)
    second = serve(feed_server, "/b.xml", "b.test", FOOTBRIDGE_B)
    run_batch(settings([first], output))
    run_batch(settings([second], output))
    found = stories(output)
    deltas = index_files(str(output))
    assert len(deltas) > len({Path(p).parent for p in deltas})  # some bucket has two deltas
    compact(str(output), grace=timedelta(0))
    merged = index_files(str(output))
    assert len(merged) == len({Path(p).parent for p in merged}) == len({Path(p).parent for p in deltas})
    for path in merged:  # one file per bucket, sorted by key: the lookup's binary search rests on it
        keys = read_table_file(path).column("band" if "/bands/" in path else "article_key").to_pylist()
        assert keys == sorted(keys) and (len(keys) > 1 or "/prints/" in path)
    assert stories(output) == found
    # The merged index still finds the story: a copy a run later joins it.
    run_batch(settings([serve(feed_server, "/c.xml", "c.test", COPY)], output))
    assert story_of(stories(output))["c.test/economy/rates-up"] == "a.test/rates"
    # Every article here was published in November 2026, more than a 7-day window ago: prune drops
    # them from the index (not from the datasets, which --older-than keeps), so a late copy of one
    # starts a story of its own.
    prune(str(output), timedelta(days=3650), grace=timedelta(0), story_window=timedelta(days=7))
    assert index_files(str(output)) == []
    assert len(stories(output)) == 4
    late = ("late/rates", "Central bank raises rates again", WIRE, 1.0)
    run_batch(settings([serve(feed_server, "/d.xml", "d.test", late)], output))
    assert story_of(stories(output))["d.test/late/rates"] == "d.test/late/rates"


def test_a_commit_past_the_bound_merges_a_buckets_deltas_in_its_own_manifest(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    from transforms.io.versions import check_index

    output = tmp_path / "out"
    for n in range(MAX_DELTAS + 1):  # the same wire copy from 9 outlets, one run each
        item = (f"rates-{n}", f"Central bank raises rates, take {n}", WIRE, float(n))
        run_batch(settings([serve(feed_server, f"/{n}.xml", f"o{n}.test", item)], output))
    bands = [p for p in index_files(str(output)) if "/bands/" in p]
    per_bucket = Counter(Path(p).parent for p in bands)
    assert max(per_bucket.values()) <= MAX_DELTAS and min(per_bucket.values()) == 1
    assert sum(read_table_file(p).num_rows for p in bands) == (MAX_DELTAS + 1) * 58  # no row lost
    for path in bands:
        keys = read_table_file(path)["band"].to_pylist()
        assert keys == sorted(keys)
    assert set(story_of(stories(output)).values()) == {"o0.test/rates-0"}
    check_index(str(output))  # the manifests agree with the deltas: the merged ones were retired
    assert list((output / "_trash").rglob("*.arrow"))
    late = ("late", "Rates rise again as central bank acts", COPY[2], 9.0)
    run_batch(settings([serve(feed_server, "/late.xml", "late.test", late)], output))
    assert story_of(stories(output))["late.test/late"] == "o0.test/rates-0"


# --- check and repair ------------------------------------------------------------------------------


def index_rows(output: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The story index's band rows and prints (without `indexed_at`, the time of the filing)."""
    bands: list[tuple[Any, ...]] = []
    prints: list[tuple[Any, ...]] = []
    for path in index_files(str(output)):
        table = read_table_file(path)
        if "/bands/" in path:
            bands += zip(table["band"].to_pylist(), table["article_key"].to_pylist(), strict=True)
        else:
            prints += [tuple(v for k, v in row.items() if k != "indexed_at") for row in table.to_pylist()]
    return sorted(bands), sorted(prints)


def test_a_lost_story_delta_stops_the_next_run_and_repair_rebuilds_the_same_index(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    output = tmp_path / "out"
    first = serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A)
    run_batch(settings([first], output))
    before, found = index_rows(output), stories(output)
    lost = Path(sorted(p for p in index_files(str(output)) if "/bands/" in p)[0])
    lost.unlink()  # its band keys would no longer find their articles: copies would start new stories
    capsys.readouterr()
    config = write_config(tmp_path, [serve(feed_server, "/b.xml", "b.test", COPY)], output)
    assert main(["run", "-q", "--config", str(config)]) == 3
    error = capsys.readouterr().err
    assert f"{lost} is missing" in error and f"newsbeam repair {output}" in error
    assert "_runs/" in error  # the manifest that published it
    assert stories(output) == found  # nothing stored

    assert main(["repair", "--output", str(output)]) == 0
    said = capsys.readouterr().out
    assert f"{lost} is missing" in said and "the story index rebuilt" in said and "2 articles" in said
    assert index_rows(output) == before  # the same band rows and prints, from the stories and articles
    assert main(["run", "-q", "--config", str(config)]) == 0
    assert story_of(stories(output))["b.test/economy/rates-up"] == "a.test/rates"
    assert main(["repair", "--output", str(output)]) == 0
    assert "is whole; nothing to do" in capsys.readouterr().out


def test_repair_files_the_same_members_of_a_large_story_as_the_commits_did(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A story past `MAX_FILED_MEMBERS` is filed under bands only in part; the rebuild replays which
    part in commit order (two runs, the second's posts published before the first's)."""
    from pipeline.cli import main
    from transforms.stories import MAX_FILED_MEMBERS

    def posts(numbers: range, hours: float) -> list[tuple[str, str, list[str], float]]:
        return [(f"p{n}", *story_texts.templated_post(n), hours + n / 100) for n in numbers]

    output = tmp_path / "out"
    count = MAX_FILED_MEMBERS + 8
    run_batch(settings([serve(feed_server, "/a.xml", "a.test", *posts(range(count), 10.0))], output))
    run_batch(
        settings([serve(feed_server, "/b.xml", "b.test", *posts(range(count, 2 * count), 0.0))], output)
    )
    before, found = index_rows(output), stories(output)
    assert len(set(story_of(found).values())) == 1 and len(found) == 2 * count
    owners = {key for _band, key in before[0]}
    assert MAX_FILED_MEMBERS <= len(owners) < 2 * count == len(before[1])
    next(Path(p) for p in index_files(str(output)) if "/bands/" in p).unlink()
    capsys.readouterr()
    assert main(["repair", "--output", str(output)]) == 0
    assert "the story index rebuilt" in capsys.readouterr().out
    assert index_rows(output) == before


@pytest.mark.parametrize("kind", ["prints", "bands"])  # a Parquet delta, an Arrow one
def test_an_unreadable_story_delta_is_named_and_repair_replaces_it(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    from pipeline.cli import main

    output = tmp_path / "out"
    run_batch(settings([serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A)], output))
    before = index_rows(output)
    broken = Path(sorted(p for p in index_files(str(output)) if f"/{kind}/" in p)[0])
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    capsys.readouterr()
    assert main(["compact", "--output", str(output)]) == 3
    error = capsys.readouterr().err
    assert f"{broken} is unreadable" in error and f"newsbeam repair {output}" in error
    assert main(["repair", "--output", str(output)]) == 0
    assert index_rows(output) == before


# --- streaming: the pane commits decide, against the same index ---------------------------------------


def test_streamed_copies_served_in_two_polls_get_one_story(tmp_path: Path) -> None:
    from tests.test_stream_e2e import finish, start_stream

    output = tmp_path / "out"
    with FeedServer() as server:
        first = rss("a.test", ORIGINAL, FOOTBRIDGE_A)
        later = rss("a.test", ORIGINAL, FOOTBRIDGE_A, COPY)  # the copy from the third poll on
        feed = server.route("/a.xml", Reply(200, first, RSS), Reply(200, first, RSS), Reply(200, later, RSS))
        config = {
            "runner": "prism",
            "output": str(output),
            "feeds": [{"url": feed}],
            "stream": {"poll_interval": 2, "window": 2},
            "fetch": {"allow_private_hosts": True, "max_attempts": 1, "total_timeout": 10},
            "fulltext": {"mode": "off"},
            "beam_options": {"environment_type": "LOOPBACK"},
        }
        path = tmp_path / "streaming.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        finish(start_stream(path, "--duration", "30"))
        assert len(server.hits("/a.xml")) >= 3
    found = stories(output)
    assert story_of(found) == {
        "a.test/rates": "a.test/rates",
        "a.test/bridge": "a.test/bridge",
        "a.test/economy/rates-up": "a.test/rates",
    }
    with duckdb.connect() as connection:
        files = connection.sql(
            f"SELECT url, filename FROM read_parquet('{output}/articles/**/*.parquet', filename = true)"
        ).fetchall()
    by_url = dict(files)
    assert by_url["http://a.test/rates"] != by_url["http://a.test/economy/rates-up"]  # two panes
    assert index_files(str(output)) and not list((output / "_runs").rglob("*.json.tmp"))


# --- what the reports show ---------------------------------------------------------------------------


def test_the_run_report_show_and_the_html_report_show_stories_against_articles(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    output = tmp_path / "out"
    feeds = [
        serve(feed_server, "/a.xml", "a.test", ORIGINAL, FOOTBRIDGE_A),
        serve(feed_server, "/b.xml", "b.test", COPY, FOOTBRIDGE_B, RATES_WITH_FOOTER),
    ]
    result = run_batch(settings(feeds, output))
    assert "  stories:           5 new articles: 3 joined an earlier story, 2 began one" in result.report
    assert main(["show", str(output)]) == 0
    shown = capsys.readouterr().out
    assert "  stories: 5 rows in 1 files" in shown
    assert "  stories: 2 for 5 articles; 2 told by 2 or more (3 articles joined an earlier one)" in shown
    assert "    3 articles, 2 outlets: Central bank raises rates again\n        a.test, b.test" in shown
    assert "    2 articles, 2 outlets: Footbridge opens downtown" in shown
    page = tmp_path / "report.html"
    assert main(["report", str(output), "--html", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert "5 articles in 2 stories: 2 stories told by two or more articles, which 3" in html
    largest = html.split('id="largest-stories"', 1)[1].split("</table>", 1)[0]
    assert largest.index("Central bank raises rates again") < largest.index("Footbridge opens downtown")
    assert "<td>a.test, b.test</td>" in largest


# --- configuration ---------------------------------------------------------------------------------


def test_bad_stories_settings_fail_at_start_naming_the_key(tmp_path: Path) -> None:
    from pipeline.config import ConfigError, load_settings

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"stories": {"threshold": 1.5, "window": "soon"}}), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    lines = str(error.value).splitlines()
    assert any(line.startswith(f"{config}: stories.threshold: ") for line in lines), lines
    assert any(line.startswith(f"{config}: stories.window: 'soon' is not a duration") for line in lines), (
        lines
    )
    settings = load_settings(None, {"stories.enabled": False, "stories.window": "2d"})
    assert settings.stages.stories == StorySettings(False, settings.stories.threshold, 2 * 86_400)


def test_no_stories_on_the_command_line_switches_the_stage_off(tmp_path: Path) -> None:
    from pipeline.cli import main

    feed = tmp_path / "feed.xml"
    feed.write_bytes(rss("a.test", ORIGINAL, COPY))
    assert main(["run", "-q", "--input", str(feed), "--output", str(tmp_path / "off"), "--no-stories"]) == 0
    assert not (tmp_path / "off" / "stories").exists()
    assert main(["run", "-q", "--input", str(feed), "--output", str(tmp_path / "on"), "--stories"]) == 0
    assert story_of(stories(tmp_path / "on")) == {
        "a.test/rates": "a.test/rates",
        "a.test/economy/rates-up": "a.test/rates",
    }
