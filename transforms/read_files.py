"""File retrieval and input expansion: patterns to files, files to the outputs of `read_file`.

Local patterns are expanded by a walk that always ends: symlinks are followed, but each folder
is entered once (by device and inode), so links that loop cannot make it run for ever. A path
that is no regular file (a FIFO, a socket, a device) is never opened for reading, where it could
block for ever: it gets a `skipped` row saying what it is. A file name that is not UTF-8 travels
as text with each undecodable byte written `\\xNN` (`path_as_text`), the form every dataset shows;
the file is opened under its real name (`path_from_text`). Object-store URLs (gs://, s3://, ...)
are listed and read through Beam's FileSystems. Files are read in shards of about equal bytes.
"""

from __future__ import annotations

import fnmatch
import glob
import heapq
import os
import re
import stat
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, cast

from apache_beam.io.filesystems import FileSystems

from transforms.io.paths import escape_pattern
from transforms.parse import ParsedInput, is_http_url, parse_input, parse_seed_file
from transforms.read_outputs import ms_since, parsed_to_outputs
from transforms.read_settings import ReadSettings
from transforms.schema import SOURCE_KEY, Outcome, SourceType

# What a folder given as input contributes: seed files and feed files (the benchmark corpus
# has feeds without an extension), never READMEs or hidden files.
SEED_EXTENSIONS = (".txt",)
FEED_EXTENSIONS = (".xml", ".rss", ".atom", ".rdf", ".json", ".feed", ".cdf")


def source_type_of(path: str) -> SourceType:
    return SourceType.SEED_FILE if path.lower().endswith(SEED_EXTENSIONS) else SourceType.FEED


def _wanted_in_folder(path: str) -> bool:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if name.startswith((".", "_")):
        return False
    lowered = name.lower()
    return lowered.endswith(SEED_EXTENSIONS + FEED_EXTENSIONS) or "." not in name


# --- file names as text ---------------------------------------------------------------------------
#
# Linux file names are bytes; Python hands out the undecodable ones with lone surrogates
# (surrogateescape), which Beam's coders and Arrow reject. Inside the pipeline a local path is text
# in which each undecodable byte is written `\xNN` (Python's backslashreplace) and a backslash that
# would read as such an escape is written `\x5c`, so the text maps back to exactly one name.
# Valid UTF-8 names (nearly all) are their own text.

_BYTE_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_LOOKS_ESCAPED = re.compile(rb"\\(?=x[0-9a-fA-F]{2})")


def path_as_text(path: str) -> str:
    """A local path (as `os` gives it) as valid UTF-8 text: the form `source` shows."""
    raw = os.fsencode(path)
    if b"\\x" in raw:
        raw = _LOOKS_ESCAPED.sub(rb"\\x5c", raw)
    return raw.decode("utf-8", "backslashreplace")


def pattern_as_text(pattern: str) -> str:
    """An input pattern as the pipeline carries it: a local path as `path_as_text`, a URL unchanged."""
    return pattern if "://" in pattern else path_as_text(pattern)


def path_from_text(text: str) -> str:
    """The local path `path_as_text` made `text` from (the name to open)."""
    if "\\x" not in text:
        return text
    parts, last = [], 0
    for match in _BYTE_ESCAPE.finditer(text):
        parts += [text[last : match.start()].encode("utf-8"), bytes([int(match.group(1), 16)])]
        last = match.end()
    parts.append(text[last:].encode("utf-8"))
    return os.fsdecode(b"".join(parts))


def source_key_of(path: str) -> str:
    """What identifies a file in ids: its resolved path (absolute, symlinks followed), as text."""
    if "://" in path:
        return path
    return path_as_text(os.path.realpath(path_from_text(path)))


# --- pattern expansion ------------------------------------------------------------------------------


def expand_pattern(pattern: str) -> Iterator[str]:
    """The files (or the URL) an input pattern names, in a stable order."""
    if is_http_url(pattern):
        yield pattern
        return
    if "://" in pattern:
        yield from _expand_remote(pattern)
        return
    local = path_from_text(pattern)
    if glob.has_magic(local):
        paths = sorted(set(_local_glob(local)))
    elif os.path.lexists(local) and not os.path.isdir(local):
        paths = [local]
    else:
        paths = sorted(p for p in _walk(local, ["**"], 0, set()) if _wanted_in_folder(p))
    if not paths:
        raise FileNotFoundError(f"no input matches {pattern}")
    yield from (path_as_text(path) for path in paths)


