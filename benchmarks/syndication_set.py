"""A labelled syndication set: wire copy as outlets republish it, built from real texts of the corpus.

The near-duplicate stage is measured on it (benchmarks/bench_stories.py). Everything is derived, with
a fixed seed, from `../shared/corpus` at run time and never written into the repository:

- **Sources**: real article texts of at least `MIN_WORDS` words: the trafilatura-eval pages (their main
  text, by trafilatura without comments), the long entries of the real feeds (`fastfeedparser`'s 200
  benchmark bodies, rss-parser, miniflux, feed-rs), and, for languages the feeds lack, seed-length texts
  of consecutive lingua sentences.
- **Copies** of each source edited the way outlets edit wire copy: headline rewritten, 1-3 paragraphs
  dropped or reordered, a byline and the outlet's footer added, a sentence changed, other whitespace
  and quotes; and one **teaser** copy (the opening paragraph only, as a feed without full text has it).
- **Hard negatives**, each a story of its own: the most similar other article of the same feed (same
  outlet, same days, often the same topic) and a **follow-up** that opens with the source's first
  paragraph and goes on with another article's body. Unrelated articles of one outlet share its
  footer, so a footer never makes a story.

The set's identity is its seed and the corpus: `python -m benchmarks.syndication_set` prints the
counts and a digest of every item, which stay the same for the same corpus.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = 20261202
MIN_WORDS = 150
MAX_SOURCES = 320
MAX_PER_FEED = 6
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
FEED_GLOBS = (
    "fastfeedparser/benchmark_data/*",
    "rss-parser/input/*",
    "miniflux/internal/reader/parser/testdata/*.xml",
    "feed-rs/**/*.xml",
)
# Languages that lingua's sentences fill in when the feeds have too few long articles of them.
LINGUA_LANGUAGES = ("fi", "pl", "tr", "vi", "ja", "ko", "zh", "ru", "ar", "hu", "nl", "sv", "cs")
BYLINES = ("By {name} | {outlet}", "{name}, {outlet} correspondent", "From {outlet} wire services")
NAMES = ("Anna Berg", "Luis Ortega", "Mei Chen", "Tom Weller", "Sara Haddad", "Piotr Nowak")
OUTLETS = ("Daily Ledger", "Morning Post", "Metro Wire", "Coast Herald", "Valley Times", "City Mail")
FOOTER = (
    "© 2026 {outlet}. All rights reserved. This material may not be published, broadcast, rewritten "
    "or redistributed. Follow {outlet} on social media for the latest news and sign up to our newsletter."
)
HEADLINE_PREFIXES = ("UPDATE:", "Breaking:", "Report:", "Analysis:", "")


@dataclass(frozen=True)
class Item:
    """One article of the set; `story` is the label: the id of the source it copies."""

    item_id: str
    story: str
    kind: str  # source, copy, teaser, same_feed, follow_up
    language: str
    title: str
    text: str
    published_at: datetime
    outlet: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.title}\n{self.text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceText:
    key: str
    feed: str
    language: str
    title: str
    paragraphs: tuple[str, ...]

    @property
    def words(self) -> int:
        return sum(word_count(p) for p in self.paragraphs)


CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def word_count(text: str) -> int:
    """Words, counting two characters of a script written without spaces as one word."""
    return len(CJK.sub(" ", text).split()) + len(CJK.findall(text)) // 2


def _clean(text: str) -> str:
    return re.sub(r"[ \t\r\f\v]+", " ", unicodedata.normalize("NFC", text)).strip()


def paragraphs_of(text: str, sentences_per_paragraph: int = 3) -> tuple[str, ...]:
    """Paragraphs as written, or groups of sentences when the text has no paragraph breaks."""
    blocks = [_clean(b) for b in re.split(r"\n\s*\n|\n", text) if len(_clean(b).split()) >= 4]
    if len(blocks) >= 3:
        return tuple(blocks)
    sentences = [s for s in re.split(r"(?<=[.!?。！？])\s+", _clean(text)) if s]
    return tuple(
        " ".join(sentences[i : i + sentences_per_paragraph])
        for i in range(0, len(sentences), sentences_per_paragraph)
    )


def _language_of(text: str) -> str:
    from langdetect import DetectorFactory, detect

    DetectorFactory.seed = 0
    try:
        return str(detect(text[:2000]))
    except Exception:
        return "unknown"


def page_sources(corpus: Path) -> Iterator[SourceText]:
    import trafilatura

    index = json.loads((corpus / "trafilatura-eval" / "pages_index.json").read_text())
    for page in index:
        html = (corpus / "trafilatura-eval" / "html" / page["file"]).read_bytes()
        text = trafilatura.extract(html, include_comments=False, favor_precision=True) or ""
        title_match = re.search(rb"<title[^>]*>(.*?)</title>", html, re.S | re.I)
        title = _clean(title_match.group(1).decode("utf-8", "replace")) if title_match else page["file"]
        yield SourceText(
            f"page:{page['file']}", f"page:{page['file']}", page["language"], title, paragraphs_of(text)
        )


def feed_sources(corpus: Path) -> Iterator[SourceText]:
    import feedparser

    from transforms.normalize import html_to_text

    for pattern in FEED_GLOBS:
        for path in sorted(glob.glob(str(corpus / pattern), recursive=True)):
            if Path(path).name == "SOURCE.txt" or Path(path).suffix == ".json":
                continue
            parsed = feedparser.parse(
                Path(path).read_bytes(), sanitize_html=False, resolve_relative_uris=False
            )
            for number, entry in enumerate(parsed.entries):
                body = max(
                    [c.get("value", "") for c in entry.get("content", [])] + [entry.get("summary", "")],
                    key=len,
                )
                html = re.sub(r"(?i)</p>|<br\s*/?>", "\n\n", body)
                text = html_to_text(html) if "<" in body else body
                # html_to_text joins lines; the paragraph marks survive as double spaces at best, so split on
                # the markup first.
                blocks = [html_to_text(b) for b in re.split(r"(?i)</p>|<br\s*/?>\s*<br\s*/?>", body)]
                paragraphs = paragraphs_of("\n\n".join(b for b in blocks if b) or text)
                title = _clean(html_to_text(entry.get("title", "")))
                yield SourceText(
                    f"feed:{Path(path).relative_to(corpus)}#{number}",
                    str(Path(path).relative_to(corpus)),
                    _language_of(" ".join(paragraphs)),
                    title,
                    paragraphs,
                )


def lingua_sources(corpus: Path, rng: random.Random, per_language: int) -> Iterator[SourceText]:
    for language in LINGUA_LANGUAGES:
        path = corpus / "lingua-testdata" / "sentences" / f"{language}.txt"
        if not path.exists():
            continue
        sentences = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        for number in range(per_language):
            start = rng.randrange(0, max(1, len(sentences) - 40))
            chunk = sentences[start : start + 24]
            yield SourceText(
                f"lingua:{language}#{number}",
                f"lingua:{language}",
                language,
                chunk[0][:80],
                tuple(" ".join(chunk[i : i + 3]) for i in range(3, len(chunk), 3)),
            )


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def _overlap(a: SourceText, b: SourceText) -> float:
    wa, wb = _words(" ".join(a.paragraphs)), _words(" ".join(b.paragraphs))
    return len(wa & wb) / max(1, len(wa | wb))


def rewrite_headline(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 4:
        cut = rng.randrange(2, len(words) - 1)
        words = words[cut:] + words[:cut]
    return _clean(f"{rng.choice(HEADLINE_PREFIXES)} {' '.join(words)}")


def change_sentence(paragraph: str, rng: random.Random) -> str:
    words = paragraph.split()
    if len(words) < 6:
        return paragraph
    at = rng.randrange(0, len(words) - 3)
    return " ".join([*words[:at], "reportedly", "also", *words[at + 2 :]])


def restyle(text: str, rng: random.Random) -> str:
    """Other quotes and whitespace, as another outlet's CMS writes them."""
    text = text.replace('"', "“") if rng.random() < 0.5 else text.replace("“", '"').replace("”", '"')
    text = text.replace("'", "’") if rng.random() < 0.5 else text
    return re.sub(r" ", "  ", text, count=rng.randrange(0, 5)) if rng.random() < 0.5 else text


