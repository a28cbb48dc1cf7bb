"""The exactly-once scenario of the streaming job, for any runner: `run_exactly_once_scenario`.

A local HTTP server serves many feeds that change while the job runs: new entries, repeats, edits
under the same guid, a feed that alternates between 200 and 500, one that answers 304 until it
changes, rotating windows of entries, the same stories behind different tracking parameters on two
feeds, and entries without links. Some feeds answer slowly (a slow stage: the runner splits its
bundles). The feeds are dealt over four hosts (127.0.0.1 to 127.0.0.4, a server each): no host may see
more than `fetch.max_per_host` requests at once, and the hosts together must see several at once (a
tick's feeds are fetched concurrently, not one after another). Each feed moves on to its next *phase*
only once everything it served in the current one is visible in the dataset, so every revision served
at a successful poll must become visible, or the scenario fails naming what never appeared.

Meanwhile the scenario holds the output's commit lock for a moment now and then (a concurrent
compaction), which makes the job's commits slow too.

The job is run four times against the same output: stopped by SIGTERM, by Ctrl-C (SIGINT to its
whole process group, as a terminal sends it), killed with SIGKILL (kill -9) and finally stopped by
Ctrl-C once every feed has reached its last phase. Each interrupted run is stopped as soon as a
revision is served and not yet visible. Then every distinct (article_id, content_hash)
served must be stored exactly once, with versions 1..n rising in the order the revisions were first
served, and nothing partial (staging, temporary files, pending markers, stop flags) left. While the
job runs, a reader keeps reading the dataset: a file it cannot read is a failure.

The expected revisions are computed from the bodies actually served, with the pipeline's own parse,
normalize and enrich functions (what is tested here is exactly-once, not normalization).

The runner is a parameter (`runner`, `beam_options`), so that the same scenario runs on Prism
(tests/test_stream_exactly_once.py) and on the Flink cluster.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import yaml

from tests.feedserver import FeedServer, InFlight, Reply, Request
from transforms.enrich import identify_article
from transforms.io.lock import CommitLock
from transforms.normalize import EmptyEntryError, normalize_entry
from transforms.parse import parse_input
from transforms.schema import Outcome, RunInfo

PROJECT = Path(__file__).resolve().parent.parent
FEED_HEADERS = {"Content-Type": "application/rss+xml"}
IN_FLIGHT_TIMEOUT = 30  # seconds to wait for a revision served and not yet visible, to stop a run at
POLL_INTERVAL = 1.0  # seconds (`stream.poll_interval`)
# The server stamps each request as it arrives, the scheduler times it as it is sent: a millisecond of
# thread or socket delay between the two made one fair poll look 999 ms after the last (CI, on Flink).
POLL_JITTER = 0.05
WINDOW = 2  # seconds (`stream.window`)
CONTENTION_HOLD = 0.6  # seconds the scenario's stand-in for a compaction holds the commit lock
HOSTS = 4  # the feeds are dealt over this many hosts (127.0.0.1, .2, ...), each a server of its own
MAX_PER_HOST = 2  # `fetch.max_per_host`: requests at once to one host
# The fewest requests in flight at once over all hosts that shows a tick's polls fetched concurrently:
# five slow feeds (0.1-0.3 s) on three hosts are due at every tick; polled one after another, it is 1.
MIN_IN_FLIGHT = 3
# The bound: visible within one window plus one poll interval of being served (or of a restart's
# first poll). Plus one allowance: a pane commit that finds the lock held by the contention waits for it
# (measured: at most 0.70 s of lock wait in the scenario's pane commits); the lock is what serializes them.
LATENCY_BOUND = WINDOW + POLL_INTERVAL + CONTENTION_HOLD
Revision = tuple[str, str]  # (article_id, content_hash)
# How the interrupted runs end, in turn (a final run, stopped by `final_stop`, follows them).
STOPS = (("sigterm", signal.SIGTERM), ("ctrl-c", signal.SIGINT), ("kill-9", signal.SIGKILL))


# --- the feeds ------------------------------------------------------------------------------------


def _item(guid: str, title: str, text: str, link: str | None) -> str:
    link_element = f"<link>{link}</link>" if link else ""
    permalink = ' isPermaLink="false"' if not link else ""
    return (
        f"<item><guid{permalink}>{guid}</guid>{link_element}<title>{title}</title>"
        f"<description>{text}</description></item>"
    )


def _rss(name: str, items: list[str]) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://scenario.test/{name}</link><language>en</language>{''.join(items)}</channel></rss>"
    ).encode()


def _story(name: str, n: int, phase: int | None = None) -> tuple[str, str]:
    edit = f" Update {phase}: the council answered the questions of the {name} desk." if phase else ""
    return (
        f"Story {n} from the {name} desk",
        f"Report number {n} of the {name} desk about the day's events in the town centre.{edit}",
    )


def edited_feed(name: str, phase: int, entries: int = 3) -> bytes:
    """`entries` entries; the first is edited under the same guid at every phase, the others repeat."""
    items = []
    for n in range(entries):
        title, text = _story(name, n, phase if n == 0 else None)
        items.append(_item(f"{name}-{n}", title, text, f"http://scenario.test/{name}/{n}"))
    return _rss(name, items)


def rotating_feed(name: str, phase: int, entries: int = 3) -> bytes:
    """A window of the latest `entries` entries: each phase one new entry comes, the oldest goes."""
    items = []
    for n in range(phase, phase + entries):
        title, text = _story(name, n)
        items.append(_item(f"{name}-{n}", title, text, f"http://scenario.test/{name}/{n}"))
    return _rss(name, list(reversed(items)))


def tracking_feed(name: str, phase: int, campaign: str) -> bytes:
    """Shared stories behind tracking parameters (the same article on two feeds), plus one of its own."""
    items = []
    for n in range(phase + 1):
        title, text = _story("shared", n)
        link = f"http://scenario.test/shared/{n}?utm_source={campaign}&amp;utm_medium=rss"
        items.append(_item(f"{name}-shared-{n}", title, text, link))
    title, text = _story(name, 0, phase)
    items.append(_item(f"{name}-own", title, text, f"http://scenario.test/{name}/own?fbclid={phase}"))
    return _rss(name, items)


def linkless_feed(name: str, phase: int) -> bytes:
    """Entries with a guid that is no URL and no link: the id comes from the feed and the guid."""
    items = []
    for n in range(phase + 1):
        title, text = _story(name, n)
        items.append(_item(f"tag:{name},2025:{n}", title, text, None))
    return _rss(name, items)


@dataclass
class ScenarioFeed:
    """One feed of the scenario: its body per phase, whether a phase fails, how slow it answers."""

    name: str
    body: Callable[[int], bytes]
    failing_phase: Callable[[int], bool] = lambda phase: False
    conditional: bool = False
    delay: float = 0.0
    phase: int = 0
    served_in_phase: set[Revision] = field(default_factory=set)
    answered_in_phase: int = 0


def _phases(make: Callable[[str, int, int], bytes], name: str, entries: int) -> Callable[[int], bytes]:
    """A feed's body per phase: `make(name, phase, entries)`."""
    return lambda phase: make(name, phase, entries)


