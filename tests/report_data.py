"""A small real output for the report, `show` and OPML tests: two batch runs over three HTTP feeds.

`steady` publishes daily up to now, `silent` published daily until twelve days ago (stale: silent
for 12 x its median gap), `broken` answers 500 (failing, a `read/http_500` dead letter), and a local
file that is no feed adds a `parse` dead letter. Dates are relative to now, so staleness is judged
as of the runs, and every entry is at now's time of day, so the 22 entries fall on 22 days whatever
the hour (two hours apart, the last steady and first silent ones shared a day from 00:00 to 02:00 UTC).
The runs are real `newsbeam run`s against tests/feedserver.py on 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import yaml

from pipeline.cli import main
from tests.feedserver import FeedServer, Reply

ENGLISH = (
    "The city council approved the new budget for public transport after a long debate on Tuesday.",
    "Farmers in the valley expect a good harvest this autumn thanks to the mild and rainy spring.",
    "The museum opens a new exhibition of modern photography from around the world next month.",
    "Scientists measured the water temperature of the lake every week during the whole summer.",
)
GERMAN = (
    "Der Stadtrat hat nach einer langen Debatte am Dienstag den neuen Haushalt beschlossen.",
    "Die Bauern im Tal erwarten in diesem Herbst dank des milden und regnerischen Frühlings eine gute Ernte.",
    "Das Museum eröffnet im nächsten Monat eine neue Ausstellung moderner Fotografie aus aller Welt.",
    "Die Wissenschaftler haben den ganzen Sommer über jede Woche die Wassertemperatur des Sees gemessen.",
)
FETCH = {
    "connect_timeout": 1,
    "read_timeout": 1,
    "total_timeout": 5,
    "max_attempts": 1,
    "allow_private_hosts": True,  # the test server is on 127.0.0.1
}


def rss(name: str, language: str, sentences: tuple[str, ...], dates: list[datetime]) -> bytes:
    slug = name.lower().replace(" ", "-")
    items = "".join(
        f"<item><title>{name} story {i}: {sentences[i % len(sentences)][:30]}</title>"
        f"<link>http://news.example/{slug}/{i}</link><guid>http://news.example/{slug}/{i}</guid>"
        f"<pubDate>{format_datetime(when)}</pubDate>"
        f"<description>{' '.join(sentences[(i + k) % len(sentences)] for k in range(1 + i % 3))}"
        "</description>"
        "</item>"
        for i, when in enumerate(dates)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://news.example/{slug}</link><language>{language}</language>{items}</channel></rss>"
    ).encode()


@dataclass
class ReportOutput:
    output: Path
    steady: str
    silent: str
    broken: str
    garbage: str
    run_ids: tuple[str, str]


def build(folder: Path, server: FeedServer) -> ReportOutput:
    now = datetime.now(UTC).replace(microsecond=0)
    steady_dates = [now - timedelta(days=d) for d in range(12)]
    silent_dates = [now - timedelta(days=12 + d) for d in range(10)]
    headers = {"Content-Type": "application/rss+xml"}
    steady = server.route("/steady.xml", Reply(200, rss("Steady News", "en", ENGLISH, steady_dates), headers))
    silent = server.route(
        "/silent.xml", Reply(200, rss("Silent Zeitung", "de", GERMAN, silent_dates), headers)
    )
    broken = server.route("/broken.xml", Reply(500, b"oops"))
    garbage = folder / "garbage.rss"
    garbage.write_text("<rss><channel><title>half a feed", encoding="utf-8")
    output = folder / "out"
    config = {
        "runner": "direct",
        "output": str(output),
        "inputs": [str(garbage)],
        "feeds": [{"url": url} for url in (steady, silent, broken)],
        "fetch": FETCH,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run_ids = ("20261201T060000Z-aaaaaa", "20261201T070000Z-bbbbbb")
    for run_id in run_ids:
        main(["run", "-q", "--config", str(path), "--run-id", run_id, "--force"])
    return ReportOutput(output, steady, silent, broken, str(garbage), run_ids)


if __name__ == "__main__":
    # The README's screenshot: python -m tests.report_data FOLDER docs/report.png
    import sys

    from pipeline.cli import main as newsbeam
    from tests.browser import screenshot_file

    with FeedServer() as feeds:
        target = Path(sys.argv[1])
        target.mkdir(parents=True, exist_ok=True)
        built = build(target, feeds)
    newsbeam(["report", str(built.output)])
    if len(sys.argv) > 2:
        screenshot_file(built.output / "report.html", Path(sys.argv[2]))
