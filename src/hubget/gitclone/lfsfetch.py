"""Fetch the LFS objects of a checkout with hubget's engine and place them in the work tree.

Shared by ``hubget clone`` and ``hubget pull``. Each step is idempotent, so a run that was
killed is finished by running it again: objects already in ``.git/lfs/objects`` are not asked
for, half-fetched ones resume from the engine's partial state, and work-tree files already
holding their content are left as they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock, Timeout

from hubget import config
from hubget.errors import DiskError, HubgetError, IntegrityError, ProtocolError
from hubget.gitclone.gitcmd import Git
from hubget.gitclone.placement import PLACE_SUFFIX, LinkMode, place
from hubget.gitclone.pointers import LfsEntry, WorktreeState, list_lfs_entries, selected, worktree_state
from hubget.paths import join_inside
from hubget.sources.gitlfs import (
    LfsAction,
    LfsBatchClient,
    LfsObjectError,
    LfsPointer,
    lfs_endpoint,
    object_relpath,
    same_origin,
    strip_userinfo,
)
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import FileJob, FileResult, ProgressSink


@dataclass
class FetchOptions:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    token: str | None = None
    max_workers: int = 8
    connections: int = 8
    link_mode: LinkMode = LinkMode.AUTO
    progress: ProgressSink | None = None
    client: HttpClient | None = None


@dataclass
class FetchReport:
    repo: Path
    lfs_files: int = 0  # LFS files in HEAD
    selected: int = 0  # of those, chosen by include/exclude
    objects_fetched: int = 0
    bytes_fetched: int = 0
    bytes_resumed: int = 0
    placed: dict[str, int] = field(default_factory=dict)  # "hardlink"/"reflink"/"copy" -> files
    already_present: int = 0
    skipped_modified: list[str] = field(default_factory=list)
    errors: list[HubgetError] = field(default_factory=list)  # objects the server would not serve


def auth_headers_for(url: str, token: str | None) -> dict[str, str]:
    """Credentials for an LFS endpoint or git remote: --token, then the URL's userinfo, then HF_TOKEN
    when ``url`` is on the Hugging Face endpoint's origin (never sent to any other host)."""
    if token:
        return {"Authorization": f"Bearer {token}"}
    _, userinfo = strip_userinfo(url)
    if userinfo:
        return userinfo
    clean, _ = strip_userinfo(url)
    if same_origin(clean, config.hf_endpoint()) and (hf := config.hf_token()):
        return {"Authorization": f"Bearer {hf}"}
    return {}


def current_remote(git: Git) -> str:
    branch = git.text("symbolic-ref", "-q", "--short", "HEAD", check=False)
    if branch and (remote := git.config(f"branch.{branch}.remote")):
        return remote
    return "origin"


def find_endpoint(git: Git, root: Path, remote: str, remote_url: str) -> str:
    """git-lfs's order: ``lfs.url``, ``remote.<name>.lfsurl`` in git config, then in ``.lfsconfig``,
    then derived from the remote URL."""
    lfsconfig = root / ".lfsconfig"
    for key, file in (
        ("lfs.url", None),
        (f"remote.{remote}.lfsurl", None),
        ("lfs.url", lfsconfig),
        (f"remote.{remote}.lfsurl", lfsconfig),
    ):
        if file is not None and not file.is_file():
            continue
        if value := git.config(key, file=file):
            return value
    return lfs_endpoint(remote_url)


def lfs_storage_dir(git: Git) -> Path:
    git_dir = Path(git.text("rev-parse", "--absolute-git-dir"))
    if custom := git.config("lfs.storage"):
        return (git_dir / custom).resolve() if not os.path.isabs(custom) else Path(custom)
    return git_dir / "lfs"


