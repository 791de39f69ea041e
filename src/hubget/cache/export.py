"""``hubget.cache.export()``: a cached Hugging Face snapshot as a plain folder, without a byte copy.

Each file is a reflink of its blob (own inode, shared extents: editing it never touches the cache)
or, where the filesystem has no reflinks, a hard link (the blob's own inode). A hard-linked file is
made read-only, for both names: writing into it in place would change the cache's blob, which
every tool takes as immutable. Tools that update a file replace it (write elsewhere, rename), which
is safe. ``copy=True`` gives every file its own bytes (a reflink where possible, else a copy).

The folder gets huggingface_hub's ``local_dir`` metadata (``.cache/huggingface/download/{path}.metadata``:
commit, etag, time), so ``huggingface_hub.snapshot_download(local_dir=...)`` and ``hubget download
--local-dir`` take every file as downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget.cache import hfscan
from hubget.cache.links import make_read_only, place
from hubget.cache.scan import cache_dirs
from hubget.errors import DiskError, IntegrityError, NotFoundError, UsageError
from hubget.layouts.local_dir import LocalDirLayout
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.paths import join_inside, safe_relpath


@dataclass
class ExportedFile:
    path: str
    size: int
    method: str  # reflink, hardlink, copy


@dataclass
class ExportReport:
    repo_id: str
    repo_type: str
    commit: str
    folder: Path
    files: list[ExportedFile] = field(default_factory=list)

    def bytes_by(self, method: str) -> int:
        return sum(f.size for f in self.files if f.method == method)

    def as_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "commit": self.commit,
            "folder": str(self.folder),
            "files": [vars(f) for f in self.files],
            "bytes_copied": self.bytes_by("copy"),
            "bytes_linked": self.bytes_by("hardlink") + self.bytes_by("reflink"),
        }


def find_revision(
    cache_dir: Path, repo: str, repo_type: str, revision: str | None
) -> tuple[hfscan.HfRepo, hfscan.HfRevision]:
    """The cached repo and the revision ``revision`` names (default: main, else the only one)."""
    from hubget.layouts.hf_cache import repo_folder_name

    found = hfscan.read_repo(cache_dir, cache_dir / repo_folder_name(repo, repo_type))
    if found is None or not found.revisions:
        raise NotFoundError(f"{repo_type} {repo} is not in the cache {cache_dir}")
    if revision is None and "main" in found.refs:
        revision = "main"
    if revision is None:
        if len(found.revisions) != 1:
            raise UsageError(
                f"{repo} has {len(found.revisions)} cached revisions and no main: pass --revision"
            )
        return found, found.revisions[0]
    revisions = hfscan.revisions_named(found, revision)
    if not revisions:
        raise NotFoundError(f"revision {revision!r} of {repo} is not cached")
    return found, revisions[0]


def export(
    repo: str,
    folder: str | Path,
    *,
    revision: str | None = None,
    repo_type: str = "model",
    copy: bool = False,
    hf_cache_dir: str | Path | None = None,
) -> ExportReport:
    """Write the cached snapshot of ``repo`` into ``folder`` (reflinks or hard links; ``copy`` to copy)."""
    cache_dir, _ = cache_dirs(hf_cache_dir, None)
    hf_repo, rev = find_revision(cache_dir, repo, repo_type, revision)
    dest = Path(folder).expanduser()
    layout = LocalDirLayout(dest)
    snapshot = Snapshot(RepoRef(repo, repo_type, rev.commit), rev.commit, [], "hf-cache")  # type: ignore[arg-type]
    report = ExportReport(repo, repo_type, rev.commit, dest)
    for f in sorted(rev.files, key=lambda f: f.path):
        blob = Path(os.path.realpath(f.blob))  # the payload, also when the blob points into a shared store
        if not blob.is_file():
            raise IntegrityError(
                f"{f.path}: its blob {f.blob} is missing; run 'hubget cache verify --repair'"
            )
        target = join_inside(dest, safe_relpath(f.path))
        try:
            method = place(blob, target, mode="copy" if copy else "auto")
        except OSError as e:
            if copy:
                raise DiskError(f"cannot copy {f.path} into {dest}: {e.strerror or e}") from e
            raise UsageError(
                f"cannot reflink or hard-link {f.path} into {dest} ({e.strerror or e}): "
                "another filesystem? pass --copy to copy the bytes"
            ) from e
        if method == "hardlink":
            make_read_only(target)
        size = os.stat(target).st_size
        report.files.append(ExportedFile(f.path, size, method))
        algo = hfscan.hash_algo_of(f.etag)
        remote = RemoteFile(
            f.path,
            size,
            "",
            sha256=f.etag if algo == "sha256" else None,
            git_sha1=f.etag if algo != "sha256" else None,
        )
        layout.commit(snapshot, remote)
    layout.finalize(snapshot)
    return report