def _tracking_phase(n: int, phase: int) -> bytes:
    return tracking_feed(f"tracking{n}", phase, f"c{n}")


def scenario_feeds(copies: int = 1, entries: int = 3) -> list[ScenarioFeed]:
    """The feeds: `copies` of each edited and rotating feed (more load), each with `entries` entries."""
    feeds = []
    for n in range(4 * copies):
        name = f"edits{n}"
        feeds.append(ScenarioFeed(name, _phases(edited_feed, name, entries), delay=0.3 * (n % 2)))
    for n in range(3 * copies):
        name = f"rotate{n}"
        feeds.append(ScenarioFeed(name, _phases(rotating_feed, name, entries), delay=0.1 * (n % 3)))
    feeds.append(
        ScenarioFeed("flaky", lambda p: rotating_feed("flaky", p), failing_phase=lambda p: p % 2 == 1)
    )
    feeds.append(ScenarioFeed("conditional", lambda p: edited_feed("conditional", p), conditional=True))
    feeds += [ScenarioFeed(f"tracking{n}", functools.partial(_tracking_phase, n)) for n in range(2)]
    feeds.append(ScenarioFeed("linkless", lambda p: linkless_feed("linkless", p), delay=0.2))
    return feeds


def revisions_of(body: bytes, feed_url: str) -> set[Revision]:
    """(article_id, content_hash) of every entry of a feed body, as the pipeline computes them."""
    parsed = parse_input(body, feed_url, content_type="application/rss+xml", base_url=feed_url)
    assert parsed.outcome == Outcome.OK, parsed
    run = RunInfo("scenario", datetime(2025, 11, 29, tzinfo=UTC), "test")
    found = set()
    for entry in parsed.entries:
        try:
            article = identify_article(normalize_entry(entry, run.started_at))
        except EmptyEntryError:
            continue
        found.add((article["article_id"], article["content_hash"]))
    return found