def _expand_remote(pattern: str) -> Iterator[str]:
    is_glob = any(ch in pattern for ch in "*?[")
    if not is_glob and not pattern.endswith("/") and FileSystems.exists(pattern):
        yield pattern
        return
    query = pattern if is_glob else FileSystems.join(pattern.rstrip("/"), "**")
    paths = sorted(m.path for m in FileSystems.match([query])[0].metadata_list)
    if not is_glob:
        paths = [p for p in paths if _wanted_in_folder(p)]
    if not paths:
        raise FileNotFoundError(f"no input matches {pattern}")
    yield from paths


def _local_glob(pattern: str) -> Iterator[str]:
    """Python's glob (`*`, `?`, `[...]` within a name, `**` across folders, hidden names only when
    the pattern spells their dot), but over a walk that ends whatever the symlinks.

    Python's own glob follows symlinked folders without remembering them: a link to `.` makes
    `**` list paths until the kernel's 40-link limit, and two such links 2^40 of them. Dangling
    links and other non-folders are listed (reading them then fails into a dead letter or a
    `skipped` row), folders are not.
    """
    absolute = pattern.startswith("/")
    parts = [part for part in pattern.split("/") if part]
    yield from _walk("/" if absolute else "", parts, 0, set())


def _walk(folder: str, parts: list[str], at: int, visited: set[tuple[int, int, int]]) -> Iterator[str]:
    """The non-folders under `folder` matching `parts[at:]`.

    `visited` holds (device, inode, position in the pattern) of every folder a `**` entered: each
    folder is walked once per position, so the walk is bounded by folders x pattern parts.
    """
    part, last = parts[at], at == len(parts) - 1
    if part == "**":
        identity = _folder_identity(folder)
        if identity is None or (*identity, at) in visited:
            return
        visited.add((*identity, at))
        if not last:
            yield from _walk(folder, parts, at + 1, visited)
        for name, path, is_folder in _entries(folder):
            if name.startswith("."):
                continue
            if is_folder:
                yield from _walk(path, parts, at, visited)
            elif last:
                yield path
    elif glob.has_magic(part):
        for name, path, is_folder in _entries(folder):
            if name.startswith(".") and not part.startswith("."):
                continue
            if not fnmatch.fnmatchcase(name, part):
                continue
            if last and not is_folder:
                yield path
            elif not last and is_folder:
                yield from _walk(path, parts, at + 1, visited)
    else:
        path = os.path.join(folder, part) if folder else part
        if last:
            if os.path.lexists(path) and not os.path.isdir(path):
                yield path
        elif os.path.isdir(path):
            yield from _walk(path, parts, at + 1, visited)


def _folder_identity(folder: str) -> tuple[int, int] | None:
    try:
        info = os.stat(folder or ".")
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _entries(folder: str) -> list[tuple[str, str, bool]]:
    """(name, path, is a folder, symlinks followed) of a folder's entries, by name; none if unreadable."""
    try:
        with os.scandir(folder or ".") as scan:
            entries = [
                (e.name, os.path.join(folder, e.name) if folder else e.name, _is_folder_entry(e))
                for e in scan
            ]
    except OSError:
        return []
    return sorted(entries)


