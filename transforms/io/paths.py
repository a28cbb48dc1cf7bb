"""Paths and ids from users are data, never patterns: run ids, folder listings and guarded deletes.

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

import os
import re
import shutil
import warnings

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

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
    path = f"{folder.rstrip('/')}/{name}" if not is_local(folder) else os.path.join(folder, name)
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