class FeedHosts:
    """The scenario's feed servers, one per address (127.0.0.1, 127.0.0.2, ...): each is a host of its own
    to the job's per-host limits. Counts the requests in flight at each and over them all."""

    def __init__(self, count: int = HOSTS) -> None:
        self.in_flight = InFlight()
        self.servers = [FeedServer(f"127.0.0.{n + 1}", shared=self.in_flight) for n in range(count)]

    def __enter__(self) -> FeedHosts:
        for server in self.servers:
            server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop()

    def route(self, number: int, path: str, answer: Callable[[Request], Reply]) -> str:
        """Serve `path` on host `number` (modulo the hosts); returns its URL."""
        return self.servers[number % len(self.servers)].route(path, answer)

    @property
    def requests(self) -> list[Request]:
        """Every request to every host, in the order they came."""
        return sorted((r for server in self.servers for r in list(server.requests)), key=lambda r: r.at)


class ChangingFeeds:
    """Serves the scenario's feeds and records every revision served, with when it was first served."""

    def __init__(self, hosts: FeedHosts, last_phase: int, copies: int = 1, entries: int = 3) -> None:
        self.hosts = hosts
        self.last_phase = last_phase
        self.phase_ceiling = last_phase  # no feed moves beyond it (each interrupted run gets its share)
        self.feeds = {feed.name: feed for feed in scenario_feeds(copies, entries)}
        self.urls = {
            name: hosts.route(number, f"/{name}.xml", self._answerer(name))
            for number, name in enumerate(self.feeds)
        }
        self.first_served: dict[Revision, tuple[float, int]] = {}  # revision -> (time, serve order)
        self.answers = 0
        self._lock = threading.Lock()

    def _answerer(self, name: str) -> Callable[[Request], Reply]:
        def answer(request: Request) -> Reply:
            feed = self.feeds[name]
            with self._lock:
                phase = feed.phase
                feed.answered_in_phase += 1
                if feed.failing_phase(phase):
                    return Reply(500, b"down for maintenance", {"Content-Type": "text/plain"}, feed.delay)
                etag = f'"{name}-{phase}"'
                if feed.conditional and request.headers.get("if-none-match") == etag:
                    return Reply(304, headers={"ETag": etag}, delay=feed.delay)
                body = feed.body(phase)
                served = revisions_of(body, self.urls[name])
                feed.served_in_phase |= served
                for revision in served:
                    if revision not in self.first_served:
                        self.first_served[revision] = (time.monotonic(), len(self.first_served))
            headers = {**FEED_HEADERS, **({"ETag": etag} if feed.conditional else {})}
            return Reply(200, body, headers, delay=feed.delay)

        return answer

    def advance(self, visible: set[Revision]) -> int:
        """Move every feed whose current phase is fully visible to its next phase; returns how many moved."""
        moved = 0
        with self._lock:
            for feed in self.feeds.values():
                if feed.phase >= min(self.last_phase, self.phase_ceiling) or feed.answered_in_phase == 0:
                    continue
                if feed.served_in_phase <= visible:  # a failing phase serves nothing: it moves on once asked
                    feed.phase += 1
                    feed.served_in_phase = set()
                    feed.answered_in_phase = 0
                    moved += 1
        return moved

    def done(self, visible: set[Revision]) -> bool:
        with self._lock:
            at_end = all(feed.phase >= self.last_phase for feed in self.feeds.values())
            return at_end and set(self.first_served) <= visible

    def missing(self, visible: set[Revision]) -> list[str]:
        with self._lock:
            return [
                f"{rev} first served at {self.first_served[rev][0]:.1f}"
                for rev in self.first_served
                if rev not in visible
            ]


