"""A repo served from a plain folder of files: one revision ``main`` (alias ``master``).

Its commit id is derived from the content (sha1 over the sorted paths and file hashes), so the same
files give the same id and any changed file a new one. Files the Hugging Face Hub would store in LFS
(by the folder's ``.gitattributes``, else the hub's default patterns, or anything over 10 MiB) are
described by sha256, the others by their git blob sha1, exactly as the hub describes them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hubget.errors import EntryNotFoundError, RevisionNotFoundError
from hubget.folderfiles import folder_commit_id, pointer_sha1, walk_folder
from hubget.lfsrules import is_lfs_path, lfs_patterns
from hubget.models import RepoType
from hubget.server.hashcache import HashCache
from hubget.server.repo import CACHE_DIR_NAME, Body, Entry, Ref, Repo, check_revision

_SKIP_DIRS = (".git", CACHE_DIR_NAME, ".hubget")
SNAPSHOT_TTL = 1.0  # seconds a walk of the folder is reused (requests of one download come in bursts)


def make_entry(rel: str, real: Path, size: int, patterns: tuple[str, ...], hashes: HashCache) -> Entry:
    if is_lfs_path(rel, size, patterns):
        sha256 = hashes.sha256(real)
        return Entry(rel, size, pointer_sha1(sha256, size), sha256, True)
    return Entry(rel, size, hashes.git_sha1(real))


def commit_id(entries: list[Entry]) -> str:
    return folder_commit_id((e.path, e.etag) for e in entries)


@dataclass(frozen=True)
class _Snapshot:
    signature: tuple[tuple[str, int, int, int], ...]
    commit: str
    entries: list[Entry]
    date: float
    walked_at: float


class FolderRepo(Repo):
    def __init__(
        self,
        folder: Path,
        repo_type: RepoType,
        repo_id: str,
        hashes: HashCache,
        *,
        allowed_root: Path | None = None,
    ) -> None:
        super().__init__()
        self.root = folder
        self.allowed_root = allowed_root or folder
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.git_dir = None
        self._hashes = hashes
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._files: dict[str, Path] = {}

    def _walk(self) -> list[tuple[str, Path, os.stat_result]]:
        """Every served file: (relative path, real path, stat). Symlinks are followed only while they
        stay inside the served root; anything else is left out."""
        walk = walk_folder(self.root, skip_dirs=_SKIP_DIRS, allowed_root=self.allowed_root)
        return [(f.rel, f.real, f.stat) for f in walk.files]

    def snapshot(self) -> _Snapshot:
        with self._lock:
            snap = self._snapshot
            if snap is not None and time.monotonic() - snap.walked_at < SNAPSHOT_TTL:
                return snap
            files = self._walk()
            signature = tuple((rel, st.st_size, st.st_mtime_ns, st.st_ino) for rel, _, st in files)
            if snap is not None and snap.signature == signature:
                snap = _Snapshot(signature, snap.commit, snap.entries, snap.date, time.monotonic())
            else:
                patterns = lfs_patterns(self.root)
                entries = [
                    make_entry(rel, real, st.st_size, patterns, self._hashes) for rel, real, st in files
                ]
                self._hashes.flush()  # one write for the hashes of the whole walk
                date = max((st.st_mtime for _, _, st in files), default=0.0)
                snap = _Snapshot(signature, commit_id(entries), entries, date, time.monotonic())
                self._files = {rel: real for rel, real, _ in files}
            self._snapshot = snap
            return snap

    def resolve(self, revision: str | None = None) -> str:
        revision = check_revision(revision or "main")
        snap = self.snapshot()
        if revision in ("main", "master", snap.commit):
            return snap.commit
        raise RevisionNotFoundError(
            f"revision {revision!r} not found in {self.repo_id} (a folder has only main)"
        )

    def list_files(self, commit: str) -> list[Entry]:
        snap = self.snapshot()
        if commit != snap.commit:
            raise RevisionNotFoundError(
                f"revision {commit!r} not found in {self.repo_id} (the folder changed)"
            )
        return snap.entries

    def refs(self) -> list[Ref]:
        snap = self.snapshot()
        return [Ref("main", "branch", snap.commit, snap.date)]

    def commit_date(self, commit: str) -> float:
        return self.snapshot().date

    def _body(self, commit: str, entry: Entry) -> Body:
        with self._lock:
            real = self._files.get(entry.path)
        if real is None:
            raise EntryNotFoundError(f"{entry.path} not found in {self.repo_id}")
        return Body(size=entry.size, path=real)
