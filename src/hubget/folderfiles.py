"""A plain folder as a repo: which of its files count, and the commit id its content gives.

Shared by `hubget serve ROOT` (folder repos, ``server.folderrepo``) and `hubget upload DIR s3://...`
(``api.upload``), so a folder published to a bucket gets the commit id the server would give it.
Symlinks are followed only while they stay inside the allowed root; the ones that leave it, and
symlinked directories, are reported (the server leaves them out, an upload refuses them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Files a download tool leaves next to a copy (partial downloads, local_dir metadata): never served.
SKIP_SUFFIXES = (".hubget-partial", ".hubget-partial.json", ".incomplete", ".lock")


@dataclass(frozen=True)
class FolderFile:
    rel: str  # "/"-separated, relative to the folder
    real: Path  # the file it names (symlinks resolved)
    stat: os.stat_result


@dataclass(frozen=True)
class FolderWalk:
    files: list[FolderFile]
    refused: list[tuple[str, str]]  # (relative path, why it is not one of the folder's files)


def walk_folder(root: Path, *, skip_dirs: Iterable[str], allowed_root: Path | None = None) -> FolderWalk:
    """The folder's files in path order; ``skip_dirs`` (at any depth) and a top-level ``.cache``
    (huggingface_hub's local_dir metadata) are not entered."""
    allowed = str(allowed_root or root)
    skip = set(skip_dirs)
    files: list[FolderFile] = []
    refused: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)

        def rel(name: str, rel_dir: str = rel_dir) -> str:
            return name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")

        kept = []
        for d in sorted(dirnames):
            if d in skip or (rel_dir == "." and d == ".cache"):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                refused.append((rel(d), "a symlinked directory (not followed)"))
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if name.endswith(SKIP_SUFFIXES):
                continue
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full)
            if not real.startswith(allowed + os.sep):
                refused.append((rel(name), f"a symlink to {real}, outside {allowed}"))
                continue
            try:
                st = os.stat(real)
            except OSError:
                refused.append((rel(name), "a symlink to nothing"))
                continue
            if not os.path.isfile(real):
                refused.append((rel(name), "not a regular file"))
                continue
            files.append(FolderFile(rel(name), Path(real), st))
    files.sort(key=lambda f: f.rel)
    return FolderWalk(files, sorted(refused))


def folder_commit_id(etags: Iterable[tuple[str, str]]) -> str:
    """The commit id of a folder whose files, in path order, have these (path, etag): the sha256 for a
    file the hub would keep in LFS, else the git blob sha1. The same files give the same id."""
    h = hashlib.sha1(b"hubget-folder-v1\n")
    for path, etag in etags:
        h.update(f"{path}\0{etag}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git would store for this content."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def pointer_sha1(sha256: str, size: int) -> str:
    """The git blob id of that pointer (what the hub lists as an LFS file's ``oid``)."""
    pointer = lfs_pointer(sha256, size)
    return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
