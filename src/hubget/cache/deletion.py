"""Removing files from a cache, or (dry run) saying what would go, and counting the bytes it frees.

A file frees its bytes only when its last name goes: a hard-linked file (``hubget cache dedup``,
``export``, ``import``) frees nothing while another name keeps the inode, so bytes are counted per
inode, once all of its links known at the start are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Removed:
    cache: str  # "hf" or "ms"
    kind: str  # revision, ref, blob, partial, lock, record, file, repo, no-exist
    path: Path
    bytes_freed: int
    repo_id: str = ""


@dataclass
class Skipped:
    cache: str
    path: Path
    reason: str
    repo_id: str = ""


@dataclass
class CleanReport:
    """What ``rm`` or ``prune`` removed (or, with ``dry_run``, would remove) and what it left in place."""

    dry_run: bool
    removed: list[Removed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes_freed for r in self.removed)

    def count(self, kind: str) -> int:
        return sum(1 for r in self.removed if r.kind == kind)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "bytes_freed": self.bytes_freed,
            "removed": [
                {
                    "cache": r.cache,
                    "kind": r.kind,
                    "path": str(r.path),
                    "bytes_freed": r.bytes_freed,
                    "repo_id": r.repo_id,
                }
                for r in self.removed
            ],
            "skipped": [
                {"cache": s.cache, "path": str(s.path), "reason": s.reason, "repo_id": s.repo_id}
                for s in self.skipped
            ],
        }


class Cleaner:
    """Deletes (or pretends to, for a dry run) and writes down what it did in a CleanReport."""

    def __init__(self, report: CleanReport) -> None:
        self.report = report
        self._links_left: dict[tuple[int, int], int] = {}
        self._gone: set[str] = set()  # what a dry run already counted as removed

    @property
    def dry_run(self) -> bool:
        return self.report.dry_run

    def skip(self, cache: str, path: Path, reason: str, repo_id: str = "") -> None:
        self.report.skipped.append(Skipped(cache, path, reason, repo_id))

    def _freed(self, st: os.stat_result) -> int:
        key = (st.st_dev, st.st_ino)
        left = self._links_left.get(key, st.st_nlink) - 1
        self._links_left[key] = left
        return st.st_size if left == 0 else 0

    def unlink(self, cache: str, kind: str, path: Path, repo_id: str = "") -> bool:
        if str(path) in self._gone:
            return False
        try:
            st = path.lstat()
        except OSError:
            return False
        if not self.dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            except OSError as e:
                self.skip(cache, path, f"cannot remove: {e.strerror or e}", repo_id)
                return False
        freed = self._freed(st) if _is_regular(st) else 0
        self._gone.add(str(path))
        self.report.removed.append(Removed(cache, kind, path, freed, repo_id))
        return True

    def rmtree(self, cache: str, kind: str, path: Path, repo_id: str = "") -> bool:
        """A whole folder (a snapshot of symlinks, ``.no_exist``); its regular files count as freed."""
        if not path.is_dir() or path.is_symlink():
            return self.unlink(cache, kind, path, repo_id) if os.path.lexists(path) else False
        freed = 0
        for dirpath, _dirs, names in os.walk(path):
            for name in names:
                full = os.path.join(dirpath, name)
                if full in self._gone:
                    continue
                self._gone.add(full)
                with contextlib.suppress(OSError):
                    st = os.lstat(full)
                    if _is_regular(st):
                        freed += self._freed(st)
        if not self.dry_run:
            try:
                shutil.rmtree(path)
            except OSError as e:
                self.skip(cache, path, f"cannot remove: {e.strerror or e}", repo_id)
                return False
        self.report.removed.append(Removed(cache, kind, path, freed, repo_id))
        return True

    def rmdir_empty(self, path: Path, stop: Path) -> None:
        """Remove ``path`` and its parents up to (not including) ``stop`` while they are empty."""
        if self.dry_run:
            return
        path = Path(path)
        while path != stop and stop in path.parents:
            try:
                path.rmdir()
            except OSError:
                return
            path = path.parent

    def prune_empty_dirs(self, top: Path) -> None:
        """Remove the empty folders below ``top`` and ``top`` itself when it ends up empty."""
        if self.dry_run or not top.is_dir():
            return
        for dirpath, _dirs, _names in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
