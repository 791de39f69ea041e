"""``hubget.cache.import_folder()``: a folder of model files becomes a Hugging Face cache snapshot.

The folder may come from anywhere: copied by hand, ``git clone`` (LFS files smudged), hfd/aria2,
or a ``local_dir`` download. Each file is hashed once, on a thread pool:

- with the hub reachable (``HfSource``), against the hub's listing of the revision: the snapshot
  gets the hub's commit, and any file that differs (size or hash) stops the import before anything
  is written;
- with ``offline=True``, trusted as it is: blobs are named the way the hub would name them
  (sha256 for files the hub keeps in LFS, git blob sha1 for the others: ``hubget.lfsrules``), and
  the commit is the one the folder records (``local_dir`` metadata, or ``git rev-parse HEAD``), else a
  deterministic made-up one (sha1 over the paths and hashes); ``refs/{revision or main}`` names it.

Blobs share the folder's bytes: a reflink where the filesystem has them, else a hard link, and a
copy only across filesystems (or with ``copy=True``). A hard-linked file is made read-only (both
names are one inode): an in-place edit in the folder would otherwise change the cache's blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget.cache import hfscan
from hubget.cache.hashpool import FileCheck, hash_all
from hubget.cache.inuse import held
from hubget.cache.links import make_read_only, place
from hubget.cache.scan import cache_dirs
from hubget.errors import IntegrityError, NetworkError, UsageError
from hubget.layouts.hf_cache import HfCacheLayout
from hubget.layouts.local_dir import LocalDirLayout
from hubget.lfsrules import is_lfs_path, lfs_patterns
from hubget.models import RemoteFile, RepoRef, Snapshot

SKIPPED_DIRS = frozenset({".git", ".hubget", ".hubget-partial"})
SKIPPED_SUFFIXES = (".incomplete", ".hubget-partial", ".hubget-partial.json", ".hubget-link")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class ImportedFile:
    path: str
    size: int
    etag: str
    method: str  # reflink, hardlink, copy, present (the blob was already there), in-use (skipped)


@dataclass
class ImportReport:
    repo_id: str
    repo_type: str
    commit: str
    ref: str
    snapshot: Path
    checked_against_hub: bool
    commit_origin: str  # hub, given, local_dir metadata, git HEAD, made up
    files: list[ImportedFile] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # in the folder, not in the hub's listing: left out
    missing: list[str] = field(default_factory=list)  # in the hub's listing, not in the folder
    warnings: list[str] = field(default_factory=list)
    bytes_hashed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "commit": self.commit,
            "ref": self.ref,
            "snapshot": str(self.snapshot),
            "checked_against_hub": self.checked_against_hub,
            "commit_origin": self.commit_origin,
            "files": [vars(f) for f in self.files],
            "extra": self.extra,
            "missing": self.missing,
            "warnings": self.warnings,
            "bytes_hashed": self.bytes_hashed,
        }


def import_folder(
    folder: str | Path,
    repo: str,
    *,
    revision: str | None = None,
    repo_type: str = "model",
    offline: bool = False,
    copy: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    hf_cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Make ``folder`` the cached snapshot of ``repo`` at ``revision`` (default main); see the module doc."""
    src = Path(folder).expanduser()
    if not src.is_dir():
        raise UsageError(f"{src} is not a folder")
    local = folder_files(src)
    if not local:
        raise UsageError(f"{src} holds no files to import")
    cache_dir, _ = cache_dirs(hf_cache_dir, None)
    ref_name = revision if revision and not _COMMIT.match(revision) else "main"
    if offline:
        report, remote = _offline_plan(src, local, repo, repo_type, revision, ref_name, workers)
    else:
        report, remote = _checked_plan(
            src, local, repo, repo_type, revision, ref_name, endpoint, token, workers
        )
    ref = RepoRef(repo, repo_type, ref_name)  # type: ignore[arg-type]
    layout = HfCacheLayout(ref, cache_dir)
    snapshot = Snapshot(ref, report.commit, list(remote.values()), "import")
    linked = 0
    for rel, file in sorted(remote.items()):
        method = _place_blob(layout, file, local[rel], copy)
        report.files.append(ImportedFile(rel, local[rel].stat().st_size, file.etag, method))
        if method == "in-use":
            report.warnings.append(f"{rel}: a download is writing blobs/{file.etag}; not linked")
            continue
        linked += method == "hardlink"
        layout.commit(snapshot, file)
    report.snapshot = layout.finalize(snapshot)
    if linked:
        report.warnings.append(
            f"{linked} file(s) of {src} are now hard links to the cache's blobs, made read-only: replace "
            "such a file (write a new one, rename it over) rather than edit it in place"
        )
    return report


def folder_files(root: Path) -> dict[str, Path]:
    """Repo path -> file, without git's, hubget's and huggingface_hub's bookkeeping (and temp files)."""
    out: dict[str, Path] = {}
    for dirpath, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else f"{rel_dir}/"
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and f"{rel_dir}{d}" != ".cache/huggingface"]
        for name in names:
            path = Path(dirpath) / name
            if name.endswith(SKIPPED_SUFFIXES) or not path.is_file():  # (symlinks to files count)
                continue
            out[f"{rel_dir}{name}"] = path
    return out


