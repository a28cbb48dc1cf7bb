"""The benchmark corpus: the 200 real feeds of the shared corpus, replicated, plus generated seed files.

The feeds are read in place from `../shared/corpus/fastfeedparser/benchmark_data/` (never copied into
the repository) and written N times into a work folder (`benchmarks/work/`, git-ignored). Each copy
gets distinct URLs (a copy prefix on every host, namespaces left alone) and slightly changed text (a
copy marker in every title), so that no cache or de-duplication can make a copy cheaper than the first.
Each copy also gets generated seed files of news-article length built from the labelled sentences of
`lingua-testdata`, in several languages.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS_ENV = "NEWSBEAM_CORPUS"
WORK = REPO / "benchmarks" / "work"
FEEDS_SUBDIR = Path("fastfeedparser") / "benchmark_data"
SENTENCES_SUBDIR = Path("lingua-testdata") / "sentences"
# Languages of the generated seed files: langdetect knows all of them.
SEED_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "sv", "tr", "ja", "zh", "ar", "el")
SEEDS_PER_COPY = 100
LAYOUT_VERSION = "1"  # bump when the way copies are made changes, so old work folders are rebuilt


class CorpusMissingError(SystemExit):
    """The shared corpus is not where the benchmark expects it."""


def corpus_root() -> Path:
    return Path(os.environ.get(CORPUS_ENV, REPO.parent / "shared" / "corpus"))


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise CorpusMissingError(
            f"benchmark: {what} not found at {path}.\n"
            f"The benchmark reads the shared corpus in place; put it at {corpus_root()} "
            f"(../shared/corpus beside the clone) or set {CORPUS_ENV}."
        )
    return path


def feed_files() -> list[Path]:
    folder = require(corpus_root() / FEEDS_SUBDIR, "the benchmark feeds (fastfeedparser/benchmark_data)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) < 100:
        raise CorpusMissingError(f"benchmark: only {len(files)} feeds in {folder}; expected 200")
    return files


def sentences(language: str) -> list[str]:
    path = require(corpus_root() / SENTENCES_SUBDIR / f"{language}.txt", f"lingua sentences for {language}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- one copy -------------------------------------------------------------------------------------

# Every http(s) URL but namespace declarations and the JSON Feed version URL, which name formats.
_URL = re.compile(rb"(?<![\w])(xmlns(?::[\w.-]+)?\s*=\s*[\"'])?(https?://)(?!jsonfeed\.org/version)")
_XML_TITLE = re.compile(rb"(<title(?:\s[^>]*)?>)")
_JSON_TITLE = re.compile(rb'("title"\s*:\s*")')


def replicate_feed(body: bytes, copy: int) -> bytes:
    """One copy of a feed body: every host prefixed with `c<copy>-`, every title with a marker."""
    host_prefix = f"c{copy}-".encode()

    def _url(match: re.Match[bytes]) -> bytes:
        if match.group(1):  # a namespace: leave it, or the parser no longer knows the format
            return match.group(0)
        return match.group(2) + host_prefix

    body = _URL.sub(_url, body)
    marker = f"{copy}: ".encode()
    if body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return _JSON_TITLE.sub(lambda m: m.group(1) + marker, body)
    return _XML_TITLE.sub(lambda m: m.group(1) + marker, body)


def seed_article(rng: random.Random, language: str, pool: list[str]) -> str:
    """A seed file of news-article length: a headline, then 3 to 12 paragraphs of 2 to 5 sentences."""
    words = rng.choice(pool).split()
    title = " ".join(words[: rng.randint(5, 10)]).rstrip(".,;:")
    paragraphs = [" ".join(rng.sample(pool, rng.randint(2, 5))) for _ in range(rng.randint(3, 12))]
    return title + "\n\n" + "\n\n".join(paragraphs) + "\n"


@dataclass(frozen=True)
class Corpus:
    root: Path
    copies: list[Path]  # one folder per copy, each with feeds/ and seeds/

    def inputs(self, count: int | None = None) -> list[str]:
        return [str(p) for p in self.copies[: count or len(self.copies)]]


def build(copies: int, work: Path = WORK) -> Corpus:
    """The replicated corpus in `work/corpus/`, made once and reused while its recipe is unchanged."""
    feeds = feed_files()
    pools = {language: sentences(language) for language in SEED_LANGUAGES}
    root = work / "corpus"
    stamp = root / "_layout.json"
    recipe = {"version": LAYOUT_VERSION, "feeds": len(feeds), "seeds_per_copy": SEEDS_PER_COPY}
    if stamp.exists() and json.loads(stamp.read_text())["recipe"] != recipe:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for copy in range(1, copies + 1):
        folder = root / f"copy-{copy:03d}"
        done = folder / "_complete"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "feeds").mkdir(parents=True)
            (folder / "seeds").mkdir()
            for feed in feeds:
                (folder / "feeds" / feed.name).write_bytes(replicate_feed(feed.read_bytes(), copy))
            rng = random.Random(copy)
            for n in range(SEEDS_PER_COPY):
                language = SEED_LANGUAGES[n % len(SEED_LANGUAGES)]
                text = seed_article(rng, language, pools[language])
                (folder / "seeds" / f"{n:04d}_{language}.txt").write_text(f"{copy}: {text}", encoding="utf-8")
            done.write_text("")
        made.append(folder)
    stamp.write_text(json.dumps({"recipe": recipe}))
    return Corpus(root, made)


def list_inputs(folders: list[str]) -> list[tuple[Path, bool]]:
    """(path, is_seed_file) of every input in the copy folders, as newsbeam's folder reading picks them."""
    found: list[tuple[Path, bool]] = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.name.startswith(("_", ".")):
                found.append((path, path.suffix == ".txt"))
    return found


if __name__ == "__main__":
    corpus = build(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    print(corpus.root, len(corpus.copies))
