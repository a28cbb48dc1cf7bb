"""Paths in an output folder: its layout, one joiner, partition folders, listings and guarded deletes.

**Layout.** `OUTPUT/<dataset>/<key>=<value>/...` holds the datasets; `_staging/`, `_runs/` (manifests,
`_pending/` markers), `_state/` (the version index, the commit lock, feed state) and `_trash/` hold
the store's own files. Every name of that layout is defined here, once.

**One joiner.** `join_path` joins local paths and object-store URLs by one rule: each part after the
first is relative to what precedes it (its leading and trailing `/` are dropped, empty parts are
skipped), so `join_path("gs://b/out", "/abs")` is `gs://b/out/abs`, never `/abs`.

**Partition values** are escaped the way Hive escapes them, so no input can write outside OUTPUT.

**Paths and ids from users are data, never patterns.**
An output path such as `out[1]`, `a*b` or `q?m` is a literal name. Beam's `FileSystems.match`
treats `*`, `?` and `[` as glob characters, and `LocalFileSystem.delete` matches its arguments
the same way, so a store under such a folder would never find its own index nor delete its own
staging. Every listing of a store folder therefore goes through `list_files` (local folders:
`os.scandir`/`os.walk`; object stores: `FileSystems.match` on the folder with its glob characters
escaped as one-character classes, which Beam's `translate_pattern` reads literally), and every
delete of store files goes through `delete_inside`, which refuses any path outside the folder it
is given, whatever the path's `..` or symlinks, and deletes local paths without matching them.

A run id names a folder (`OUTPUT/_staging/<run_id>/`), a manifest and a marker, so it must be
one plain path segment: `validate_run_id` accepts `RUN_ID_PATTERN` only.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import unicodedata
import warnings
from typing import Any

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

STAGING_DIR = "_staging"
RUNS_DIR = "_runs"
PENDING_DIR = "_pending"  # below RUNS_DIR: markers of commits under way, what recovery looks at
STATE_DIR = "_state"
TRASH_DIR = "_trash"
INDEX_DATASET = f"{STATE_DIR}/articles"  # a dataset name: WritePartitionedParquet stages it like the others

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_GLOB_CHARACTERS = "*?["


class RunIdError(ValueError):
    """A run id that is not one safe path segment."""


class DeleteOutsideFolderError(RuntimeError):
    """A delete that would reach outside the folder it was meant for (a bug, never data)."""


def validate_run_id(run_id: str) -> str:
    """`run_id` when it is 1-128 letters, digits, `.`, `_`, `-`, starting with a letter or digit, no `..`."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise RunIdError(
            f"--run-id {run_id!r}: a run id names folders and files in the output, so it must be 1 to 128 "
            "letters, digits, '.', '_' or '-', start with a letter or digit and contain no '..'"
        )
    return run_id


def is_local(path: str) -> bool:
    return "://" not in path


def join_path(head: str, *parts: str) -> str:
    """`head` and `parts` joined by `/`, for local folders and object-store URLs alike.

    Each part is relative to what precedes it: its leading and trailing `/` are dropped and an
    empty part is skipped, so a part that starts with `/` never replaces `head` (as `os.path.join`
    and `posixpath.join` would have it). `head` keeps its scheme and a root `/`.
    """
    pieces = [piece for piece in (part.strip("/") for part in parts) if piece]
    if not pieces:
        return head
    base = head.rstrip("/")
    if not base and head.startswith("/"):
        return "/" + "/".join(pieces)
    return "/".join([base, *pieces])


def escape_pattern(path: str) -> str:
    """`path` as a `FileSystems.match` pattern that matches only itself (`[` -> `[[]`, `*` -> `[*]`)."""
    return "".join(f"[{ch}]" if ch in _GLOB_CHARACTERS else ch for ch in path)


def list_files(folder: str, suffix: str = "", recursive: bool = False) -> list[FileMetadata]:
    """The files in `folder` (and below it, with `recursive`) whose names end with `suffix`, sorted by path.

    A folder that does not exist has no files. The folder's name is never read as a pattern.
    """
    if is_local(folder):
        found = []
        if recursive:
            for parent, _, names in os.walk(folder):
                found += [os.path.join(parent, name) for name in names if name.endswith(suffix)]
        elif os.path.isdir(folder):
            with os.scandir(folder) as entries:
                found = [e.path for e in entries if e.name.endswith(suffix) and e.is_file()]
        listed = []
        for path in found:
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while listing (a concurrent commit or compaction)
                continue
            listed.append(FileMetadata(path, stat.st_size, stat.st_mtime))
        return sorted(listed, key=lambda m: m.path)
    pattern = escape_pattern(folder.rstrip("/")) + ("/**" if recursive else "/*")
    with warnings.catch_warnings():
        # `[[]` is the only literal `[` Beam's translate_pattern knows; Python's re warns about it.
        warnings.filterwarnings("ignore", "Possible nested set", FutureWarning)
        matched = FileSystems.match([pattern])[0].metadata_list
    return sorted((m for m in matched if m.path.endswith(suffix)), key=lambda m: m.path)


