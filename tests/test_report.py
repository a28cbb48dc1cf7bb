"""`newsbeam report`, `newsbeam show` and the OPML export, on a real output (tests/report_data.py).

The output comes from two real batch runs against feeds served on 127.0.0.1; every number the
commands print is checked against the Parquet files read back independently with pyarrow. The
page is also rendered by headless Chromium (tests/browser.py) and checked as a person sees it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from lxml import etree
from lxml import html as lxml_html

from pipeline.cli import main
from pipeline.datasets import committed_files, manifests
from pipeline.feeds import load_opml
from tests.browser import Browser, find_chromium
from tests.conftest import require
from tests.feedserver import FeedServer
from tests.report_data import ReportOutput, build

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportOutput]:
    with FeedServer() as server:
        yield build(tmp_path_factory.mktemp("report"), server)


@pytest.fixture(scope="module")
def page(data: ReportOutput) -> Path:
    assert main(["report", str(data.output)]) == 0
    return data.output / "report.html"


def arrow_rows(output: Path, dataset: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        ds.dataset(output / dataset, format="parquet", partitioning="hive").to_table().to_pylist()
    )
    return rows


def latest_articles(output: Path) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in arrow_rows(output, "articles"):
        known = latest.get(row["article_id"])
        if known is None or (row["version"] or 1) > (known["version"] or 1):
            latest[row["article_id"]] = row
    return list(latest.values())


def table_rows(document: Any, table_id: str) -> list[list[str]]:
    return [
        [" ".join(cell.text_content().split()) for cell in row.xpath("./td")]
        for row in document.xpath(f'//table[@id="{table_id}"]/tbody/tr')
    ]


def number(text: str) -> int:
    return int(text.replace(",", ""))


# --- the page ------------------------------------------------------------------------------------


def test_feed_health_lists_failing_then_stale_feeds_before_healthy_ones(
    data: ReportOutput, page: Path
) -> None:
    rows = table_rows(lxml_html.fromstring(page.read_bytes()), "feed-health")
    statuses = [row[0] for row in rows]
    sources = [row[1] for row in rows]
    assert statuses == ["failing", "failing", "stale", "ok"]
    assert data.silent in sources[2] and data.steady in sources[3]
    assert all(any(s in cell for cell in sources[:2]) for s in (data.broken, data.garbage))
    stale_reason = rows[2][7]
    assert re.search(
        r"no new entry for 12\.0 days, more than 3 x its median gap \(1\.00 days\)", stale_reason
    )
    broken_row = next(row for row in rows if data.broken in row[1])
    assert broken_row[2:4] == ["error", "2"]  # last outcome, failing for two fetches (both runs)


def test_article_counts_per_language_and_day_match_the_files(data: ReportOutput, page: Path) -> None:
    document = lxml_html.fromstring(page.read_bytes())
    articles = latest_articles(data.output)
    per_language = Counter(row["language"] for row in articles)
    shown = {language: number(n) for language, n in table_rows(document, "articles-per-language")}
    assert shown == per_language and sum(shown.values()) == 22
    per_day = Counter(
        (row["published_at"] or row["ingested_at"]).astimezone(UTC).strftime("%Y-%m-%d") for row in articles
    )
    assert {day: number(n) for day, n in table_rows(document, "articles-per-day")} == per_day
    words = sorted(row["word_count"] for row in articles)
    median = (words[10] + words[11]) / 2
    assert f"Median {median:.0f} words" in " ".join(
        document.xpath('//p[@id="text-length"]')[0].text_content().split()
    )


def test_dead_letters_by_reason_and_latest_runs_match_the_files(data: ReportOutput, page: Path) -> None:
    document = lxml_html.fromstring(page.read_bytes())
    dead = Counter((row["stage"], row["error_type"]) for row in arrow_rows(data.output, "dead_letters"))
    shown = {(stage, reason): number(n) for stage, reason, n, *_ in table_rows(document, "dead-letters")}
    assert shown == dead == {("read", "http_500"): 2, ("parse", "malformed_feed"): 2}
    runs = table_rows(document, "latest-runs")
    assert [run[0] for run in runs] == list(reversed(data.run_ids))  # newest first
    written = Counter(row["run_id"] for row in arrow_rows(data.output, "articles"))
    for run in runs:
        assert (run[1], number(run[4]), number(run[5])) == ("run", 4, 2)
        assert number(run[6]) == written.get(run[0], 0)
        assert run[8] == "2 of 4 inputs failed"


def test_the_page_needs_no_network(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    document = lxml_html.fromstring(text.encode())
    assert not document.xpath("//script | //link | //iframe | //img[not(starts-with(@src, 'data:'))]")
    references = [
        value
        for element in document.iter()
        if isinstance(element.tag, str)
        for name, value in element.attrib.items()
        if name in ("src", "href") or name.endswith("}href")
    ]
    assert references == []
    assert "@import" not in text and "url(" not in text
    assert len(document.xpath("//svg")) >= 4  # the charts are inline SVG


def test_the_page_in_a_browser_shows_the_stale_feed_before_the_healthy_one(
    data: ReportOutput, page: Path
) -> None:
    binary = find_chromium()
    require(binary is not None, "Chromium is not installed (make test installs it: apt-get install chromium)")
    assert binary is not None
    with Browser(binary) as browser:
        browser.open(page.as_uri())
        visible = browser.evaluate(
            "[...document.querySelectorAll('#feed-health tbody tr')]"
            ".filter(tr => tr.checkVisibility()).map(tr => [...tr.cells].map(td => td.innerText))"
        )
        cards = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('.card')]"
            ".map(c => [c.innerText.split('\\n')[1], c.innerText.split('\\n')[0]]))"
        )
        languages = browser.evaluate(
            "[...document.querySelectorAll('#articles-per-language tbody tr')]"
            ".map(tr => tr.innerText.split('\\t'))"
        )
        browser.evaluate("document.querySelector('details summary').click()")  # as a reader opens it
        days = browser.evaluate(
            "[...document.querySelectorAll('#articles-per-day tbody tr')]"
            ".filter(tr => tr.checkVisibility()).map(tr => tr.innerText.split('\\t'))"
        )
        chart_sizes = browser.evaluate(
            "[...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().height)"
        )
        shot = browser.screenshot()
    assert [row[0] for row in visible] == ["failing", "failing", "stale", "ok"]
    assert data.silent in visible[2][1] and data.steady in visible[3][1]
    articles = latest_articles(data.output)
    assert cards == {
        "articles": str(len(articles)),
        "feeds": "4",
        "failing feeds": "2",
        "stale feeds": "1",
        "dead letters": str(len(arrow_rows(data.output, "dead_letters"))),
        "last run": "2 of 4 inputs failed",
    }
    assert {lang: number(n) for lang, n in languages} == Counter(row["language"] for row in articles)
    assert sum(number(n) for _, n in days) == len(articles) and len(days) == 22  # one a day, 22 days
    assert all(height > 50 for height in chart_sizes)  # the charts are drawn, not empty boxes
    assert shot.startswith(b"\x89PNG") and len(shot) > 20_000


# --- alerts, configuration, CSV ------------------------------------------------------------------


def test_alerts_list_the_feeds_to_look_at_and_exit_6(
    data: ReportOutput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "health.csv"
    code = main(
        [
            "report",
            str(data.output),
            "--html",
            str(tmp_path / "r.html"),
            "--alerts",
            "--health-csv",
            str(csv_path),
        ]
    )
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert code == 6
    assert [status for status, _, _ in lines] == ["failing", "failing", "stale"]
    assert {source for _, source, _ in lines[:2]} == {data.broken, data.garbage}
    assert lines[2][1] == data.silent
    health = csv_path.read_text(encoding="utf-8").splitlines()
    assert health[0].startswith("status,source,title,reason") and len(health) == 5
    assert health[-1].startswith(f"ok,{data.steady},Steady News,")


def test_the_stale_rule_is_configurable(
    data: ReportOutput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_file = str(tmp_path / "r.html")
    # Silent for 12 x its median gap: not stale when the factor is 20.
    main(["report", str(data.output), "--html", html_file, "--alerts", "--stale-factor", "20"])
    assert data.silent not in capsys.readouterr().out
    # A 5-day window holds none of its entries (the last is 12 days old): stale for that reason.
    main(["report", str(data.output), "--html", html_file, "--alerts", "--stale-window", "5d"])
    out = capsys.readouterr().out
    assert f"stale\t{data.silent}\tno new entry for 12.0 days (none in the last 5 days)" in out
    assert main(["report", str(data.output), "--stale-window", "soon"]) == 2
    assert "--stale-window" in capsys.readouterr().err


def test_a_folder_without_datasets_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no newsbeam datasets here" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2


def test_a_damaged_committed_file_is_named(
    data: ReportOutput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    shutil.copytree(data.output, output)
    (damaged, *_) = sorted((output / "feed_fetches").rglob("*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert main(["report", str(output)]) == 2
    assert f"{damaged}: a committed file that cannot be read" in capsys.readouterr().err


def test_a_commit_under_way_is_not_read(data: ReportOutput, tmp_path: Path) -> None:
    """Files a `committing` manifest names are not counted until it is committed (rolled forward)."""
    output = tmp_path / "out"
    shutil.copytree(data.output, output)
    (article_file,) = [f for f in (output / "articles").rglob("*.parquet") if "language=en" in str(f)]
    extra = article_file.with_name("part-under-way.parquet")
    shutil.copy(article_file, extra)
    manifest = {
        "run_id": "under-way",
        "kind": "run",
        "status": "committing",
        "started_at": "2026-12-02T08:00:00+00:00",
        "files": [{"dataset": "articles", "partition": "x", "staged_path": "gone", "final_path": str(extra)}],
    }
    (output / "_runs" / "under-way.json").write_text(json.dumps(manifest), encoding="utf-8")
    paths = [f.path for f in committed_files(str(output), "articles", manifests(str(output)))]
    assert str(article_file) in paths and str(extra) not in paths
    manifest["status"] = "committed"
    (output / "_runs" / "under-way.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert str(extra) in [f.path for f in committed_files(str(output), "articles", manifests(str(output)))]


# --- show ----------------------------------------------------------------------------------------


def test_show_json_counts_rows_per_dataset_and_partition(
    data: ReportOutput, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(data.output), "--json", "--sample", "3"]) == 0
    document = json.loads(capsys.readouterr().out)
    for dataset in ("articles", "dead_letters", "feed_fetches"):
        fragments = ds.dataset(data.output / dataset, format="parquet", partitioning="hive").get_fragments()
        expected: Counter[str] = Counter()
        for fragment in fragments:
            folder = Path(fragment.path).parent.relative_to(data.output / dataset).as_posix()
            expected[folder] += fragment.metadata.num_rows
        assert document["datasets"][dataset]["partitions"] == expected, dataset
        assert document["datasets"][dataset]["rows"] == sum(expected.values())
    assert [run["run_id"] for run in document["runs"]] == list(reversed(data.run_ids))
    assert [run["outcome"] for run in document["runs"]] == ["2 of 4 inputs failed"] * 2
    newest = sorted(latest_articles(data.output), key=lambda r: r["published_at"], reverse=True)[:3]
    assert [a["title"] for a in document["sample"]] == [a["title"] for a in newest]


def test_show_prints_counts_runs_and_articles(data: ReportOutput, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(data.output)]) == 0
    out = capsys.readouterr().out
    en = sum(1 for row in arrow_rows(data.output, "articles") if row["language"] == "en")
    assert re.search(rf"^    ingest_date=\d{{4}}-\d\d-\d\d/language=en: {en}$", out, re.M)
    assert f"{data.run_ids[1]} (run, " in out and "2 of 4 inputs failed" in out
    assert "Steady News story 0" in out


# --- OPML ------------------------------------------------------------------------------------------


def test_opml_export_reads_back_with_the_feeds_and_their_health(data: ReportOutput, tmp_path: Path) -> None:
    opml = tmp_path / "feeds.opml"
    assert main(["report", str(data.output), "--html", str(tmp_path / "r.html"), "--opml", str(opml)]) == 0
    listed = load_opml(opml)  # the project's own OPML reader, as `newsbeam run --opml` reads it
    assert listed.problems == []
    assert {feed.url for feed in listed.feeds} == {data.steady, data.silent, data.broken}  # no local file
    assert {feed.name for feed in listed.feeds} >= {"Steady News", "Silent Zeitung"}
    namespace = "{urn:newsbeam:feed-health}"
    health = {
        outline.get("xmlUrl"): outline.get(f"{namespace}status")
        for outline in etree.parse(str(opml)).iter("outline")
    }
    assert health == {data.broken: "failing", data.silent: "stale", data.steady: "ok"}
