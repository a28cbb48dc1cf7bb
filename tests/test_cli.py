"""The command line as a new user meets it: help and version, typos, exit codes, one-line errors, progress.

Runs are real (`main()` in process, or `python -m pipeline` in a subprocess, under a pseudo-terminal
for the progress bar) on small inputs written here or the shipped seeds; results are read back
from the Parquet files with DuckDB.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from pipeline.cli import (
    COMMANDS,
    EXIT_NOTHING_READ,
    EXIT_TOO_MANY_FAILED,
    FailedInputsLimit,
    command_of,
    configure_logging,
    exit_status,
    main,
    parse_arguments,
)
from pipeline.commands import build_parser
from pipeline.run import committed_counts
from tests.conftest import PROJECT, SEEDS, require, sql
from tests.feedserver import FeedServer, Reply

GOOD_FEED = SEEDS / "feeds" / "rss2_en.xml"
ENV = {**os.environ, "PYTHONPATH": str(PROJECT)}


def python(code: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=ENV
    )


def fetch_rows(output: Path) -> list[tuple[str, str, str | None]]:
    files = [str(p) for p in (output / "feed_fetches").glob("**/*.parquet")]
    query = f"SELECT source, outcome, message FROM read_parquet({files!r}) ORDER BY source"
    return [(str(s), str(o), m) for s, o, m in sql(query).fetchall()]


def error_lines(captured: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in captured.readouterr().err.splitlines() if line.strip()]


# --- help, version, descriptions -----------------------------------------------------------------


def test_help_and_version_answer_without_importing_beam() -> None:
    probe = """