def fetch_lfs(root: Path, options: FetchOptions) -> FetchReport:
    """Fetch the selected LFS objects of ``root``'s HEAD and write them into the work tree once."""
    git = Git(root)
    storage = lfs_storage_dir(git)
    storage.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(storage / "hubget.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        raise HubgetError(f"another hubget is fetching into {root}; wait for it to finish") from None
    try:
        return _fetch_locked(git, root, storage / "objects", options)
    finally:
        lock.release()


def _fetch_locked(git: Git, root: Path, objects_dir: Path, options: FetchOptions) -> FetchReport:
    report = FetchReport(repo=root)
    entries = list_lfs_entries(git)
    report.lfs_files = len(entries)
    chosen = [e for e in entries if selected(e.path, options.include, options.exclude)]
    report.selected = len(chosen)

    to_place: list[LfsEntry] = []
    present: list[str] = []
    for entry in chosen:
        _drop_leftover(root, entry.path)
        state = worktree_state(root, entry)
        if state is WorktreeState.PRESENT:
            report.already_present += 1
            present.append(entry.path)
        elif state is WorktreeState.MODIFIED:
            report.skipped_modified.append(entry.path)
        else:
            to_place.append(entry)

    def object_path(pointer: LfsPointer) -> Path:
        return objects_dir / object_relpath(pointer.oid)

    missing = {e.pointer.oid: e for e in to_place if not _object_ok(object_path(e.pointer), e.pointer.size)}
    failure: HubgetError | None = None
    if missing:
        try:
            results = _download(git, root, missing, object_path, options, report)
            report.objects_fetched = len(results)
            report.bytes_fetched = sum(r.bytes_fetched for r in results)
            report.bytes_resumed = sum(r.resumed_from for r in results)
        except HubgetError as e:  # place what did arrive, then report the failure
            failure = e

    placed: list[str] = []
    for entry in to_place:
        obj = object_path(entry.pointer)
        if not _object_ok(obj, entry.pointer.size):
            continue
        try:
            used = place(
                obj, join_inside(root, entry.path), executable=entry.executable, mode=options.link_mode
            )
        except OSError as e:
            hint = " (try --link-mode auto)" if options.link_mode is not LinkMode.AUTO else ""
            raise DiskError(
                f"{entry.path}: cannot write the file into the work tree: {e.strerror}{hint}"
            ) from e
        report.placed[used] = report.placed.get(used, 0) + 1
        placed.append(entry.path)
    _update_index(git, placed + present)
    if failure is not None:
        raise failure
    if report.errors:
        # The first failure's kind decides the exit code (404 -> not found, 403 -> auth...).
        first = report.errors[0]
        text = "; ".join(str(e) for e in report.errors[:3])
        raise type(first)(f"{len(report.errors)} LFS object(s) could not be fetched: {text}")
    return report


def _drop_leftover(root: Path, relpath: str) -> None:
    """A run killed between linking and renaming leaves the temporary name; it is ours to remove."""
    target = join_inside(root, relpath)
    leftover = target.with_name(f".{target.name}{PLACE_SUFFIX}")
    if leftover.is_file() and not leftover.is_symlink():
        leftover.unlink()


def _update_index(git: Git, paths: list[str]) -> None:
    """Record the placed files in the index, as git-lfs does after a checkout.

    The index still holds the pointer's size, and git takes a size change for a modification
    without running the clean filter; re-adding the path runs it (the pointer, hence the blob id,
    is unchanged) and stores the new stat data, so `git status` is clean and needs no re-hash.
    Only paths whose stat data changed are re-added (a rerun after a kill finds the rest done).
    """
    if not paths:
        return
    wanted = set(paths)
    changed = git.run("diff-files", "--name-only", "-z").split(b"\0")
    stale = [p for p in (c.decode("utf-8", "surrogateescape") for c in changed if c) if p in wanted]
    if stale:
        data = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in stale)
        git.run("update-index", "-q", "-z", "--stdin", input=data)


def _object_ok(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _download(
    git: Git,
    root: Path,
    missing: dict[str, LfsEntry],
    object_path: Callable[[LfsPointer], Path],
    options: FetchOptions,
    report: FetchReport,
) -> list[FileResult]:
    from hubget.transfer.engine import Engine

    remote = current_remote(git)
    remote_url = git.text("remote", "get-url", remote)
    endpoint = find_endpoint(git, root, remote, remote_url)
    endpoint_clean, _ = strip_userinfo(endpoint)
    # The remote's userinfo also serves its LFS endpoint when both live on one origin (as git-lfs does).
    auth = auth_headers_for(endpoint, options.token)
    if not auth and same_origin(endpoint_clean, strip_userinfo(remote_url)[0]):
        auth = auth_headers_for(remote_url, None)
    api_client = options.client or HttpClient()
    ref = git.text("symbolic-ref", "-q", "HEAD", check=False) or None
    batch = LfsBatchClient(endpoint_clean, client=api_client, auth_headers=auth, ref=ref)
    answers = batch.download_actions(e.pointer for e in missing.values())

    jobs: list[FileJob] = []
    for oid, entry in missing.items():
        answer = answers.get(oid)
        if answer is None:
            report.errors.append(
                ProtocolError(f"{entry.path}: the LFS server did not answer for object {oid[:12]}")
            )
            continue
        if isinstance(answer, LfsObjectError):
            report.errors.append(answer.to_exception(entry.path))
            continue
        dest = object_path(entry.pointer)
        dest.parent.mkdir(parents=True, exist_ok=True)
        jobs.append(_job(answer, dest, entry, batch))
    if not jobs:
        return []
    engine = Engine(
        options.client,
        max_workers=options.max_workers,
        connections=options.connections,
        progress=options.progress,
    )
    results = engine.run(jobs)
    for result in results:
        if not _object_ok(result.path, result.job.size or 0):
            raise IntegrityError(f"{result.job.label}: the object on disk does not have the announced size")
    return results


def _job(action: LfsAction, dest: Path, entry: LfsEntry, batch: LfsBatchClient) -> FileJob:
    pointer = entry.pointer

    def refresh(job: FileJob) -> tuple[str, dict[str, str]] | None:
        try:
            fresh = batch.refresh(pointer)
        except HubgetError:
            return None
        return fresh.href, fresh.header

    return FileJob(
        url=action.href,
        dest=dest,
        size=pointer.size,
        expected_hash=pointer.oid,
        hash_algo="sha256",
        headers=action.header,
        label=entry.path,
        refresh=refresh,
    )


def describe_remote(url: str) -> str:
    """A remote URL fit for messages: no userinfo."""
    parts = urlsplit(url)
    return strip_userinfo(url)[0] if parts.scheme in ("http", "https") else url
