"""Hashing many files at once: a thread pool (hashlib releases the GIL, so threads hash in parallel),
the largest files first so that one big file does not finish alone at the end. ``FileCheck`` is one
file to hash, with what it is expected to hash to and where that expectation comes from."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubget.hashing import hash_file

ProgressCallback = Callable[[int, int], None]  # (bytes hashed so far, bytes to hash)


@dataclass
class FileCheck:
    cache: str  # "hf" or "ms"
    repo_type: str
    repo_id: str
    revisions: list[str]  # the revisions (HF commits, MS revision folders) this file belongs to
    paths: list[str]  # the repo paths that name these bytes
    file: Path  # the blob (HF) or the file itself (MS)
    size: int
    algo: str | None  # "sha256", "git-sha1" or None (nothing to check against)
    expected: str | None
    basis: str  # where ``expected`` comes from: "blob name", "hubget record", "hub listing", or why none
    actual: str | None = None
    status: str = "pending"  # ok, corrupt, missing, unverifiable
    repaired: bool = False
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "repo_type": self.repo_type,
            "repo_id": self.repo_id,
            "revisions": self.revisions,
            "paths": self.paths,
            "file": str(self.file),
            "size": self.size,
            "algo": self.algo,
            "expected": self.expected,
            "actual": self.actual,
            "basis": self.basis,
            "status": self.status,
            "repaired": self.repaired,
            "note": self.note,
        }


def hash_all(checks: list[FileCheck], workers: int, on_progress: ProgressCallback | None = None) -> int:
    """Hash every pending check on ``workers`` threads, largest first; returns the bytes hashed."""
    todo = sorted((c for c in checks if c.status == "pending"), key=lambda c: c.size, reverse=True)
    total = sum(c.size for c in todo)
    done = [0]
    lock = threading.Lock()

    def run(check: FileCheck) -> None:
        assert check.algo is not None
        try:
            check.actual = hash_file(check.file, check.algo)
        except OSError as e:
            check.status, check.note = "corrupt", f"cannot read: {e.strerror or e}"
            return
        check.status = "ok" if check.actual == check.expected else "corrupt"
        if on_progress is not None:
            with lock:
                done[0] += check.size
                on_progress(done[0], total)

    if todo:
        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(todo))), thread_name_prefix="verify"
        ) as pool:
            list(pool.map(run, todo))
    return sum(c.size for c in todo if c.actual is not None)
