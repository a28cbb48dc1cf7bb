"""What a streaming poll costs once its entries are committed (issue 12's targets).

    python -m benchmarks.bench_stream_polls                 # 100 entries a feed, 200 rounds
    python -m benchmarks.bench_stream_polls --entries 30 --rounds 500

Runs the poll step of `PollFeeds` (`_PollShardFn._outputs`: what follows the HTTP fetch) on a
realistic RSS body in one process, CPU time only, and prints per entry:

- an unchanged body whose entries are all committed: digest and lookup, no parse
  (target <= 0.1 ms per entry);
- a changed body (one entry new, the rest committed): the whole poll step, against feedparser's
  own parse of the same body through `parse_input` (target: <= parse + 0.1 ms per unchanged entry);
- for reference, a body whose entries are all new (everything goes on to normalize).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from transforms.fetch import FetchResult, FetchSettings  # noqa: E402
from transforms.io.committed import fetch_millis, shared_entries  # noqa: E402
from transforms.parse import parse_input  # noqa: E402
from transforms.poll import _PollShardFn  # noqa: E402

URL = "http://bench.test/feed.xml"


def feed_body(entries: int, newest: int) -> bytes:
    items = "".join(
        f"<item><guid>bench-{n}</guid><link>http://bench.test/story/{n}?utm_source=rss</link>"
        f"<title>Story {n}: the council votes on the harbour plan</title>"
        f"<description><![CDATA[<p>Report number {n}. "
        + "The council met on Monday to discuss the harbour, the ferries and the new library. "
        * 5
        + "</p>]]></description><pubDate>Sat, 29 Nov 2025 10:00:00 GMT</pubDate>"
        "<author>desk@bench.test (The desk)</author><category>Local</category></item>"
        for n in range(newest, newest - entries, -1)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Bench</title>'
        f"<link>http://bench.test/</link><language>en</language>{items}</channel></rss>"
    ).encode()


def cpu_seconds(step: Callable[[], object], rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        step()
    return (time.process_time() - started) / rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    n, rounds = args.entries, args.rounds

    poll = _PollShardFn(FetchSettings(), (), 300)
    poll.setup()
    known = shared_entries()

    def poll_step(body: bytes) -> list[object]:
        result = FetchResult(url=URL, status=200, body=body, content_type="application/rss+xml")
        return list(poll._outputs(URL, result, datetime.now(UTC), time.monotonic(), None))

    def commit_everything(body: bytes) -> None:
        """Poll once and report every entry it sent on as committed (what the sink does)."""
        at = datetime.now(UTC)
        result = FetchResult(url=URL, status=200, body=body, content_type="application/rss+xml")
        for output in poll._outputs(URL, result, at, time.monotonic(), None):
            if isinstance(output, dict):
                known.report_committed(URL, fetch_millis(at), output.get("ordinal", 0))
        time.sleep(0.002)  # the next poll gets another fetch time

    old, new = feed_body(n, 1000), feed_body(n, 1001)  # `new`: one entry more, the oldest gone
    parse = cpu_seconds(
        lambda: parse_input(new, URL, content_type="application/rss+xml", base_url=URL), rounds
    )

    fresh_url_entries = cpu_seconds(lambda: poll_step(feed_body(n, 10_000 + time.monotonic_ns() % 10**6)), 20)

    commit_everything(old)
    commit_everything(old)  # all entries known: from now on the body is recognised unchanged
    unchanged = cpu_seconds(lambda: poll_step(old), rounds)
    assert not [o for o in poll_step(old) if isinstance(o, dict)], "an unchanged body sent entries on"

    def changed_step() -> None:
        sent = [o for o in poll_step(new) if isinstance(o, dict)]
        assert len(sent) == 1, len(sent)  # the new entry only

    commit_everything(old)
    changed = cpu_seconds(changed_step, rounds)

    per_unchanged = (changed - parse) / (n - 1)
    print(f"poll step CPU per feed of {n} entries (mean of {rounds} rounds), on this machine:")
    print(
        f"  unchanged body, all committed:  {unchanged * 1e3:8.3f} ms  = {unchanged / n * 1e3:.4f} ms/entry "
        f"(target <= 0.1)"
    )
    print(f"  feedparser parse of the body:   {parse * 1e3:8.3f} ms  = {parse / n * 1e3:.4f} ms/entry")
    print(
        f"  changed body, 1 new entry:      {changed * 1e3:8.3f} ms  = parse + {per_unchanged * 1e3:.4f} ms "
        "per unchanged entry (target <= 0.1)"
    )
    print(f"  all entries new (reference):    {fresh_url_entries * 1e3:8.3f} ms, then the stages per entry")
    ok = unchanged / n <= 1e-4 and per_unchanged <= 1e-4
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
