"""Near-duplicate stories (transforms/stories.py): the assignment rule, without Beam."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pytest

from tests.story_texts import AT, CHANNEL_POST, FOOTER, LONG_OPENING, OTHER, SPONSOR, WIRE, templated_post
from transforms.stories import (
    LEAD_PERMUTATIONS,
    MAX_FILED_MEMBERS,
    MAX_FILED_PER_BAND,
    Fingerprint,
    IndexedArticle,
    MemoryStoryIndex,
    NewArticle,
    assign_stories,
    band_codes,
    fingerprint,
    shingles,
)


def article(article_id: str, title: str, paragraphs: list[str], hours: float = 0) -> NewArticle:
    return NewArticle(
        article_id, AT + timedelta(hours=hours), fingerprint(title, "\n\n".join(paragraphs), "en")
    )


def test_edited_copies_split_across_commits_join_the_first_articles_story() -> None:
    index = MemoryStoryIndex()
    first = assign_stories([article("a", "Central bank raises rates again", WIRE)], index)
    copy = ["By Anna Berg | Metro Wire", *WIRE[:2], *WIRE[3:], FOOTER]  # a paragraph dropped, byline, footer
    teaser = [" ".join(" ".join(WIRE).split()[:40]) + " …"]
    later = assign_stories(
        [
            article("b", "Rates rise again as central bank acts", copy, hours=3),
            article("c", "Central bank raises rates", teaser, hours=1),
        ],
        index,
    )
    assert first[0].story_id == "a" and first[0].near_duplicate_of is None
    assert {a.article_id: a.story_id for a in later} == {"b": "a", "c": "a"}
    assert all(a.story_similarity is not None and a.story_similarity >= 0.5 for a in later)


def test_a_rerun_changes_no_story_id_and_the_order_within_a_commit_does_not_matter() -> None:
    articles = [
        article("x", "Central bank raises rates again", WIRE),
        article("y", "Rates up again", [*WIRE[1:], FOOTER], hours=2),
        article("z", "New footbridge opens", OTHER, hours=1),
    ]
    index = MemoryStoryIndex()
    once = assign_stories(articles, index)
    again = assign_stories(list(reversed(articles)), index)
    fresh = assign_stories(list(reversed(articles)), MemoryStoryIndex())
    stories = {a.article_id: a.story_id for a in once}
    assert stories == {"x": "x", "y": "x", "z": "z"}
    assert {a.article_id: a.story_id for a in again} == stories
    assert {a.article_id: a.story_id for a in fresh} == stories


def test_unrelated_articles_with_one_outlets_footer_are_not_joined() -> None:
    index = MemoryStoryIndex()
    assignments = assign_stories(
        [
            article("p", "Central bank raises rates", [*WIRE[:3], FOOTER]),
            article("q", "Footbridge opens", [*OTHER[:3], FOOTER], 1),
        ],
        index,
    )
    assert [a.story_id for a in assignments] == ["p", "q"]


def test_a_follow_up_sharing_only_the_opening_is_a_story_of_its_own() -> None:
    index = MemoryStoryIndex()
    teaser = [" ".join(" ".join(WIRE).split()[:40])]
    follow_up = [
        WIRE[0],
        *OTHER,
        "Analysts expect the next decision in six weeks, after new figures on prices.",
    ]
    assignments = assign_stories(
        [
            article("s", "Central bank raises rates again", WIRE),
            article("t", "Central bank raises rates again", teaser, hours=1),
            article("f", "Central bank rates: what comes next", follow_up, hours=24),
        ],
        index,
    )
    assert {a.article_id: a.story_id for a in assignments} == {"s": "s", "t": "s", "f": "f"}


def test_matches_reach_no_further_back_than_the_window() -> None:
    index = MemoryStoryIndex()
    assign_stories([article("old", "Central bank raises rates again", WIRE)], index)
    late = assign_stories([article("new", "Central bank raises rates again", WIRE[1:], hours=24 * 8)], index)
    assert late[0].story_id == "new"


def test_scripts_without_spaces_are_shingled_by_characters_and_fingerprints_survive_bytes() -> None:
    assert shingles("中央银行周二加息", "zh")[:2] == ["中央银行周", "央银行周二"]
    print_ = fingerprint(
        "央行加息", "中央银行周二宣布将主要利率上调四分之一个百分点，这是今年第三次加息。", "zh"
    )
    back = Fingerprint.from_bytes(print_.to_bytes())
    assert (back.words, back.lead_words) == (print_.words, print_.lead_words)
    assert (
        (back.body == print_.body).all()
        and (back.lead == print_.lead).all()
        and (back.title == print_.title).all()
    )
    assert (back.text_words, back.middle_words) == (print_.text_words, print_.middle_words)
    assert back.middle is not None and print_.middle is not None and (back.middle == print_.middle).all()
    # 0.8 KB: what crosses a shuffle per article (a version byte, four sizes, 174 + 32 half slots)
    assert len(print_.to_bytes()) == 1 + 4 * 4 + 4 * (126 + 32 + 16) + 2 * 32


def test_a_print_of_the_first_layout_still_reads_and_a_print_of_no_layout_fails_clearly() -> None:
    print_ = fingerprint("Central bank raises rates again", "\n\n".join([*WIRE, FOOTER]), "en")
    signatures = np.concatenate([print_.body, print_.lead, print_.title]).astype("<u4").tobytes()
    committed_before = struct.pack("<II", print_.words, print_.lead_words) + signatures  # 704 bytes
    old = Fingerprint.from_bytes(committed_before)
    assert (old.words, old.lead_words, old.middle, old.has_middle) == (
        print_.words,
        print_.lead_words,
        None,
        False,
    )
    assert (old.body == print_.body).all() and (old.title == print_.title).all()
    assert band_codes(old) == band_codes(print_)  # an old article is still found by a new one
    with pytest.raises(ValueError, match="no layout this version reads"):
        Fingerprint.from_bytes(print_.to_bytes()[:-2])


def test_the_index_finds_the_same_candidates_before_and_after_it_merges_its_keys() -> None:
    prints = [
        fingerprint(f"Story {n}", " ".join(f"word{n}x{k}" for k in range(40)) + " " + " ".join(WIRE), "en")
        for n in range(6)
    ]
    recent, merged = MemoryStoryIndex(), MemoryStoryIndex()
    merged.MERGE_AT = 1  # every add merges into the sorted arrays
    for n, print_ in enumerate(prints):
        for index in (recent, merged):
            index.add(IndexedArticle(f"a{n}", f"a{n}", AT, print_), band_codes(print_))
    query = band_codes(prints[2])
    assert [a.article_id for a in merged.candidates(query)] == [
        a.article_id for a in recent.candidates(query)
    ]
    assert {a.article_id for a in merged.candidates(query)} >= {"a2"}


def test_a_fingerprint_is_the_same_in_another_process_whatever_its_hash_seed() -> None:
    code = (
        "from transforms.stories import fingerprint; "
        "print(fingerprint('Rates up', 'The bank raised its rate on Tuesday.', 'en').to_bytes().hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    here = fingerprint("Rates up", "The bank raised its rate on Tuesday.", "en").to_bytes().hex()
    assert outputs == {here}


def test_a_follow_up_sharing_a_first_paragraph_longer_than_the_lead_is_a_story_of_its_own() -> None:
    index = MemoryStoryIndex()
    source = [LONG_OPENING, *WIRE[1:], FOOTER]
    copy = ["By Anna Berg | Metro Wire", LONG_OPENING, WIRE[1], WIRE[3], WIRE[4], FOOTER]
    follow_up = [LONG_OPENING, *OTHER[:2], FOOTER]  # what it shares is the opening and the outlet's footer
    assignments = assign_stories(
        [
            article("s", "Central bank raises rates again", source),
            article("c", "Rates up again as central bank acts", copy, hours=2),
            article("f", "Central bank rates: what comes next", follow_up, hours=24),
        ],
        index,
    )
    assert {a.article_id: a.story_id for a in assignments} == {"s": "s", "c": "s", "f": "f"}


def test_a_post_that_is_mostly_its_channels_sponsor_block_is_not_joined_to_another_post() -> None:
    index = MemoryStoryIndex()
    assignments = assign_stories(
        [
            article("long", "Drones and lasers?", [*CHANNEL_POST, *SPONSOR, FOOTER]),
            article("short", "IR webcam!", ["9 minute reading time", "Full video here", *SPONSOR, FOOTER], 5),
        ],
        index,
    )
    assert [a.story_id for a in assignments] == ["long", "short"]


def test_a_teaser_is_told_by_its_texts_words_whatever_the_length_of_its_headline() -> None:
    # Some feeds' headline is the article's whole first sentence: with its 45 words of text the teaser
    # is over the teaser length in title and text tokens, yet a teaser it is. A long follow-up under
    # the same running headline contains it, and must not join it for that.
    headline = " ".join(LONG_OPENING.split()[:50])
    opening = " ".join(" ".join(WIRE).split()[:45]) + " …"
    follow_up = [" ".join(WIRE[:3]), *OTHER, *CHANNEL_POST, FOOTER]
    index = MemoryStoryIndex()
    assignments = assign_stories(
        [
            article("s", headline, WIRE),
            article("t", headline, [opening], hours=1),
            article("f", headline, follow_up, hours=24),
        ],
        index,
    )
    assert {a.article_id: a.story_id for a in assignments} == {"s": "s", "t": "s", "f": "f"}


class CountingIndex(MemoryStoryIndex):
    """A memory index that keeps how many candidates each lookup found."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[int] = []

    def filed_under(self, codes: Sequence[int]) -> list[list[IndexedArticle]]:
        filed = super().filed_under(codes)
        self.found.append(len({a.article_id for group in filed for a in group}))
        return filed


