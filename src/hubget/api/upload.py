"""Publishing a local folder or git repo into a bucket: `hubget upload DIR s3://bucket/prefix`.

The same objects, manifest and guarantees as staging from a hub (``api.stage.stage_files`` and the
uploader of ``objectstore.upload``), with local bytes as the source:

- a **git repo** (DIR is the top of a work tree, or a bare repo; `hubget clone` makes one): the files
  of HEAD's commit, at that commit id. LFS pointer files are resolved to their objects in
  ``.git/lfs/objects`` (or the work-tree copy when it has the object's size); other blobs are read
  with `git cat-file`. Each object is verified against the sha256 of its pointer or its git blob id.
- a **plain folder**: its files, described as `hubget serve ROOT` describes a folder repo (LFS by the
  folder's ``.gitattributes`` or the hub's defaults; the same content-derived commit id,
  ``folderfiles``). Every file is hashed first (the commit id needs all hashes); the upload then
  hashes it again and must find the same bytes, and a file whose size, mtime or inode changes while
  it is read is not completed.

Symlinks leaving DIR, symlinked directories and paths under ``.hubget/`` are refused.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hubget.api.stage import StageReport, stage_files
from hubget.errors import NotFoundError, UsageError
from hubget.folderfiles import folder_commit_id, walk_folder
from hubget.gitclone.gitcmd import Git
from hubget.gitclone.lfsfetch import lfs_storage_dir
from hubget.gitclone.pointers import list_lfs_entries
from hubget.hashing import READ_BLOCK
from hubget.lfsrules import is_lfs_path, lfs_patterns
from hubget.models import RemoteFile, RepoRef, RepoType, Snapshot
from hubget.objectstore.localread import BytesReader, FileReader, PartReader, file_signature
from hubget.objectstore.manifest import META_DIR
from hubget.objectstore.s3 import S3Bucket, S3Url, parse_s3_url
from hubget.objectstore.upload import DEFAULT_PART_SIZE, ObjectJob
from hubget.paths import safe_relpath
from hubget.sources.gitlfs import object_relpath
from hubget.transfer.hashstate import StreamHash
from hubget.transfer.jobs import ProgressSink

# Not part of a folder's content: git's own, the server's hash cache.
FOLDER_SKIP_DIRS = (".git", ".hubget-cache")
_TYPE_DIRS: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class _Local:
    """Where one file's bytes are: a file on disk (with its listed stat) or a git blob."""

    path: Path | None = None
    signature: tuple[int, int, int, int] | None = None
    git_dir: Path | None = None
    blob: str = ""


def repo_for_target(target: S3Url, folder: Path) -> tuple[str, RepoType]:
    """The repo id and type a prefix names in `hubget serve --store`'s layout
    (``.../{models,datasets,spaces}/{owner}/{name}``), else the prefix's last two segments."""
    parts = [p for p in target.prefix.split("/") if p]
    if len(parts) >= 3 and parts[-3] in _TYPE_DIRS:
        return f"{parts[-2]}/{parts[-1]}", _TYPE_DIRS[parts[-3]]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}", "model"
    return f"local/{folder.resolve().name}", "model"


def _git_top(folder: Path) -> Git | None:
    """``git`` bound to ``folder`` if it is the top of a work tree or a bare repo, else None."""
    if not (folder / ".git").exists() and not (folder / "HEAD").is_file():
        return None
    git = Git(folder)
    out = git.run("rev-parse", "--is-bare-repository", "--show-toplevel", check=False).decode().split()
    if not out:
        return None
    if out[0] == "true":
        return git
    if len(out) > 1 and Path(out[1]).resolve() == folder.resolve():
        return git
    return None