def list_children(folder: str) -> list[str]:
    """What `delete_inside(folder, ...)` may remove to empty `folder`: locally its entries (files and
    folders), on object stores every object below it. The folder's name is never read as a pattern."""
    if is_local(folder):
        if not os.path.isdir(folder):
            return []
        with os.scandir(folder) as entries:
            return sorted(entry.path for entry in entries)
    return [m.path for m in list_files(folder, recursive=True)]


def _normal(path: str) -> str:
    """A local path with `..`, `.`, doubled slashes and symlinks resolved."""
    return os.path.realpath(os.path.abspath(path))


def is_inside(folder: str, path: str) -> bool:
    """Whether `path` lies strictly below `folder`.

    Local paths are compared once normalized (symlinks resolved). Object-store keys are compared
    as written: a store does not resolve `..` (the key `out2/../out/x` lies under `out2/`), and a
    client that did would read `out/../x` as `x`, so the part below `folder` may hold no `.` or `..`.
    """
    if is_local(folder) and is_local(path):
        return _normal(path).startswith(_normal(folder).rstrip("/") + "/")
    prefix = folder.rstrip("/") + "/"
    if is_local(folder) or is_local(path) or not path.startswith(prefix):
        return False
    below = path[len(prefix) :].rstrip("/").split("/")
    return below != [""] and not any(segment in (".", "..") for segment in below)


def child(folder: str, name: str) -> str:
    """`folder/name` for a `name` that is exactly one plain segment; raises otherwise."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DeleteOutsideFolderError(f"{name!r} is not one folder name inside {folder}")
    path = join_path(folder, name)
    if not is_inside(folder, path):
        raise DeleteOutsideFolderError(f"{path} is not inside {folder}")
    return path


def delete_inside(folder: str, paths: list[str]) -> None:
    """Delete `paths` (files, or local folders with their contents), each strictly inside `folder`.

    Raises `DeleteOutsideFolderError` before deleting anything when one is not; paths already gone
    are skipped.
    """
    outside = [path for path in paths if not is_inside(folder, path)]
    if outside:
        raise DeleteOutsideFolderError(f"refusing to delete {outside[0]}: it is not inside {folder}")
    remote = []
    for path in paths:
        if not is_local(path):
            remote.append(path)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    if remote:
        FileSystems.delete(remote)


# --- partition folders ------------------------------------------------------------------------

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# The longest folder name most filesystems allow (NAME_MAX, in bytes), for the whole `key=value`.
MAX_PARTITION_SEGMENT_BYTES = 255
_DIGEST_CHARS = 16
# ASCII characters kept as they are; every other ASCII character is %XX-escaped (Hive escapes a
# subset of them). Other characters are kept when they are letters, marks or digits of any script
# (Hive keeps them too): an IDN host stays readable and short. Spaces, controls, format characters
# (bidi overrides) and symbols or punctuation of any script (fullwidth or division slashes) are escaped.
_SAFE_PARTITION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+@,")
_KEPT_CATEGORIES = ("L", "M", "N")


def _escape_character(ch: str) -> str:
    if ch in _SAFE_PARTITION_CHARS or (not ch.isascii() and unicodedata.category(ch)[0] in _KEPT_CATEGORIES):
        return ch
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def escape_partition_value(value: Any, max_bytes: int = MAX_PARTITION_SEGMENT_BYTES) -> str:
    """A partition value that is one safe path segment of at most `max_bytes` UTF-8 bytes.

    Hive-style %XX escapes (which DuckDB's `hive_partitioning` and `pyarrow.dataset` decode), so
    `..`, `/`, `%2F` and empty values all stay inside their dataset folder and read back exactly.
    Only a value whose escaped form is longer than `max_bytes` is cut, at a whole character, and
    ends in `~` and a digest of the value (a literal `~` is escaped, so the two never meet): distinct
    long values stay distinct, but they no longer read back exactly.
    """
    if value is None:
        return NULL_PARTITION
    text = str(value)
    if text == "":
        return NULL_PARTITION
    pieces = [_escape_character(ch) for ch in text]
    if pieces[0] == ".":  # no hidden segments and never "." or ".."
        pieces[0] = "%2E"
    escaped = "".join(pieces)
    if len(escaped.encode("utf-8")) <= max_bytes:
        return escaped
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    budget, head = max_bytes - _DIGEST_CHARS - 1, []
    for piece in pieces:  # whole pieces only: never a %XX or a UTF-8 sequence cut in two
        budget -= len(piece.encode("utf-8"))
        if budget < 0:
            break
        head.append(piece)
    return f"{''.join(head)}~{digest}"


def partition_path(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """`key=value/...` folders, each segment at most `MAX_PARTITION_SEGMENT_BYTES` bytes."""
    segments = []
    for key in keys:
        budget = MAX_PARTITION_SEGMENT_BYTES - len(key.encode("utf-8")) - 1  # the `key=` comes first
        segments.append(f"{key}={escape_partition_value(record.get(key), budget)}")
    return "/".join(segments)


def ensure_parent(path: str) -> None:
    # LocalFileSystem.rename does not create the target's folder (the trap that makes Beam's
    # fileio lose files silently); object stores have no folders to create.
    if "://" not in path:
        parent = posixpath.dirname(path)
        if parent and not FileSystems.exists(parent):
            try:
                FileSystems.mkdirs(parent)
            except OSError:  # created meanwhile by another worker
                if not FileSystems.exists(parent):
                    raise
