"""Near-duplicate stories (transforms/stories.py): the assignment rule, without Beam."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from tests.story_texts import AT, FOOTER, OTHER, WIRE
from transforms.stories import (
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
    assert len(print_.to_bytes()) == 8 + 4 * (126 + 32 + 16)  # 0.7 KB: what crosses a shuffle per article


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