# --- the dataset ----------------------------------------------------------------------------------


def stored_articles(output: Path) -> list[dict[str, Any]]:
    folder = output / "articles"
    if not folder.exists() or not any(folder.rglob("*.parquet")):
        return []
    query = f"""
        SELECT article_id, content_hash, version, entry_id, filename
        FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true, filename = true)
    """
    with duckdb.connect() as connection:
        rows = connection.execute(query).fetchall()
    keys = ("article_id", "content_hash", "version", "entry_id", "filename")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def leftovers(output: Path) -> list[str]:
    """What a finished job must not leave: staging, temporary files, pending markers, stop flags."""
    found = [
        p
        for p in output.rglob("*")
        if p.is_file()
        and (
            "_staging" in p.parts
            or "_pending" in p.parts
            or "_pending_panes" in p.parts
            or p.suffix in (".tmp", ".stop")
            or p.name.endswith(".running")
        )
    ]
    return sorted(str(p.relative_to(output)) for p in found)


class CommitContention:
    """Holds the output's commit lock for `hold` seconds every `every` seconds, as a concurrent
    `newsbeam compact` would: the job's commits wait, its stateful stages get slow, and the runner
    splits their bundles."""

    def __init__(self, output: Path, hold: float = CONTENTION_HOLD, every: float = 1.5) -> None:
        self.output, self.hold, self.every = output, hold, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._contend, daemon=True)

    def __enter__(self) -> CommitContention:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _contend(self) -> None:
        while not self._stop.wait(self.every):
            with CommitLock(str(self.output), "the scenario's contention", timeout=30):
                time.sleep(self.hold)


def published_at(path: str) -> float:
    """When a file became visible, on the monotonic clock: its rename into place set its ctime."""
    try:
        changed = os.stat(path).st_ctime
    except FileNotFoundError:  # compacted away since the read: it was visible until now
        return time.monotonic()
    return time.monotonic() - (time.time() - changed)


class DatasetWatcher:
    """Reads the dataset every half second while the job runs; moves the feeds on; records read errors."""

    def __init__(self, output: Path, feeds: ChangingFeeds) -> None:
        self.output, self.feeds = output, feeds
        self.visible: set[Revision] = set()
        self.visible_at: dict[Revision, float] = {}  # monotonic time its file was published
        self.errors: list[str] = []
        self.advances = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> DatasetWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def refresh(self) -> None:
        try:
            rows = stored_articles(self.output)
        except Exception as error:  # a partial or vanished file is what this watcher is for
            self.errors.append(f"{type(error).__name__}: {error}")
            return
        self.visible = {(row["article_id"], row["content_hash"]) for row in rows}
        for row in rows:
            revision = (row["article_id"], row["content_hash"])
            if revision not in self.visible_at:
                self.visible_at[revision] = published_at(row["filename"])
        self.advances += self.feeds.advance(self.visible)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.refresh()


