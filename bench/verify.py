"""Checking what a peer left on disk against the generated repo's sha256s, so a fast but wrong peer is
caught rather than ranked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.data import BenchRepo


@dataclass
class Verdict:
    checked: int
    ok: int
    problems: list[str]

    @property
    def all_ok(self) -> bool:
        return self.checked > 0 and self.ok == self.checked and not self.problems


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:  # follows the cache's symlinks to the blobs
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_tree(root: Path, repo: BenchRepo) -> Verdict:
    problems: list[str] = []
    ok = 0
    for f in repo.files:
        path = root / f.path
        if not path.is_file():
            problems.append(f"missing {f.path}")
            continue
        size = path.stat().st_size
        if size != f.size:
            problems.append(f"{f.path}: size {size} != {f.size}")
            continue
        if _sha256(path) != f.sha256:
            problems.append(f"{f.path}: sha256 mismatch")
            continue
        ok += 1
    return Verdict(len(repo.files), ok, problems)