def edited_copy(source: SourceText, rng: random.Random, outlet: str) -> tuple[str, str]:
    paragraphs = list(source.paragraphs)
    if len(paragraphs) > 4:
        for _ in range(rng.randint(1, min(3, len(paragraphs) - 3))):
            paragraphs.pop(rng.randrange(1, len(paragraphs)))
    if len(paragraphs) > 3 and rng.random() < 0.5:
        i = rng.randrange(1, len(paragraphs) - 1)
        paragraphs[i], paragraphs[i + 1] = paragraphs[i + 1], paragraphs[i]
    i = rng.randrange(0, len(paragraphs))
    paragraphs[i] = change_sentence(paragraphs[i], rng)
    byline = rng.choice(BYLINES).format(name=rng.choice(NAMES), outlet=outlet)
    body = "\n\n".join([byline, *paragraphs, FOOTER.format(outlet=outlet)])
    return rewrite_headline(source.title, rng), restyle(body, rng)


def teaser_of(source: SourceText) -> str:
    # A feed's summary: the opening of the article, cut at a length, whatever its paragraphs.
    first = " ".join(source.paragraphs)
    if CJK.search(first):
        return first[:90] + (" …" if len(first) > 90 else "")
    words = first.split()
    return " ".join(words[:45]) + (" …" if len(words) > 45 else "")