# --- running the job ------------------------------------------------------------------------------


@dataclass
class JobRun:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def text(self) -> tuple[str, str]:
        return self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace")


def write_config(work: Path, urls: dict[str, str], runner: str, beam_options: dict[str, Any]) -> Path:
    config = {
        "runner": runner,
        "output": str(work / "out"),
        "feeds": [{"url": url} for url in urls.values()],
        "stream": {"poll_interval": POLL_INTERVAL, "window": WINDOW, "cleanup_after": 30},
        "fetch": {
            "allow_private_hosts": True,
            "max_attempts": 1,
            "total_timeout": 10,
            "max_per_host": MAX_PER_HOST,
        },
        "beam_options": beam_options,
    }
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_job(config: Path, work: Path, name: str, env: dict[str, str]) -> JobRun:
    stdout, stderr = work / f"{name}.out", work / f"{name}.err"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "stream", "--config", str(config), "--run-id", name],
        cwd=PROJECT,
        env=env,
        stdout=stdout.open("wb"),
        stderr=stderr.open("wb"),
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )
    return JobRun(process, stdout, stderr)


def wait_for(condition: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


class ScenarioFailure(AssertionError):
    pass


@contextlib.contextmanager
def _no_run_left(runs: list[JobRun]) -> Iterator[None]:
    """However the scenario ends (a failure raised mid-run too), no launcher it started runs on; a
    streaming job never ends by itself, and its Prism would run on with it."""
    try:
        yield
    finally:
        for run in runs:
            if run.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait(timeout=30)


def _fail(message: str, *runs: JobRun) -> ScenarioFailure:
    logs = []
    for run in runs:
        out, err = run.text()
        logs.append(f"--- {run.stdout.stem}: exit {run.process.returncode}\n{out[-1500:]}\n{err[-3000:]}")
    return ScenarioFailure(message + "\n" + "\n".join(logs))


def _stop(run: JobRun, how: signal.Signals, timeout: float) -> int:
    os.killpg(run.process.pid, how)
    try:
        return run.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.process.pid, signal.SIGKILL)
        run.process.wait(timeout=30)
        raise _fail(f"the job did not stop within {timeout:.0f}s of {how.name}", run) from None


def _advanced_or_ended(watcher: DatasetWatcher, before: int, advances: int, run: JobRun) -> bool:
    return watcher.advances - before >= advances or run.process.poll() is not None


def _every_feed_polled_since(server: FeedHosts, feeds: ChangingFeeds, since: float) -> bool:
    polled = {r.path for r in server.requests if r.at >= since}
    return all(f"/{name}.xml" in polled for name in feeds.feeds)


def _in_flight(feeds: ChangingFeeds, output: Path) -> bool:
    """Whether a revision is served but not visible (read now, not the watcher's last look)."""
    with feeds._lock:
        served = set(feeds.first_served)
    try:
        stored = {(row["article_id"], row["content_hash"]) for row in stored_articles(output)}
    except Exception:  # a file vanished mid-read (the watcher reports unreadable ones)
        return False
    return bool(served - stored)


def _gone(pid: int) -> bool:
    return not process_alive(pid)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@dataclass
class ScenarioReport:
    """What the scenario saw; latencies are from first served (or from the first poll of the run that
    stored it, for revisions a stopped run left unstored) to the publication of its file."""

    revisions: int
    runs: int
    phase_advances: int
    seconds: float
    latency_max: float
    latency_median: float
    latency_after_restart_max: float
    restarted: int  # revisions served before a restart and stored after it (timed from its first poll)
    closest_polls: float  # the shortest time between two requests of one run to one feed
    most_in_flight: int  # the most requests at once over all hosts (polls of a tick fetched together)
    startups: list[float]  # per run, seconds from its launch to its first request (runner start-up)

    def summary(self) -> str:
        return (
            f"{self.revisions} revisions in {self.runs} runs, {self.phase_advances} feed changes, "
            f"{self.seconds:.0f}s; latency served -> visible: median {self.latency_median:.1f}s, "
            f"max {self.latency_max:.1f}s, "
            f"max from a restart's first poll {self.latency_after_restart_max:.1f}s "
            f"({self.restarted} revisions); closest polls of a feed {self.closest_polls:.2f}s apart; "
            f"at most {self.most_in_flight} requests at once; start-up per run "
            + ", ".join(f"{seconds:.0f}s" for seconds in self.startups)
        )


