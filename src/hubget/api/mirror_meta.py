"""What a mirror learnt from its upstream hub, on disk so that a restart keeps it:

    {meta}/{models--org--name}/revisions.json       {"main": {"commit": "<40 hex>", "checked": <time>}}
    {meta}/{models--org--name}/repo.json            {"access": "public" | "gated" | "private"}
    {meta}/{models--org--name}/trees/{commit}.json  {"seen": <time>, "files": [{path, size, sha256, ...}]}

A branch or tag is asked upstream again once ``checked`` is older than the mirror's TTL; a commit's
listing never changes, so it is kept for good. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubget.errors import UnsafePathError
from hubget.layouts.fsutil import atomic_write_text
from hubget.layouts.hf_cache import repo_folder_name
from hubget.paths import safe_relpath

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HASH = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
ACCESS_KINDS = ("public", "gated", "private")
KEPT_TREES = 64  # listings kept in memory besides on disk


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int | None
    sha256: str | None
    git_sha1: str | None


@dataclass(frozen=True)
class Tree:
    files: tuple[StoredFile, ...]
    seen: float  # when the mirror first listed this commit (its stand-in for the commit date)


class MirrorMeta:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._revisions: dict[str, dict[str, dict[str, Any]]] = {}
        self._trees: OrderedDict[tuple[str, str], Tree] = OrderedDict()
        self._access: dict[str, str | None] = {}

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.folder / repo_folder_name(repo_id, repo_type)

    # Where the files are: the two calls a store of another kind (a bucket: ``mirror_s3``) replaces.
    def _read(self, repo_type: str, repo_id: str, name: str) -> str | None:
        """The text of ``name`` (``revisions.json``, ``trees/{commit}.json``...), None if absent."""
        try:
            return (self._repo_dir(repo_type, repo_id) / name).read_text()
        except OSError:
            return None

    def _write(self, repo_type: str, repo_id: str, name: str, text: str) -> None:
        atomic_write_text(self._repo_dir(repo_type, repo_id) / name, text)

    # -- revisions ------------------------------------------------------------------------------
    def _load_revisions(self, repo_type: str, repo_id: str) -> dict[str, dict[str, Any]]:
        key = f"{repo_type}/{repo_id}"
        with self._lock:
            known = self._revisions.get(key)
        if known is not None:
            return known
        try:
            raw = json.loads(self._read(repo_type, repo_id, "revisions.json") or "{}")
        except ValueError:
            raw = {}
        loaded: dict[str, dict[str, Any]] = {}
        for name, value in raw.items() if isinstance(raw, dict) else ():
            if isinstance(value, dict) and _COMMIT.match(str(value.get("commit", ""))):
                checked = value.get("checked")
                loaded[str(name)] = {
                    "commit": value["commit"],
                    "checked": float(checked) if isinstance(checked, (int, float)) else 0.0,
                }
        with self._lock:
            return self._revisions.setdefault(key, loaded)

    def revision(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, float] | None:
        """The last known commit of a branch or tag and when upstream was last asked (unix time)."""
        value = self._load_revisions(repo_type, repo_id).get(revision)
        return (value["commit"], value["checked"]) if value else None

    def revisions(self, repo_type: str, repo_id: str) -> dict[str, str]:
        return {k: v["commit"] for k, v in self._load_revisions(repo_type, repo_id).items()}

    def set_revision(self, repo_type: str, repo_id: str, revision: str, commit: str) -> None:
        known = self._load_revisions(repo_type, repo_id)
        with self._write_lock:  # (writes in the order of the changes: the newest state lands last)
            with self._lock:
                known[revision] = {"commit": commit, "checked": time.time()}
                text = json.dumps(known, indent=1, sort_keys=True)
            self._write(repo_type, repo_id, "revisions.json", text)

    # -- who may read the repo ------------------------------------------------------------------
    def access(self, repo_type: str, repo_id: str) -> str | None:
        """ "public", "gated" or "private" (as upstream last described the repo), None if never told."""
        key = f"{repo_type}/{repo_id}"
        with self._lock:
            if key in self._access:
                return self._access[key]
        try:
            raw = json.loads(self._read(repo_type, repo_id, "repo.json") or "{}")
            value = raw.get("access") if raw.get("access") in ACCESS_KINDS else None
        except (ValueError, AttributeError):
            value = None
        with self._lock:
            self._access[key] = value
        return value

    def set_access(self, repo_type: str, repo_id: str, access: str) -> None:
        assert access in ACCESS_KINDS
        if self.access(repo_type, repo_id) == access:
            return
        payload = json.dumps({"access": access})
        self._write(repo_type, repo_id, "repo.json", payload)
        with self._lock:
            self._access[f"{repo_type}/{repo_id}"] = access

    # -- listings -------------------------------------------------------------------------------
    def tree(self, repo_type: str, repo_id: str, commit: str) -> Tree | None:
        if not _COMMIT.match(commit):
            return None
        key = (f"{repo_type}/{repo_id}", commit)
        with self._lock:
            tree = self._trees.get(key)
            if tree is not None:
                self._trees.move_to_end(key)
                return tree
        try:
            text = self._read(repo_type, repo_id, f"trees/{commit}.json")
            if text is None:
                return None
            raw = json.loads(text)
            tree = Tree(tuple(_stored(f) for f in raw["files"]), float(raw.get("seen", 0.0)))
        except (OSError, ValueError, KeyError, TypeError, UnsafePathError):
            return None  # absent or unreadable: listed upstream again
        self._keep(key, tree)
        return tree

    def set_tree(self, repo_type: str, repo_id: str, commit: str, files: list[StoredFile]) -> Tree:
        if not _COMMIT.match(commit):
            raise ValueError(f"not a commit: {commit!r}")
        tree = Tree(tuple(files), time.time())
        payload = {
            "seen": tree.seen,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1} for f in files
            ],
        }
        self._write(repo_type, repo_id, f"trees/{commit}.json", json.dumps(payload))
        self._keep((f"{repo_type}/{repo_id}", commit), tree)
        return tree

    def _keep(self, key: tuple[str, str], tree: Tree) -> None:
        with self._lock:
            self._trees[key] = tree
            self._trees.move_to_end(key)
            while len(self._trees) > KEPT_TREES:
                self._trees.popitem(last=False)


def _stored(raw: dict[str, Any]) -> StoredFile:
    """A listed file read back from disk, checked as it was when it came from upstream."""
    size = raw.get("size")
    sha256, git_sha1 = raw.get("sha256"), raw.get("git_sha1")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"bad size {size!r}")
    for value in (sha256, git_sha1):
        if value is not None and not (isinstance(value, str) and _HASH.match(value)):
            raise ValueError(f"bad hash {value!r}")
    return StoredFile(safe_relpath(str(raw["path"])), size, sha256, git_sha1)