def choose_sources(candidates: Sequence[SourceText], rng: random.Random) -> list[SourceText]:
    long_enough = [c for c in candidates if c.words >= MIN_WORDS and len(c.paragraphs) >= 3 and c.title]
    seen_digests: set[str] = set()
    per_feed: dict[str, int] = {}
    chosen: list[SourceText] = []
    for candidate in long_enough:
        digest = hashlib.sha256(" ".join(candidate.paragraphs[:2]).encode()).hexdigest()
        if digest in seen_digests or per_feed.get(candidate.feed, 0) >= MAX_PER_FEED:
            continue
        # Distinct stories are distinct texts: some feeds repeat one template under every entry.
        if any(c.language == candidate.language and _overlap(c, candidate) > 0.4 for c in chosen):
            continue
        seen_digests.add(digest)
        per_feed[candidate.feed] = per_feed.get(candidate.feed, 0) + 1
        chosen.append(candidate)
    rng.shuffle(chosen)
    return chosen[:MAX_SOURCES]


def distinct(candidates: Sequence[SourceText]) -> list[SourceText]:
    """One of each text: the corpus holds some feeds twice, and some entries under two links."""
    seen: set[str] = set()
    unique = []
    for candidate in candidates:
        opening = " ".join(re.findall(r"\w+", " ".join(candidate.paragraphs).casefold())[:60])
        digest = hashlib.sha256(opening.encode()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(candidate)
    return unique


def build_set(corpus: Path = CORPUS, seed: int = SEED) -> list[Item]:
    """The whole set, in its canonical arrival order (published_at, then item_id)."""
    rng = random.Random(seed)
    candidates = distinct(
        [*page_sources(corpus), *feed_sources(corpus), *lingua_sources(corpus, rng, per_language=4)]
    )
    sources = choose_sources(candidates, rng)
    used = {s.key for s in sources}
    spare = [c for c in candidates if c.key not in used and c.words >= 60 and c.title]
    start = datetime(2026, 11, 1, 6, tzinfo=UTC)
    items: list[Item] = []
    for number, source in enumerate(sources):
        story = f"s{number:04d}"
        at = start + timedelta(minutes=37 * number)
        home = OUTLETS[number % len(OUTLETS)]
        text = "\n\n".join([*source.paragraphs, FOOTER.format(outlet=home)])
        items.append(Item(f"{story}-0", story, "source", source.language, source.title, text, at, home))
        others = [o for o in OUTLETS if o != home]
        for copy_number in range(1, rng.randint(2, 4) + 1):
            outlet = rng.choice(others)
            title, body = edited_copy(source, rng, outlet)
            delay = timedelta(minutes=rng.randint(5, 60 * 30))
            items.append(
                Item(
                    f"{story}-{copy_number}", story, "copy", source.language, title, body, at + delay, outlet
                )
            )
        items.append(
            Item(
                f"{story}-t",
                story,
                "teaser",
                source.language,
                rewrite_headline(source.title, rng),
                teaser_of(source),
                at + timedelta(minutes=rng.randint(1, 120)),
                rng.choice(others),
            )
        )
        # Hard negatives, each a story of its own and each text used once: the nearest other article of
        # the same feed (not the same article under another link), and a follow-up opening with the
        # source's first paragraph and going on with a text found nowhere else in the set.
        neighbours = [
            o for o in spare if o.feed == source.feed and o.key not in used and _overlap(source, o) < 0.5
        ]
        if neighbours:
            nearest = max(neighbours, key=lambda o: _overlap(source, o))
            used.add(nearest.key)
            text = "\n\n".join([*nearest.paragraphs, FOOTER.format(outlet=home)])
            items.append(
                Item(
                    f"{story}-n",
                    f"{story}-n",
                    "same_feed",
                    nearest.language,
                    nearest.title,
                    text,
                    at + timedelta(hours=rng.randint(1, 20)),
                    home,
                )
            )
        donors = [o for o in spare if o.language == source.language and o.key not in used and o.words >= 100]
        if donors:
            donor = rng.choice(donors)
            used.add(donor.key)
            follow_up = [source.paragraphs[0], *donor.paragraphs[1:], FOOTER.format(outlet=home)]
            items.append(
                Item(
                    f"{story}-f",
                    f"{story}-f",
                    "follow_up",
                    source.language,
                    rewrite_headline(donor.title, rng),
                    "\n\n".join(follow_up),
                    at + timedelta(days=1, hours=rng.randint(0, 12)),
                    home,
                )
            )
    return sorted(items, key=lambda item: (item.published_at, item.item_id))


def shuffled(items: Sequence[Item], seed: int) -> list[Item]:
    """Another arrival order: the same items, published in a random order (times permuted)."""
    rng = random.Random(seed)
    times = [item.published_at for item in items]
    order = list(items)
    rng.shuffle(order)
    return [replace(item, published_at=at) for item, at in zip(order, sorted(times), strict=True)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--digests", action="store_true", help="print every item's digest")
    args = parser.parse_args(argv)
    items = build_set(seed=args.seed)
    sources = [i for i in items if i.kind == "source"]
    languages = sorted({i.language for i in sources})
    kinds: dict[str, int] = {}
    for item in items:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    print(f"seed {args.seed}: {len(items)} items, {len(sources)} sources in {len(languages)} languages")
    print("languages:", languages)
    print("kinds:", kinds)
    per_language: dict[str, int] = {}
    for source in sources:
        per_language[source.language] = per_language.get(source.language, 0) + 1
    print("sources per language:", dict(sorted(per_language.items(), key=lambda kv: -kv[1])))
    print("set digest:", hashlib.sha256("".join(i.digest for i in items).encode()).hexdigest()[:16])
    if args.digests:
        for item in items:
            print(item.item_id, item.kind, item.language, item.digest)


if __name__ == "__main__":
    main()
