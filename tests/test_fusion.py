"""Whole records stay inside one fused step of the in-process runner.

FnApiRunner holds in memory every collection that crosses from one of its stages to another. The
batch pipeline keeps reading, normalizing, detecting, enriching and staging articles in one stage, so
that only compact records (ref files, staged-file records, fetch rows, dead letters) cross: a Flatten of
two readers or a side input between enrich and write would split it and hold every article (the
39 KB per article that benchmarks/RESULTS.md measured before).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from pipeline.build import build_batch
from pipeline.config import load_settings
from tests.conftest import PROJECT
from transforms.schema import RunInfo

RECORD_STEPS = (
    "ReadSources/ReadAndParse",
    "ProcessArticles/NormalizeArticles/",
    "ProcessArticles/IdentifyArticles/",
    "ProcessArticles/MarkStoredRevisions/",
    "ProcessArticles/DetectLanguage/",
    "ProcessArticles/EnrichArticles/",
    "WriteArticles/StageParquetFiles",
)
SINK = "beam:runner:sink:v1"


def batch_stages(tmp_path: Path) -> list[tuple[set[str], set[str]]]:
    """(transform names, names of the collections it hands to other stages) per runner stage."""
    settings = load_settings(
        PROJECT / "configs" / "local.yaml",
        {"inputs": [str(PROJECT / "seeds")], "output": str(tmp_path / "out"), "feeds": []},
    )
    p = Pipeline(runner=FnApiRunner())
    build_batch(p, settings, RunInfo("fusion", datetime(2026, 11, 29, tzinfo=UTC), "test"))
    _context, stages = FnApiRunner().create_stages(p.to_runner_api())
    return [
        (
            {t.unique_name for t in stage.transforms},
            {t.unique_name for t in stage.transforms if t.spec.urn == SINK},
        )
        for stage in stages
    ]


def test_articles_are_read_enriched_and_staged_in_one_stage(tmp_path: Path) -> None:
    stages = batch_stages(tmp_path)
    holding = [names for names, _ in stages if any(n.startswith(RECORD_STEPS[0]) for n in names)]
    assert len(holding) == 1
    for step in RECORD_STEPS:
        assert any(name.startswith(step) for name in holding[0]), f"{step} runs in another stage"


def test_only_compact_collections_leave_the_record_stage(tmp_path: Path) -> None:
    _names, sinks = next(
        s for s in batch_stages(tmp_path) if any(n.startswith(RECORD_STEPS[0]) for n in s[0])
    )
    leaving = {sink.split("/Write")[0] for sink in sinks}
    assert leaving <= {
        "CountPerSource/KeyedFetchRows",  # the fetch rows, keyed in this stage
        "CountPerSource/AllCounts",  # their keys, one small tuple per row
        "ReadSources/AllReadDeadLetters",
        "ReadSources/AllFeedStates",
        "ProcessArticles/AllDeadLetters",
        "AllDeadLetters",
        "DeduplicateArticles/GatherRefFiles/CombinePerKey/Group",
        "DeduplicateArticles/EditsPerFile/CoGroupByKeyImpl/Flatten",
        "AllStagedFiles",  # the names of the page_fetches files written in the record stage
    }, leaving


def test_no_collection_of_one_element_per_article_leaves_the_record_stage(tmp_path: Path) -> None:
    """The refs go to staging files, and only the files' names to the runner (flat memory).

    A GroupByKey of refs by article id held about 1 KB per article in the launcher and sent every
    worker a side input of all the run's ids: memory grew with the run (benchmarks/RESULTS.md).
    """
    _names, sinks = next(
        s for s in batch_stages(tmp_path) if any(n.startswith(RECORD_STEPS[0]) for n in s[0])
    )
    leaving = {sink.split("/Write")[0] for sink in sinks}
    assert "DeduplicateArticles/GroupById" not in leaving
    assert "DeduplicateArticles/GatherRefFiles/CombinePerKey/Group" in leaving  # one (path, count) per file
    every_stage = {name for names, _ in batch_stages(tmp_path) for name in names}
    assert not any("ReadStoredVersions" in name or name.endswith("/Ids") for name in every_stage)


def test_fetch_rows_are_completed_and_staged_in_one_stage(tmp_path: Path) -> None:
    """The fetch rows are held by the launcher once (from the read until their counts are known),
    not again after they get their counts: a Flatten or a grouping of the completed rows was one
    more copy of every input's row in the launcher (the launcher's peak, measured at 300k articles)."""
    stages = batch_stages(tmp_path)
    completing = [
        names for names, _ in stages if any(n.startswith("CountPerSource/CompleteRows") for n in names)
    ]
    assert len(completing) == 1
    for step in (
        "StampFetchRows",
        "WriteFeedFetches/StageParquetFiles",
        "CountUnaccounted/UnaccountedPerInput",
    ):
        assert any(name.startswith(step) for name in completing[0]), f"{step} runs in another stage"
    every_stage = {name for names, _ in stages for name in names}
    assert not any(
        name.startswith("CountPerSource/") and "Group" in name and "SumPerSource" not in name
        for name in every_stage
    )


def test_fetch_rows_are_keyed_in_the_stages_that_make_them(tmp_path: Path) -> None:
    """No stage runs between the read and `CompleteRows` for the fetch rows alone: keying a Flatten of
    them was one, and the local runner sent every input's row to a worker and back for it at the end
    of the read (a transient of the launcher and both workers, measured at 300k articles)."""
    stages = batch_stages(tmp_path)
    for maker in ("ReadSources/ExpandPatterns", "ReadSources/PlanReads", "ReadSources/ReadAndParse"):
        making = [names for names, _ in stages if any(n.startswith(maker) for n in names)]
        assert len(making) == 1
        assert any(n.startswith("CountPerSource/KeyFetchRows") for n in making[0]), maker
        assert any(n.startswith("CountPerSource/RowKeysPerSource") for n in making[0]), maker
    touching = [
        names
        for names, _ in stages
        if any(
            n.startswith(("CountPerSource/KeyFetchRows", "CountPerSource/KeyedFetchRows/Read")) for n in names
        )
    ]
    assert len(touching) == 4  # the three makers and the stage that completes the rows


def test_the_commit_gathers_staged_files_after_dropping_their_source_counts(tmp_path: Path) -> None:
    """`CommitRun` strips `rows_per_source` in the stage that feeds its one gathered list, so the
    list of every staged file of the run never carries the per-source counts."""
    stages = batch_stages(tmp_path)
    dropping = [names for names, _ in stages if "CommitRun/DropSourceCounts" in names]
    assert len(dropping) == 1
    assert any(name.startswith("CommitRun/GatherStagedFiles") for name in dropping[0])
