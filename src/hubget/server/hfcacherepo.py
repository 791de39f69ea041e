"""A repo served from a Hugging Face cache folder (``models--org--name``): refs and snapshots.

Snapshot files are symlinks to ``blobs/{etag}``; the blob name is the hash the hub announced
(sha256 for LFS files, git blob sha1 for others) and the official clients only keep verified
blobs, so it is trusted. Copies that are not symlinks (where symlinks were impossible) are hashed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hubget.errors import EntryNotFoundError, RevisionNotFoundError, UnsafePathError
from hubget.lfsrules import lfs_patterns
from hubget.models import RepoType
from hubget.paths import join_inside
from hubget.server.folderrepo import make_entry, pointer_sha1
from hubget.server.hashcache import HashCache
from hubget.server.repo import Body, Entry, Ref, Repo, check_revision

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HfCacheRepo(Repo):
    def __init__(self, folder: Path, repo_type: RepoType, repo_id: str, hashes: HashCache) -> None:
        super().__init__()
        self.root = folder
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.git_dir = None
        self._hashes = hashes
        self._files: dict[tuple[str, str], Path] = {}

    def _ref_names(self) -> list[str]:
        refs_dir = self.root / "refs"
        names = []
        for dirpath, _, filenames in os.walk(refs_dir):
            for name in filenames:
                names.append(os.path.relpath(os.path.join(dirpath, name), refs_dir).replace(os.sep, "/"))
        return sorted(names)

    def _read_ref(self, name: str) -> str | None:
        try:
            commit = join_inside(self.root / "refs", name).read_text().strip()
        except (OSError, UnsafePathError):
            return None
        return commit if _SHA1.match(commit) and (self.root / "snapshots" / commit).is_dir() else None

    def resolve(self, revision: str | None = None) -> str:
        revision = check_revision(revision or "main")
        if (commit := self._read_ref(revision)) is not None:
            return commit
        if _SHA1.match(revision) and (self.root / "snapshots" / revision).is_dir():
            return revision
        if revision in ("main", "master"):
            snapshots = [p.name for p in (self.root / "snapshots").iterdir() if _SHA1.match(p.name)]
            if len(snapshots) == 1:
                return snapshots[0]
        raise RevisionNotFoundError(f"revision {revision!r} not found in the cache of {self.repo_id}")

    def _snapshot_dir(self, commit: str) -> Path:
        snap = self.root / "snapshots" / commit
        if not _SHA1.match(commit) or not snap.is_dir():
            raise RevisionNotFoundError(f"revision {commit!r} not found in the cache of {self.repo_id}")
        return snap

    def list_files(self, commit: str) -> list[Entry]:
        snap = self._snapshot_dir(commit)
        patterns = lfs_patterns(snap)
        entries = []
        for dirpath, dirnames, filenames in os.walk(snap):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for name in filenames:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, snap).replace(os.sep, "/")
                if (entry := self._entry_at(commit, rel, full, patterns)) is not None:
                    entries.append(entry)
        self._hashes.flush()  # copies that are not links were hashed: one write for all of them
        entries.sort(key=lambda e: e.path)
        return entries

    def entry(self, commit: str, path: str) -> Entry:
        """One file, without walking the snapshot (the ModelScope listing opens every file)."""
        snap = self._snapshot_dir(commit)
        try:
            full = join_inside(snap, path)
        except UnsafePathError as exc:
            raise EntryNotFoundError(str(exc)) from None
        # Every folder on the way must be a real folder, as in list_files (links to folders are skipped).
        parent = full.parent
        while parent != snap:
            if parent.is_symlink():
                raise EntryNotFoundError(f"{path} not found in {self.repo_id} at {commit}")
            parent = parent.parent
        entry = self._entry_at(commit, path, str(full), lfs_patterns(snap)) if full.is_file() else None
        if entry is None:
            raise EntryNotFoundError(f"{path} not found in {self.repo_id} at {commit}")
        return entry

    def _entry_at(self, commit: str, rel: str, full: str, patterns: tuple[str, ...]) -> Entry | None:
        cache_root = os.path.realpath(self.root)
        real = os.path.realpath(full)
        if not real.startswith(cache_root + os.sep) or not os.path.isfile(real):
            return None  # a dangling link (blob not downloaded) or one leading out of the cache
        size = os.stat(real).st_size
        blob_name = os.path.basename(real) if os.path.islink(full) else ""
        if _SHA256.match(blob_name):
            entry = Entry(rel, size, pointer_sha1(blob_name, size), blob_name, True)
        elif _SHA1.match(blob_name):
            entry = Entry(rel, size, blob_name)
        else:
            entry = make_entry(rel, Path(real), size, patterns, self._hashes)
        self._files[(commit, rel)] = Path(real)
        return entry

    def refs(self) -> list[Ref]:
        out = []
        for name in self._ref_names():
            if (commit := self._read_ref(name)) is not None:
                out.append(Ref(name, "branch", commit, self.commit_date(commit)))
        return out

    def commit_date(self, commit: str) -> float:
        try:
            return (self.root / "snapshots" / commit).stat().st_mtime
        except OSError:
            return 0.0

    def _body(self, commit: str, entry: Entry) -> Body:
        real = self._files.get((commit, entry.path))
        if real is None:
            raise EntryNotFoundError(f"{entry.path} not found in {self.repo_id}")
        return Body(size=entry.size, path=real)