def test_a_templated_feed_is_one_story_whose_members_compare_with_a_bounded_few() -> None:
    """At a million articles one feed's 60,000 templated posts made each new member compare with all
    the earlier ones: quadratic, 311 s of a 426 s story phase. Filing stops at a story's bound."""
    posts = [templated_post(n) for n in range(400)]
    articles = [article(f"p{n:03d}", title, text, hours=n / 100) for n, (title, text) in enumerate(posts)]
    index = CountingIndex()
    first = assign_stories(articles[:150], index)
    later = assign_stories(articles[150:], index)  # a second commit finds the story as well
    assert {a.story_id for a in first + later} == {"p000"}
    assert max(index.found) <= min(2 * MAX_FILED_MEMBERS, 100), max(index.found)  # not the 399 before
    filed = [a.article_id for a in first + later if a.filed]
    assert MAX_FILED_MEMBERS <= len(filed) <= 2 * MAX_FILED_MEMBERS and filed[0] == "p000"
    assert all(index.known(a.article_id) is not None for a in articles)  # a rerun still knows each
    again = assign_stories(articles[200:210], index)
    assert [(a.story_id, a.near_duplicate_of) for a in again] == [("p000", None)] * 10


def test_many_stories_sharing_band_keys_cost_each_new_article_a_bounded_few_comparisons() -> None:
    """A template split into a hundred stories still shares its band keys: at 100,000 articles its
    posts had 2,000 candidates each. A band key files at most `MAX_FILED_PER_BAND` in-window articles."""
    rng = np.random.default_rng(20261204)
    lead = rng.integers(0, 2**32, size=LEAD_PERMUTATIONS, dtype=np.uint32)  # every lead band shared
    articles = [
        NewArticle(
            f"s{n:03d}",
            AT + timedelta(minutes=n),
            Fingerprint(
                400,
                60,
                rng.integers(0, 2**32, size=126, dtype=np.uint32),  # bodies unalike: a story each
                lead,
                rng.integers(0, 2**32, size=16, dtype=np.uint32),
            ),
        )
        for n in range(300)
    ]
    index = CountingIndex()
    assignments = assign_stories(articles[:100], index) + assign_stories(articles[100:], index)
    assert [a.story_id for a in assignments] == [a.article_id for a in articles]
    assert max(index.found) <= min(MAX_FILED_PER_BAND, 100), max(index.found)  # not the 299 before
    lead_codes = set(band_codes(articles[0].fingerprint)[-16:])
    under_lead = [a for a in assignments if lead_codes & set(a.filed_codes)]
    assert len(under_lead) == MAX_FILED_PER_BAND and all(len(a.filed_codes) >= 42 for a in assignments)