def _is_folder_entry(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for a dangling or looping link
    except OSError:
        return False


class NotRegularFileError(OSError):
    """A path that names no regular file: reading a FIFO or a device may block for ever."""


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _kind_of(mode: int) -> str | None:
    """What a file mode names when it is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _read_local(path: str, cap: int) -> bytes:
    """At most `cap` bytes of a local regular file; `NotRegularFileError` for anything else.

    The kind is checked before opening and again on the open file (the path may change in
    between); the open itself never waits, even for a FIFO nobody writes to.
    """
    kind = _kind_of(os.stat(path).st_mode)
    if kind is None:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as stream:
            kind = _kind_of(os.fstat(descriptor).st_mode)
            if kind is None:
                # Left non-blocking: a disk file reads the same either way, and a pseudo-file that
                # claims to be regular but blocks (/proc/kmsg, reached through a symlink to /) ends
                # as an unreadable input instead of hanging the run.
                return stream.read(cap)
    raise NotRegularFileError(f"{kind}, not a regular file: not read")


def read_file(path: str, settings: ReadSettings, started_at: datetime, clock: float) -> Iterator[Any]:
    """The outputs of one feed or seed file (or object-store URL): what `parsed_to_outputs` gives.

    `path` is as `expand_pattern` gives it (for a local file, `path_as_text`); it is the entries' and
    the rows' `source`. A path that is no regular file gives a `skipped` row and nothing else.
    """
    source_type = source_type_of(path)
    try:
        # Read one byte past the cap instead of asking for the size first: one call less per file on
        # object stores, and a file that grows after its listing is still capped.
        if "://" in path:
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                body = stream.read(settings.max_file_bytes + 1)
        else:
            body = _read_local(path_from_text(path), settings.max_file_bytes + 1)
        if len(body) > settings.max_file_bytes:
            raise ValueError(f"the file is larger than the {settings.max_file_bytes}-byte cap")
    except NotRegularFileError as error:
        parsed = ParsedInput(Outcome.SKIPPED, error_type="not_a_regular_file", message=f"{path} is {error}")
        yield from parsed_to_outputs(path, source_type, parsed, None, started_at, ms_since(clock))
        return
    except Exception as error:
        parsed = ParsedInput(
            Outcome.ERROR, error_type="unreadable", message=f"{type(error).__name__}: {_strip_path(error)}"
        )
        yield from parsed_to_outputs(path, source_type, parsed, None, started_at, ms_since(clock))
        return
    if source_type == SourceType.SEED_FILE:
        parsed = parse_seed_file(body, path)
    else:
        parsed = parse_input(body, path, max_entries=settings.max_entries_per_feed)
    key = source_key_of(path)
    if key != path:
        for entry in parsed.entries:
            cast(dict[str, Any], entry)[SOURCE_KEY] = key
    yield from parsed_to_outputs(path, source_type, parsed, body, started_at, ms_since(clock))


def _strip_path(error: Exception) -> str:
    """An error's message; for an OS error without the path, which `source` already shows as text."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


# Reads are grouped by key before they run: files in shards of about equal bytes, feed URLs under
# their host's key (the politeness limit). One DoFn reads both, so that the entries of files and
# feeds come out of a single step, fused with the stages after it: a Flatten of two readers would
# make the in-process runner hold every raw entry in memory between them. The runners hand whole
# keys to workers (the in-process one deals them out in turn), so equal shards keep the workers
# equally busy; a key per file left one worker idle for a tenth of the run on the benchmark corpus.
FILE_KEY = "file"
HOST_KEY = "host"
FILES = "files"
MIN_FILE_SHARDS = 64  # enough keys for the workers of a large cluster
FILES_PER_SHARD = 16


def file_size(path: str) -> int:
    """A file's size in bytes; 0 when it cannot be had (reading the file then fails into a dead letter)."""
    try:
        if "://" not in path:
            return os.path.getsize(path_from_text(path))
        return int(FileSystems.match([escape_pattern(path)])[0].metadata_list[0].size_in_bytes)
    except Exception:
        return 0


def balanced_shards(files: Iterable[tuple[str, int]]) -> list[list[str]]:
    """Paths in shards of about equal total size: largest first, each into the lightest shard."""
    ordered = sorted(files, key=lambda item: (-item[1], item[0]))
    count = min(len(ordered), max(MIN_FILE_SHARDS, len(ordered) // FILES_PER_SHARD))
    shards: list[list[str]] = [[] for _ in range(count)]
    lightest = [(0, index) for index in range(count)]
    for path, size in ordered:
        load, index = heapq.heappop(lightest)
        shards[index].append(path)
        heapq.heappush(lightest, (load + size, index))
    return shards


def keyed_shards(files: list[tuple[str, int]]) -> Iterator[tuple[tuple[str, str], tuple[str, None]]]:
    for index, shard in enumerate(balanced_shards(files)):
        for path in shard:
            yield (FILE_KEY, str(index)), (path, None)
