"""Hashes the hubs use: sha256 (LFS oids, ModelScope) and git blob sha1 (HF small files)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

READ_BLOCK = 4 * 1024 * 1024


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def git_blob_hasher(size: int) -> Hasher:
    """A sha1 primed with git's blob header: feed it exactly ``size`` content bytes."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % size)
    return h


def new_hasher(algo: str, size: int | None = None) -> Hasher:
    if algo == "sha256":
        return hashlib.sha256()
    if algo == "git-sha1":
        if size is None:
            raise ValueError("git blob sha1 needs the size up front")
        return git_blob_hasher(size)
    raise ValueError(f"unknown hash algorithm {algo!r}")


def hash_file(path: Path, algo: str = "sha256") -> str:
    size = path.stat().st_size
    h = new_hasher(algo, size)
    buf = bytearray(READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def git_blob_sha1(data: bytes) -> str:
    h = git_blob_hasher(len(data))
    h.update(data)
    return h.hexdigest()