def _checked_plan(
    src: Path,
    local: dict[str, Path],
    repo: str,
    repo_type: str,
    revision: str | None,
    ref_name: str,
    endpoint: str | None,
    token: str | None,
    workers: int | None,
) -> tuple[ImportReport, dict[str, RemoteFile]]:
    from hubget.sources.huggingface import HfSource

    source = HfSource(endpoint, token)
    try:
        snapshot = source.resolve(RepoRef(repo, repo_type, revision))  # type: ignore[arg-type]
    except NetworkError as e:
        raise NetworkError(
            f"cannot reach {source.endpoint} to check the files against the hub ({e}); "
            "pass --offline to import them unchecked"
        ) from e
    listing = snapshot.by_path()
    report = ImportReport(repo, repo_type, snapshot.commit, ref_name, Path(), True, "hub")
    report.extra = sorted(set(local) - set(listing))
    report.missing = sorted(set(listing) - set(local))
    checks: list[FileCheck] = []
    wrong: list[str] = []
    for rel in sorted(set(local) & set(listing)):
        remote = listing[rel]
        size = local[rel].stat().st_size
        if remote.size is not None and size != remote.size:
            wrong.append(_mismatch_text(rel, local[rel], remote, f"{size} bytes, the hub has {remote.size}"))
            continue
        algo = "sha256" if remote.sha256 else "git-sha1"
        checks.append(
            FileCheck(
                "hf",
                repo_type,
                repo,
                [snapshot.commit],
                [rel],
                local[rel],
                size,
                algo,
                remote.etag,
                "hub listing",
            )
        )
    report.bytes_hashed = hash_all(checks, workers or max(2, os.cpu_count() or 2))
    wrong += [
        _mismatch_text(c.paths[0], c.file, listing[c.paths[0]], f"{c.algo} {c.actual}")
        for c in checks
        if c.status != "ok"
    ]
    if wrong:
        shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise IntegrityError(
            f"{len(wrong)} file(s) of {src} differ from {repo}@{snapshot.commit[:12]} on {source.endpoint}, "
            f"nothing imported: {shown}"
        )
    if report.extra:
        report.warnings.append(
            f"{len(report.extra)} file(s) not in the hub's listing, left out: {', '.join(report.extra[:5])}"
        )
    if report.missing:
        report.warnings.append(
            f"{len(report.missing)} file(s) of the revision are not in the folder "
            f"(hubget download fetches them): {', '.join(report.missing[:5])}"
        )
    return report, {rel: listing[rel] for rel in local if rel in listing}


def _mismatch_text(rel: str, path: Path, remote: RemoteFile, got: str) -> str:
    try:
        head = path.read_bytes()[: len(LFS_POINTER_PREFIX)] if path.stat().st_size < 1024 else b""
    except OSError:
        head = b""
    if head == LFS_POINTER_PREFIX and remote.sha256:
        return f"{rel} is a Git LFS pointer, not the file (run 'git lfs pull' or 'hubget pull' first)"
    return f"{rel} ({got})"


def _offline_plan(
    src: Path,
    local: dict[str, Path],
    repo: str,
    repo_type: str,
    revision: str | None,
    ref_name: str,
    workers: int | None,
) -> tuple[ImportReport, dict[str, RemoteFile]]:
    meta_layout = LocalDirLayout(src)
    patterns = lfs_patterns(src)
    checks: list[FileCheck] = []
    commits: set[str | None] = set()
    for rel, path in sorted(local.items()):
        size = path.stat().st_size
        meta = meta_layout.read_metadata(rel)
        commits.add(meta[0] if meta and _COMMIT.match(meta[0]) else None)
        recorded = meta[1] if meta and hfscan.hash_algo_of(meta[1]) else None
        algo = hfscan.hash_algo_of(recorded) if recorded else None
        if algo is None:
            algo = "sha256" if is_lfs_path(rel, size, patterns) else "git-sha1"
        checks.append(FileCheck("hf", repo_type, repo, [], [rel], path, size, algo, recorded, "trusted"))
    bytes_hashed = hash_all(checks, workers or max(2, os.cpu_count() or 2))
    warnings = []
    remote: dict[str, RemoteFile] = {}
    for c in checks:
        rel = c.paths[0]
        if c.expected is not None and c.actual != c.expected:
            warnings.append(
                f"{rel} changed since it was downloaded (its local_dir metadata names another hash)"
            )
        assert c.actual is not None, c.note
        remote[rel] = RemoteFile(
            rel,
            c.size,
            "",
            sha256=c.actual if c.algo == "sha256" else None,
            git_sha1=c.actual if c.algo == "git-sha1" else None,
        )
    commit, origin = _offline_commit(src, revision, commits, remote)
    report = ImportReport(repo, repo_type, commit, ref_name, Path(), False, origin, bytes_hashed=bytes_hashed)
    report.warnings = [
        f"--offline: {len(remote)} file(s) imported unchecked (the hub was not asked); "
        f"commit {commit} is {origin}",
        *warnings,
    ]
    return report, remote


def _offline_commit(
    src: Path, revision: str | None, commits: set[str | None], remote: dict[str, RemoteFile]
) -> tuple[str, str]:
    if revision and _COMMIT.match(revision):
        return revision, "given"
    if len(commits) == 1 and None not in commits:
        return next(iter(commits)), "local_dir metadata"  # type: ignore[return-value]
    if (src / ".git").exists():
        try:
            head = subprocess.run(
                ["git", "-C", str(src), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            head = ""
        if _COMMIT.match(head):
            return head, "git HEAD"
    manifest = "".join(f"{f.etag} {rel}\n" for rel, f in sorted(remote.items()))
    return hashlib.sha1(
        b"hubget cache import\n" + manifest.encode("utf-8", "surrogatepass")
    ).hexdigest(), "made up"


def _place_blob(layout: HfCacheLayout, file: RemoteFile, src: Path, copy: bool) -> str:
    blob = layout.blob(file)
    try:
        st = blob.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_size == src.stat().st_size:
            return "present"  # blobs are only ever put in place verified, and named by their hash
    except OSError:
        pass
    with held(layout.lock_path(file)) as free:
        if not free:
            return "in-use"
        method = place(src, blob, mode="copy" if copy else "any")
    if method == "hardlink":
        make_read_only(blob)
    return method
