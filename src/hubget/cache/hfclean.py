"""Removing revisions, blobs, temp files and locks from a Hugging Face cache without breaking it.

The order keeps the cache valid for huggingface_hub at every step: refs first (a ref must never
name a snapshot that is gone), then the snapshot folders, then the blobs no remaining snapshot
links to. A blob (or a temp file of one) is only removed while we hold its download lock
(``.locks/{repo folder}/{etag}.lock``, taken without waiting), and with the lock held the repo's
snapshots are read again: a download that linked the blob in the meantime keeps it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from hubget.cache import hfscan
from hubget.cache.deletion import Cleaner, Removed
from hubget.cache.inuse import STALE_LOCK_AGE, held, hubget_partial_in_use, lock_is_free, remove_stale_lock
from hubget.layouts.fsutil import list_dir

LOCK_BATCH = 200  # blob locks held at once (each one is an open file)
CACHE = "hf"


def remove_revisions(cleaner: Cleaner, repo: hfscan.HfRepo, commits: set[str], *, whole_repo: bool) -> None:
    """Remove the snapshots ``commits`` (all of them with ``whole_repo``), their refs, and the blobs
    nothing else links to; with ``whole_repo`` also temp files, locks and the folder itself."""
    rid = repo.repo_id
    if whole_repo:
        commits = {r.commit for r in repo.revisions}
    for name, commit in sorted(repo.refs.items()):
        if whole_repo or commit in commits:
            cleaner.unlink(CACHE, "ref", repo.path / "refs" / name, rid)
    for rev in repo.revisions:
        if rev.commit in commits:
            cleaner.rmtree(CACHE, "revision", rev.path, rid)
            cleaner.rmtree(CACHE, "no-exist", repo.path / ".no_exist" / rev.commit, rid)
    kept = {f.etag for r in repo.revisions if r.commit not in commits for f in r.files}
    candidates = {f.etag for r in repo.revisions if r.commit in commits for f in r.files} - kept
    if whole_repo:
        candidates |= {n for n in _blob_names(repo) if not hfscan.is_partial_name(n)}
    remove_blobs(cleaner, repo, candidates, removed_commits=commits)
    if whole_repo:
        remove_partials(cleaner, repo)
        if not any(s.repo_id == rid and s.cache == CACHE for s in cleaner.report.skipped):
            remove_locks(cleaner, repo.cache_dir / ".locks" / repo.folder, min_age=0.0)
            cleaner.rmtree(CACHE, "repo", repo.path, rid)


def remove_blobs(
    cleaner: Cleaner, repo: hfscan.HfRepo, etags: set[str], *, removed_commits: set[str] | None = None
) -> None:
    """Remove ``blobs/{etag}`` for each etag, under its lock, if no snapshot links to it by then."""
    names = sorted(
        e for e in etags if (repo.path / "blobs" / e).exists() or os.path.islink(repo.path / "blobs" / e)
    )
    for batch in _batches(names, LOCK_BATCH):
        with ExitStack() as stack:
            free = []
            for etag in batch:
                if stack.enter_context(held(repo.lock_path(etag), create=not cleaner.dry_run)):
                    free.append(etag)
                else:
                    cleaner.skip(CACHE, repo.path / "blobs" / etag, "a download holds its lock", repo.repo_id)
            if not free:
                continue
            # Read the snapshots again with the locks held: a link made since the first read wins.
            fresh = hfscan.read_repo(repo.cache_dir, repo.path)
            gone = removed_commits or set()
            linked = set()
            if fresh is not None:
                linked = {f.etag for r in fresh.revisions if r.commit not in gone for f in r.files}
            for etag in free:
                if etag in linked:
                    cleaner.skip(CACHE, repo.path / "blobs" / etag, "a snapshot links to it", repo.repo_id)
                    continue
                cleaner.unlink(CACHE, "blob", repo.path / "blobs" / etag, repo.repo_id)


def remove_partials(cleaner: Cleaner, repo: hfscan.HfRepo) -> None:
    """huggingface_hub's ``*.incomplete`` and hubget's ``*.hubget-partial*`` nobody is writing."""
    for path in hfscan.partial_files(repo.path):
        etag = hfscan.partial_etag(path.name)
        with held(repo.lock_path(etag), create=not cleaner.dry_run) as free:
            if not free:
                cleaner.skip(CACHE, path, "a download holds its lock", repo.repo_id)
            elif ".hubget-partial" in path.name and hubget_partial_in_use(path):
                cleaner.skip(CACHE, path, "its writer is still running", repo.repo_id)
            else:
                cleaner.unlink(CACHE, "partial", path, repo.repo_id)


def running_download(repo: hfscan.HfRepo) -> bool:
    """Whether any lock of this repo is held: some download is writing into it right now."""
    return any(not lock_is_free(p) for p in _lock_files(repo.cache_dir / ".locks" / repo.folder))


def prune_repo(cleaner: Cleaner, repo: hfscan.HfRepo, *, min_age: float = STALE_LOCK_AGE) -> None:
    """Detached revisions, orphan blobs, stale temp files and ``.no_exist`` of gone snapshots."""
    now = time.time()
    detached = {r.commit for r in repo.revisions if not r.refs}
    if detached:
        # A download writes its ref last: until then its snapshot looks detached. Leave young
        # detached snapshots and those of a repo someone is downloading into.
        if running_download(repo):
            for commit in sorted(detached):
                cleaner.skip(
                    CACHE,
                    repo.path / "snapshots" / commit,
                    "a download into this repo is running",
                    repo.repo_id,
                )
            detached = set()
        for commit in sorted(detached):
            if now - _newest_mtime(repo.path / "snapshots" / commit) < min_age:
                cleaner.skip(
                    CACHE, repo.path / "snapshots" / commit, "detached but recently written", repo.repo_id
                )
                detached.discard(commit)
    if detached:
        remove_revisions(cleaner, repo, detached, whole_repo=False)
    kept = {f.etag for r in repo.revisions if r.commit not in detached for f in r.files}
    orphans = {n for n in _blob_names(repo) if not hfscan.is_partial_name(n)} - kept
    remove_blobs(cleaner, repo, orphans, removed_commits=detached)
    remove_partials(cleaner, repo)
    snapshots = {r.commit for r in repo.revisions if r.commit not in detached}
    for entry in list_dir(repo.path / ".no_exist"):
        if entry.name not in snapshots and entry.name not in detached:
            cleaner.rmtree(CACHE, "no-exist", Path(entry.path), repo.repo_id)


def remove_locks(cleaner: Cleaner, locks_dir: Path, *, min_age: float = STALE_LOCK_AGE) -> None:
    """Lock files nobody holds (and, unless ``min_age`` is 0, nobody created lately)."""
    for path in _lock_files(locks_dir):
        if remove_stale_lock(path, min_age=min_age, dry_run=cleaner.dry_run):
            cleaner.report.removed.append(Removed(CACHE, "lock", path, 0))
    cleaner.prune_empty_dirs(locks_dir)


def prune_locks(cleaner: Cleaner, cache_dir: Path, *, min_age: float = STALE_LOCK_AGE) -> None:
    for entry in list_dir(cache_dir / ".locks"):
        if entry.is_dir(follow_symlinks=False):
            remove_locks(cleaner, Path(entry.path), min_age=min_age)


def _lock_files(locks_dir: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, names in os.walk(locks_dir):
        out.extend(Path(dirpath) / n for n in names if n.endswith(".lock"))
    return sorted(out)


def _blob_names(repo: hfscan.HfRepo) -> list[str]:
    return [e.name for e in list_dir(repo.path / "blobs") if not e.is_dir(follow_symlinks=False)]


def _newest_mtime(folder: Path) -> float:
    newest = 0.0
    for dirpath, dirs, names in os.walk(folder):
        for name in [*dirs, *names, "."]:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                pass
    return newest


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