def _git_files(git: Git, folder: Path) -> tuple[str, list[RemoteFile], dict[str, _Local]]:
    head = git.run("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).decode().strip()
    if not head:
        raise UsageError(f"{folder} is a git repo without a commit: commit first, or upload a plain folder")
    git_dir = Path(git.text("rev-parse", "--absolute-git-dir"))
    objects = lfs_storage_dir(git) / "objects"
    bare = git.text("rev-parse", "--is-bare-repository") == "true"
    lfs = {e.path: e for e in list_lfs_entries(git, head)}
    files: list[RemoteFile] = []
    local: dict[str, _Local] = {}
    missing: list[str] = []
    listing = git.run("ls-tree", "-r", "-z", "-l", "--full-tree", head)
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha, size = meta.split()
        path = raw_path.decode("utf-8", "surrogateescape")
        if kind != b"blob":
            continue  # a submodule is not a file of the repo
        path = safe_relpath(path)
        if mode == b"120000":
            raise UsageError(f"{path} is a symlink in {head[:12]}: a hub repo holds files only")
        entry = lfs.get(path)
        if entry is None:
            files.append(RemoteFile(path, int(size), "", git_sha1=sha.decode()))
            local[path] = _Local(git_dir=git_dir, blob=sha.decode())
            continue
        oid, want = entry.pointer.oid, entry.pointer.size
        candidates = [objects / object_relpath(oid)] + ([] if bare else [folder / path])
        found = next((c for c in candidates if _regular_of_size(c, want)), None)
        if found is None:
            missing.append(path)
            continue
        files.append(RemoteFile(path, want, "", sha256=oid))
        local[path] = _Local(path=found, signature=file_signature(os.stat(found)))
    if missing:
        raise NotFoundError(
            f"{len(missing)} LFS object(s) of {head[:12]} are not in {objects}, e.g. {missing[0]}: "
            "fetch them first (hubget pull, or git lfs pull)"
        )
    return head, files, local


def _regular_of_size(path: Path, size: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return os.path.isfile(path) and not os.path.islink(path) and st.st_size == size


def _hash_local(path: Path, signature: tuple[int, int, int, int], label: str) -> StreamHash:
    hasher = StreamHash(size=signature[0], git_sha1=True)
    reader = FileReader(path, signature, label=label)
    buf = bytearray(READ_BLOCK)
    pos = 0
    while pos < signature[0]:
        view = memoryview(buf)[: min(READ_BLOCK, signature[0] - pos)]
        reader.read_into(pos, view)
        hasher.update(view)
        pos += len(view)
    return hasher


def _folder_files(folder: Path, progress: ProgressSink) -> tuple[str, list[RemoteFile], dict[str, _Local]]:
    walk = walk_folder(folder, skip_dirs=FOLDER_SKIP_DIRS)
    if walk.refused:
        rel, why = walk.refused[0]
        more = f" (and {len(walk.refused) - 1} more)" if len(walk.refused) > 1 else ""
        raise UsageError(f"{folder}: {rel} is {why}; not uploaded{more}")
    clash = [f.rel for f in walk.files if f.rel.startswith(f"{META_DIR}/")]
    if clash:  # (before anything is hashed)
        raise UsageError(f"{folder}: {clash[0]} is under {META_DIR}/, where hubget keeps its manifest")
    patterns = lfs_patterns(folder)
    files: list[RemoteFile] = []
    local: dict[str, _Local] = {}
    etags: list[tuple[str, str]] = []
    progress.message(f"hashing {len(walk.files)} file(s) of {folder}")
    for f in walk.files:
        path = safe_relpath(f.rel)
        signature = file_signature(f.stat)
        hasher = _hash_local(f.real, signature, path)
        sha256, git_sha1 = hasher.sha256(), hasher.git_sha1()
        if is_lfs_path(path, f.stat.st_size, patterns):
            files.append(RemoteFile(path, f.stat.st_size, "", sha256=sha256))
            etags.append((path, sha256))
        else:
            files.append(RemoteFile(path, f.stat.st_size, "", sha256=sha256, git_sha1=git_sha1))
            etags.append((path, git_sha1 or ""))
        local[path] = _Local(path=f.real, signature=signature)
    return folder_commit_id(etags), files, local


def _opener(where: _Local, label: str) -> PartReader:
    if where.path is not None and where.signature is not None:
        return FileReader(where.path, where.signature, label=label)
    assert where.git_dir is not None
    proc = subprocess.run(
        ["git", "-c", "safe.directory=*", f"--git-dir={where.git_dir}", "cat-file", "blob", where.blob],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NotFoundError(f"{label}: git cannot read blob {where.blob}: {proc.stderr.decode().strip()}")
    return BytesReader(proc.stdout)


def upload(
    folder: str | os.PathLike[str],
    to: str,
    *,
    repo_id: str | None = None,
    repo_type: RepoType | None = None,
    endpoint: str | None = None,
    bucket: S3Bucket | None = None,
    plain: bool = False,
    connections: int = 8,
    max_workers: int = 8,
    part_size: int = DEFAULT_PART_SIZE,
    progress: ProgressSink | None = None,
    dry_run: bool = False,
) -> StageReport:
    """Publish ``folder`` (a git repo's HEAD, or a plain folder; ``plain=True`` takes a git work tree's
    files as they are) into ``to`` = ``s3://bucket/prefix``, for `hubget serve --store`."""
    started = time.monotonic()
    progress = progress or ProgressSink()
    root = Path(folder)
    if not root.is_dir():
        raise NotFoundError(f"{root} is not a folder")
    target = parse_s3_url(to)
    named_id, named_type = repo_for_target(target, root)
    ref = RepoRef(repo_id or named_id, repo_type or named_type)
    git = None if plain else _git_top(root)
    if git is not None:
        commit, files, local = _git_files(git, root)
        kind = "git"
    else:
        commit, files, local = _folder_files(root, progress)
        kind = "folder"
    snapshot = Snapshot(ref, commit, files, source=kind)
    bucket = bucket or S3Bucket(target.bucket, endpoint=endpoint, max_connections=connections + 8)

    def job_for(key: str, f: RemoteFile) -> ObjectJob:
        where = local[f.path]
        return ObjectJob(
            key=key,
            size=f.size or 0,
            url="",
            sha256=f.sha256,
            git_sha1=f.git_sha1,
            label=f.path,
            open=lambda: _opener(where, f.path),
        )

    return stage_files(
        bucket,
        target,
        snapshot,
        files,
        "main",
        job_for=job_for,
        connections=connections,
        max_workers=max_workers,
        part_size=part_size,
        progress=progress,
        dry_run=dry_run,
        started=started,
    )