def _latencies(
    first_served: dict[Revision, tuple[float, int]],
    visible_at: dict[Revision, float],
    first_polls: list[float],
) -> tuple[float, float, float, int]:
    """(max, median, max after a restart, how many after a restart) of served -> visible; a revision
    served before a restart and stored after it counts from the restarted run's first poll."""
    spans, after_restart = [], [0.0]
    for revision, (served, _) in first_served.items():
        seen = visible_at.get(revision)
        if seen is None:
            continue
        restarts = [at for at in first_polls if served < at <= seen]
        start = restarts[-1] if restarts else served
        spans.append(seen - start)
        if restarts:
            after_restart.append(seen - start)
    spans.sort()
    longest, median = (spans[-1] if spans else 0.0), (spans[len(spans) // 2] if spans else 0.0)
    return longest, median, max(after_restart), len(after_restart) - 1


def run_exactly_once_scenario(
    work: Path,
    runner: str,
    beam_options: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
    advances_per_run: int = 12,
    last_phase: int = 6,
    copies: int = 1,
    entries: int = 3,
    after_kill: Callable[[JobRun], None] | None = None,
    stop_timeout: float = 90.0,
    stops: tuple[tuple[str, signal.Signals], ...] = STOPS,
    final_stop: signal.Signals = signal.SIGINT,
    latency_bound: float | None = None,
) -> ScenarioReport:
    """Run the scenario of the module docstring; raises `ScenarioFailure` (an AssertionError) on a breach.

    `startup_timeout` is how long a run may take to show its first progress (runner start-up);
    `advances_per_run` how many feed phase changes each interrupted run must see before it is stopped;
    `copies` and `entries` scale the load (feeds and entries per feed; benchmarks/ uses more).
    `stop_timeout` bounds each drain after a stop signal (more load, longer drains).
    `stops` are the interrupted runs' ends, in turn, and `final_stop` the final run's (a kill -9 among
    `stops` is what leaves revisions for a restart to store). `after_kill` runs after the kill -9 of
    the launcher: on a cluster runner the job outlives its launcher, so this is where to cancel it
    (Prism dies with the launcher and needs nothing).
    `latency_bound` (seconds, e.g. `LATENCY_BOUND`): a revision visible later than this after it was served
    (or after a restart's first poll) is a breach; the Prism test and benchmarks/bench_stream_exactly_once.py
    give it.
    """
    started = time.monotonic()
    output = work / "out"
    env = {**os.environ, **(env or {})}
    runs: list[JobRun] = []
    run_spans: list[tuple[float, float]] = []  # (start, end) of each run, ended by its stop (and cancel)
    first_polls: list[Callable[[], float | None]] = []  # filled in when each run's first request arrives
    launches: list[float] = []
    with FeedHosts() as server:
        feeds = ChangingFeeds(server, last_phase, copies, entries)
        config = write_config(work, feeds.urls, runner, beam_options)
        with DatasetWatcher(output, feeds) as watcher, CommitContention(output), _no_run_left(runs):
            for number, (name, how) in enumerate(stops):
                # Each interrupted run gets its share of the phases: a run that overshoots its
                # `advances_per_run` (a window commit moves many feeds at once, a drain more) must not
                # leave the next one too few changes to see, or it fails for want of them.
                feeds.phase_ceiling = last_phase * (number + 1) // len(stops)
                run_started = time.monotonic()
                launches.append(run_started)
                run = start_job(config, work, name, env)
                runs.append(run)
                first_polls.append(_first_request_after(server, run_started))
                before = watcher.advances
                progressed = wait_for(
                    functools.partial(_advanced_or_ended, watcher, before, advances_per_run, run),
                    startup_timeout + 30,
                )
                if run.process.poll() is not None:
                    raise _fail(f"run {name} ended by itself", run)
                if not progressed:
                    raise _fail(
                        f"run {name} made no progress: never stored {feeds.missing(watcher.visible)}", run
                    )
                # Feeds have just moved on: the stop (or kill) comes as soon as a revision is served but
                # not yet visible, which is when it must not lose or double anything.
                if not wait_for(functools.partial(_in_flight, feeds, output), IN_FLIGHT_TIMEOUT, poll=0.05):
                    raise _fail(f"run {name}: no revision was served and not yet visible to stop at", run)
                code = _stop(run, how, timeout=stop_timeout)
                expected = -signal.SIGKILL if how == signal.SIGKILL else 0
                if code != expected:
                    raise _fail(f"run {name} exited {code}, not {expected}", run)
                if how == signal.SIGKILL:
                    _check_runner_gone(run)
                    if after_kill is not None:
                        after_kill(run)
                elif "rows in" not in run.text()[0]:
                    raise _fail(f"run {name} printed no report", run)
                run_spans.append((run_started, time.monotonic()))
            feeds.phase_ceiling = last_phase
            final = start_job(config, work, "final", env)
            runs.append(final)
            final_started = time.monotonic()
            launches.append(final_started)
            first_polls.append(_first_request_after(server, final_started))

            def finished() -> bool:  # everything stored, and every feed polled twice by this run
                polled = Counter(r.path for r in list(server.requests) if r.at >= final_started)
                every_feed = all(polled[f"/{name}.xml"] >= 2 for name in feeds.feeds)
                return every_feed and feeds.done(watcher.visible)

            done = wait_for(lambda: finished() or final.process.poll() is not None, startup_timeout + 90)
            if not done or final.process.poll() is not None:
                if final.process.poll() is None:
                    _stop(final, signal.SIGKILL, 30)
                raise _fail(f"never stored: {feeds.missing(watcher.visible)}", *runs)
            # One more poll of every feed, all of it stored already: it must store nothing new.
            polled_all = time.monotonic()
            if not wait_for(functools.partial(_every_feed_polled_since, server, feeds, polled_all), 30):
                raise _fail("the final run stopped polling", final)
            code = _stop(final, final_stop, timeout=stop_timeout)
            if code != 0:
                raise _fail(f"the final run exited {code}", final)
            run_spans.append((final_started, time.monotonic()))
            watcher.refresh()
        if watcher.errors:
            raise _fail(f"the dataset was unreadable while the job ran: {watcher.errors[:3]}", *runs)
        _check_exactly_once(stored_articles(output), feeds.first_served, runs)
        closest = closest_polls(list(server.requests), run_spans)
        too_close = {path: at for path, at in closest.items() if at[0] < POLL_INTERVAL - POLL_JITTER}
        if too_close:
            raise _fail(
                f"feeds polled more often than every {POLL_INTERVAL:g}s (closest requests of one run): "
                + ", ".join(
                    f"{path} {gap * 1000:.0f} ms apart in {runs[number].stdout.stem} at {at:.1f}s"
                    for path, (gap, number, at) in sorted(too_close.items())
                ),
                *runs,
            )
        crowded = {
            str(host.host): host.max_in_flight for host in server.servers if host.max_in_flight > MAX_PER_HOST
        }
        if crowded:
            raise _fail(f"more than {MAX_PER_HOST} requests at once to one host: {crowded}", *runs)
        if server.in_flight.most < MIN_IN_FLIGHT:
            raise _fail(
                f"a tick's polls ran one after another: at most {server.in_flight.most} requests at once "
                f"over {len(server.servers)} hosts (the polls of a tick must be fetched concurrently)",
                *runs,
            )
        left = leftovers(output)
        if left:
            raise _fail(f"left behind: {left[:10]}", *runs)
        polls = [at() for at in first_polls]
        latency = _latencies(feeds.first_served, watcher.visible_at, [at for at in polls if at is not None])
        if latency_bound is not None and latency[0] > latency_bound:
            raise _fail(
                f"a revision became visible {latency[0]:.1f}s after it was served, more than "
                f"{latency_bound:g}s (median {latency[1]:.1f}s)",
                *runs,
            )
        return ScenarioReport(
            len(feeds.first_served),
            len(runs),
            watcher.advances,
            time.monotonic() - started,
            *latency,
            min((gap for gap, _, _ in closest.values()), default=float("inf")),
            server.in_flight.most,
            [at - launched for at, launched in zip(polls, launches, strict=True) if at is not None],
        )


def closest_polls(
    requests: list[Request], spans: list[tuple[float, float]]
) -> dict[str, tuple[float, int, float]]:
    """Per feed path: the shortest time between two requests of one run (a restart may poll at once),
    with the run's number and the later request's time from the run's start."""
    closest: dict[str, tuple[float, int, float]] = {}
    for number, (start, end) in enumerate(spans):
        times: dict[str, list[float]] = defaultdict(list)
        for request in requests:
            if start <= request.at <= end:
                times[request.path].append(request.at)
        for path, ats in times.items():
            ats.sort()
            for earlier, later in itertools.pairwise(ats):
                if later - earlier < closest.get(path, (float("inf"),))[0]:
                    closest[path] = (later - earlier, number, later - start)
    return closest


def _first_request_after(server: FeedHosts, since: float) -> Callable[[], float | None]:
    """When the server got its first request after `since` (asked later, once the run has polled)."""

    def first() -> float | None:
        return next((request.at for request in list(server.requests) if request.at >= since), None)

    return first


def _check_runner_gone(run: JobRun) -> None:
    """After kill -9 of the launcher, a runner it started in a session of its own must die with it."""
    for line in run.text()[1].splitlines():
        if "runner pid" in line:
            pid = int(line.rsplit("runner pid", 1)[1].split()[0].strip(" ):,"))
            if not wait_for(functools.partial(_gone, pid), 15):
                os.kill(pid, signal.SIGKILL)
                raise _fail(f"the runner (pid {pid}) outlived its launcher's kill -9", run)


def _check_exactly_once(
    rows: list[dict[str, Any]], first_served: dict[Revision, tuple[float, int]], runs: list[JobRun]
) -> None:
    stored = Counter((row["article_id"], row["content_hash"]) for row in rows)
    twice = {rev: n for rev, n in stored.items() if n > 1}
    missing = set(first_served) - set(stored)
    unexpected = set(stored) - set(first_served)
    problems = []
    if twice:
        problems.append(f"{len(twice)} revisions stored more than once, e.g. {list(twice.items())[:3]}")
    if missing:
        problems.append(f"{len(missing)} served revisions never stored, e.g. {sorted(missing)[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} stored revisions never served, e.g. {sorted(unexpected)[:3]}")
    per_id: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        revision = (row["article_id"], row["content_hash"])
        if revision in first_served:
            per_id[row["article_id"]].append((row["version"], first_served[revision][1]))
    for article_id, versions in per_id.items():
        numbers = sorted(version for version, _ in versions)
        serve_order = [order for _, order in sorted(versions)]
        if numbers != list(range(1, len(numbers) + 1)) or serve_order != sorted(serve_order):
            problems.append(f"id {article_id}: versions {sorted(versions)} (version, serve order)")
    if problems:
        raise _fail("; ".join(problems[:8]), *runs)