import contextlib, io, sys
from pipeline.cli import main
for argv in (["--help"], ["run", "--help"], ["compact", "--help"], ["prune", "--help"], ["--version"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
    print("=====", " ".join(argv)); print(out.getvalue())
print("BEAM IMPORTED:", "apache_beam" in sys.modules)
"""
    completed = python(probe)
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "BEAM IMPORTED: False" in out
    sections = dict(re.findall(r"===== (.+?)\n(.*?)(?======|BEAM IMPORTED)", out, re.S))
    assert (
        "exit codes:" in sections["--help"] and "4  committed, but every input failed" in sections["--help"]
    )
    assert "--max-failed-inputs" in sections["run --help"] and "exit codes:" in sections["run --help"]
    assert "Merge the small files of each partition" in sections["compact --help"]
    assert "Remove the `ingest_date` partitions older than" in sections["prune --help"]
    assert re.fullmatch(
        r"newsbeam \S+ \(Apache Beam 2\.62\.0, Python 3\.\d+\.\d+\)\n+", sections["--version"]
    )


# --- flags neither newsbeam nor Beam knows ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--ouput", "x"], "unknown flag --ouput; did you mean --output?"),
        (["--direct_num_workrs=2"], "unknown flag --direct_num_workrs; did you mean --direct_num_workers?"),
        (["--colour"], "unknown flag --colour (flags are newsbeam's"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_unknown_flags_are_refused_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    output = tmp_path / "out"
    assert main(["run", "--input", str(GOOD_FEED), "--output", str(output), *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not output.exists() and not (PROJECT / "x").exists()  # nothing ran


def test_unknown_flags_of_maintenance_commands_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compact", "--output", str(tmp_path), "--direct_num_workers=2"]) == 2
    assert "unknown arguments --direct_num_workers=2" in capsys.readouterr().err


# --- one line instead of a traceback ----------------------------------------------------------------


def test_a_runner_typo_is_one_line_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--input", str(GOOD_FEED), "--output", str(tmp_path / "out"), "--runner", "sparkk"])
    assert code == 2
    (line,) = error_lines(capsys)
    # The typo is the flag's, not the shipped config file's.
    assert line.startswith("newsbeam: configuration error: --runner: unknown runner 'sparkk'"), line
    assert "did you mean 'spark'?" in line and "local.yaml" not in line


def test_a_bad_input_flag_is_named_as_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.xml"
    assert main(["run", "--input", str(missing), "--output", str(tmp_path / "out")]) == 2
    (line,) = error_lines(capsys)
    assert line == f"newsbeam: configuration error: --input: input path '{missing}' does not exist", line


def test_an_output_path_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "taken"
    output.write_text("not a folder\n", encoding="utf-8")
    assert main(["run", "--input", str(GOOD_FEED), "--output", str(output)]) == 2
    (line,) = error_lines(capsys)
    assert f"output: '{output}' is a file, not a folder" in line
    assert output.read_text(encoding="utf-8") == "not a folder\n"


def test_a_run_that_cannot_commit_exits_1_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(GOOD_FEED), "--output", f"{blocker}/out"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert completed.returncode == 1
    lines = [line for line in completed.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert lines[0].startswith("newsbeam run: failed, nothing committed: NotADirectoryError")


def test_launch_dry_run_without_the_gcp_extra_is_one_line() -> None:
    # `apitools` is what the gcp extra brings for Beam's Dataflow client: hide it as if not installed.
    completed = python(
        "import sys; sys.modules['apitools'] = None\n"
        "from pipeline.cli import main\n"
        "raise SystemExit(main(['launch', '--dry-run']))"
    )
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.strip() and "Warning" not in line]
    lines = [line for line in lines if not line.startswith("  warnings.warn")]
    assert lines == [
        "newsbeam: configuration error: launch: the Dataflow runner needs Beam's gcp extra: "
        "pip install 'newsbeam[gcp]' (in a checkout: make cluster-deps)"
    ], completed.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["prune", "--older-than", "9999999d"], "--older-than: the duration '9999999d' is too long"),
        (
            ["prune", "--older-than", "90days"],
            "--older-than: '90days' is not a duration (unknown unit 'days')",
        ),
        (["compact", "--grace", "soon"], "--grace: 'soon' is not a duration"),
    ],
)
def test_maintenance_durations_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main([*argv, "--output", str(tmp_path)]) == 2
    (line,) = error_lines(capsys)
    assert expected in line, line


def test_a_zero_grace_is_a_duration_like_any_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prune", "--older-than", "90d", "--grace", "0s", "--output", str(tmp_path)]) == 0
    assert main(["compact", "--grace", "0s", "--output", str(tmp_path)]) == 0


@pytest.mark.parametrize("interval", ["0s", "0", "0.5"])
def test_a_progress_interval_under_a_second_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], interval: str
) -> None:
    """`0s` used to log a progress line on every turn of a busy loop: 150,000 lines in a 3 s run."""
    output = tmp_path / "out"
    argv = ["run", "--input", str(GOOD_FEED), "--output", str(output), "--progress-interval", interval]
    assert main(argv) == 2
    (line,) = error_lines(capsys)
    assert "--progress-interval" in line and "at least 1s" in line, line
    assert not output.exists()  # nothing ran


# --- what a run reads, and its exit status -----------------------------------------------------------


def test_opml_without_config_reads_only_the_list_and_names_the_private_host_setting(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = feed_server.route("/feed.xml", Reply(body=GOOD_FEED.read_bytes()))
    opml = tmp_path / "list.opml"
    opml.write_text(
        f'<?xml version="1.0"?><opml version="2.0"><body><outline text="One" xmlUrl="{url}"/></body></opml>',
        encoding="utf-8",
    )
    output = tmp_path / "out"
    code = main(["run", "--opml", str(opml), "--output", str(output)])
    rows = fetch_rows(output)
    assert [source for source, _, _ in rows] == [url]  # no shipped seed mixed in
    ((_, outcome, message),) = rows
    assert outcome == "error" and "fetch.allow_private_hosts: true" in (message or ""), message
    assert code == EXIT_NOTHING_READ  # its one input failed: nothing at all was read
    assert (
        "every input failed (1 of 1): nothing at all could be read (exit code 4)" in capsys.readouterr().err
    )


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """One good feed and one file that is no feed, with -v and --max-failed-inputs 0."""
    inputs = tmp_path_factory.mktemp("inputs")
    (inputs / "words.xml").write_text("just some words, neither XML nor a feed\n", encoding="utf-8")
    output = tmp_path_factory.mktemp("mixed") / "out"
    argv = ["run", "--input", str(GOOD_FEED), str(inputs / "words.xml"), "--output", str(output)]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            *argv,
            "-v",
            "--max-failed-inputs",
            "0",
            "--progress-interval",
            "1s",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    return output, completed.returncode, completed.stdout, completed.stderr


def test_too_many_failed_inputs_is_exit_5_after_the_commit(mixed_run: tuple[Path, int, str, str]) -> None:
    output, code, stdout, stderr = mixed_run
    assert code == EXIT_TOO_MANY_FAILED, stderr
    assert "1 of 2 inputs failed, more than --max-failed-inputs allows (exit code 5)" in stderr
    assert re.match(r"newsbeam run \S+: committed in [\d.]+s$", stdout.splitlines()[0])
    (manifest_file,) = (output / "_runs").glob("*.json")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    counts = committed_counts(manifest, str(output))
    assert (counts.inputs, counts.failed_inputs) == (2, 1)
    assert exit_status(counts, FailedInputsLimit(most=1)) == (0, None)
    assert exit_status(counts, FailedInputsLimit(share=0.5)) == (0, None)
    assert exit_status(counts, FailedInputsLimit(share=0.4))[0] == EXIT_TOO_MANY_FAILED
    assert exit_status(counts, None) == (0, None)


def test_the_report_explains_beams_counters_apart_from_the_summary(
    mixed_run: tuple[Path, int, str, str],
) -> None:
    _, _, stdout, _ = mixed_run
    assert "beam metrics:" not in stdout  # the old one-line dump of every counter
    summary, _, counters = stdout.partition("Beam's per-step counters")
    assert "articles written:" in summary and "write." not in summary
    assert "before de-duplication and commit" in counters
    assert re.search(r"^    read\.inputs = 2$", counters, re.M), counters


def test_progress_is_logged_when_not_on_a_terminal(mixed_run: tuple[Path, int, str, str]) -> None:
    _, _, _, stderr = mixed_run
    lines = [line for line in stderr.splitlines() if "newsbeam.progress" in line]
    assert lines, stderr
    assert re.search(r"2/2 inputs read, \d+ articles processed, 1 dead letters, \d+s elapsed$", lines[-1])
    assert re.search(r"writing into .*/out$", stderr, re.M)  # it says where it writes


@pytest.mark.parametrize("placement", ["after the command", "before the command"])
def test_a_quiet_run_prints_one_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], placement: str
) -> None:
    given = ["--input", str(GOOD_FEED), "--output", str(tmp_path / "out")]
    argv = ["run", "-q", *given] if placement == "after the command" else ["-q", "run", *given]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "committed" in out


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """Under a pseudo-terminal the run shows a tqdm bar with inputs of total, articles and dead letters."""
    inputs = [str(SEEDS / "feeds" / name) for name in ("rss2_en.xml", "atom_de.xml", "rdf_fr.rdf")]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", *inputs, "--output", str(tmp_path / "out")],
        cwd=PROJECT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=ENV,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=60) == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert re.search(r"newsbeam run \S+: +\d+%\|.*\| 3/3 \[", text), text
    assert re.search(r"\d+ articles, 0 dead letters", text), text


@pytest.mark.parametrize(
    ("flags", "ours", "beams"),
    [
        ([], logging.INFO, logging.WARNING),  # newsbeam's progress and notes; Beam only when it warns
        (["-q"], logging.WARNING, logging.ERROR),
        (["-v"], logging.DEBUG, logging.WARNING),
        (["-vv"], logging.DEBUG, logging.INFO),
        (["--log-level", "error"], logging.ERROR, logging.ERROR),
    ],
)
@pytest.mark.parametrize("before_the_command", [False, True])
def test_verbosity_flags_set_the_log_levels(
    flags: list[str], ours: int, beams: int, before_the_command: bool
) -> None:
    """`newsbeam -v run` is `newsbeam run -v`, as in git, pip or dbt."""
    root, newsbeam = logging.getLogger(), logging.getLogger("newsbeam")
    saved = root.level, newsbeam.level
    try:
        args, extra = parse_arguments([*flags, "run"] if before_the_command else ["run", *flags])
        assert extra == []
        configure_logging(args)
        assert (newsbeam.level, root.level) == (ours, beams)
    finally:
        root.setLevel(saved[0])
        newsbeam.setLevel(saved[1])


def test_verbosity_flags_before_and_after_the_command_add_up() -> None:
    args, _ = parse_arguments(["-v", "run", "-v"])
    assert args.verbose == 2
    args, _ = parse_arguments(["--log-level", "debug", "prune", "--older-than", "9d"])
    assert args.log_level == "DEBUG"


def test_the_local_prism_and_flink_state_are_found_from_any_directory(tmp_path: Path) -> None:
    """`make prism` and `make cluster-up` put them in the checkout; a run from elsewhere finds them there."""
    require((PROJECT / ".prism" / "bin" / "prism").is_file(), "the Prism binary (make prism)")
    env = {
        key: value for key, value in ENV.items() if key not in ("NEWSBEAM_PRISM", "NEWSBEAM_FLINK_CLUSTER")
    }
    code = "from pipeline import runners; print(runners.prism_binary()); print(runners.flink_state_path())"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    prism, flink_state = done.stdout.split()
    assert Path(prism).resolve() == (PROJECT / ".prism" / "bin" / "prism").resolve()
    assert Path(flink_state) == PROJECT / ".cluster" / "flink" / "cluster.json"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["stream", "--duration", "5s"], "stream"),
        (["-v", "stream"], "stream"),  # stream must keep the normal exit (it stops Prism) after -v too
        (["--log-level", "debug", "-q", "stream"], "stream"),
        (["run", "--input", "stream"], "run"),
        (["--version"], None),
    ],
)
def test_the_command_is_found_after_leading_logging_flags(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


def test_the_command_names_are_the_parsers() -> None:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(COMMANDS)
