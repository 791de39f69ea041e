"""Hugging Face and ModelScope caches written directly on disk, exactly as huggingface_hub and the
modelscope SDK lay them out, for tests that need many repos or odd states (detached revisions,
refs/pr/N, broken links) without a download.

    repo = write_hf_revision(cache, "org/a", commit_id(1), {"config.json": b"{}"}, refs=("main",))
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hubget.lfsrules import HF_DEFAULT_LFS_PATTERNS, is_lfs_path


def commit_id(n: int | str) -> str:
    return hashlib.sha1(f"commit {n}".encode()).hexdigest()


def etag_of(path: str, data: bytes) -> str:
    """The name the hub gives the blob: sha256 for LFS files, git blob sha1 for the others."""
    if is_lfs_path(path, len(data), HF_DEFAULT_LFS_PATTERNS):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hf_repo_dir(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache / "--".join([f"{repo_type}s", *repo_id.split("/")])


def write_hf_revision(
    cache: Path,
    repo_id: str,
    commit: str,
    files: dict[str, bytes],
    *,
    refs: tuple[str, ...] = (),
    repo_type: str = "model",
) -> Path:
    """Blobs, relative snapshot symlinks and refs for one revision; returns the repo folder."""
    repo = hf_repo_dir(cache, repo_id, repo_type)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        blob = repo / "blobs" / etag_of(path, data)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, link.parent), link)
    for ref in refs:
        ref_file = repo / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)
    return repo


def write_ms_revision(root: Path, repo_id: str, files: dict[str, bytes], *, revision: str = "master") -> Path:
    """The modelscope SDK's current layout: plain files in ``models/{owner}--{name}/snapshots/{revision}``."""
    folder = root / "models" / repo_id.replace("/", "--") / "snapshots" / revision
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder
