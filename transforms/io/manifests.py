"""Run manifests and pending markers: where they live, written atomically, read back.

A commit's decision is its manifest `OUTPUT/_runs/<run_id>.json` (status `committing`, then
`committed`) beside a pending marker `OUTPUT/_runs/_pending/<run_id>`; transforms/io/commit.py
carries out the protocol, the index check (transforms/io/versions.py) reads the committed ones.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.io.paths import PENDING_DIR, RUNS_DIR, delete_inside, ensure_parent, join_path, list_files


def manifest_path(output: str, run_id: str) -> str:
    return join_path(output, RUNS_DIR, f"{run_id}.json")


def pending_folder(output: str) -> str:
    return join_path(output, RUNS_DIR, PENDING_DIR)


def pending_path(output: str, run_id: str) -> str:
    return join_path(pending_folder(output), run_id)


def write_json_atomically(path: str, document: dict[str, Any]) -> None:
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    ensure_parent(temporary)
    with FileSystems.create(temporary) as stream:
        stream.write(json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8"))
    if "://" in path:
        if FileSystems.exists(path):
            delete_inside(posixpath.dirname(path), [path])  # object stores cannot rename over an object
        FileSystems.rename([temporary], [path])
    else:
        os.replace(temporary, path)  # atomic on POSIX: readers see the old or the new manifest


def read_json(path: str) -> dict[str, Any]:
    with FileSystems.open(path) as stream:
        document: dict[str, Any] = json.loads(stream.read().decode("utf-8"))
        return document


def committed_manifests(output: str) -> list[dict[str, Any]]:
    """Every committed manifest under `OUTPUT/_runs/`, in commit order (commits are serialized)."""
    documents = []
    for listed in list_files(join_path(output, RUNS_DIR), ".json"):
        document = read_json(listed.path)
        if document.get("status") == "committed":
            documents.append(document | {"manifest_path": listed.path})
    return sorted(
        documents, key=lambda d: str(d.get("commit_started_at") or d.get("ended_at") or d.get("started_at"))
    )
