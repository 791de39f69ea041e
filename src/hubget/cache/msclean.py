"""Removing revisions, temp files, locks and stale records from a ModelScope cache.

Every file is removed only while we hold the lock the modelscope SDK (and hubget) hold while
writing that repo path (``{root}/.lock/file_{digest}.lock``), taken without waiting; the SDK's temp
files (``x.incomplete``, ``x.parallel_tmp``) fall under the lock of the file they become. hubget's
own temp files (``.hubget-partial/``) are named by content, not path: they go once the writer their
resume state names is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hubget.cache import msscan
from hubget.cache.deletion import Cleaner, Removed
from hubget.cache.inuse import STALE_LOCK_AGE, held, hubget_partial_in_use, remove_stale_lock
from hubget.layouts.fsutil import list_dir
from hubget.layouts.ms_cache import PARTIAL_DIR, RECORDS_DIR, sdk_lock_path

CACHE = "ms"


def _lock_for(repo: msscan.MsRepo, relpath: str) -> Path:
    return sdk_lock_path(repo.root, repo.repo_id, repo.repo_type, relpath)


def remove_revision(cleaner: Cleaner, repo: msscan.MsRepo, rev: msscan.MsRevision) -> bool:
    """Every file of one revision folder, then the folder; False when something in use stayed."""
    rid = repo.repo_id
    kept = False
    for f in rev.files:
        with held(_lock_for(repo, f.path), create=not cleaner.dry_run) as free:
            if free:
                cleaner.unlink(CACHE, "file", f.file, rid)
            else:
                kept = True
                cleaner.skip(CACHE, f.file, "a download holds its lock", rid)
    for partial in rev.partials:
        kept |= not _remove_sdk_partial(cleaner, repo, rev, partial)
    if kept:
        return False
    record = repo.records(rev).path
    if record.exists():
        cleaner.unlink(CACHE, "record", record, rid)
    # What is left are the old layout's index files and hubget's temp folder of that layout.
    for dirpath, _dirs, names in os.walk(rev.path):
        for name in names:
            path = Path(dirpath) / name
            if Path(dirpath).name == PARTIAL_DIR and hubget_partial_in_use(path):
                cleaner.skip(CACHE, path, "its writer is still running", rid)
                kept = True
            else:
                cleaner.unlink(CACHE, "file", path, rid)
    if not kept:
        cleaner.report.removed.append(Removed(CACHE, "revision", rev.path, 0, rid))
        cleaner.prune_empty_dirs(rev.path)
    return not kept


def remove_repo(cleaner: Cleaner, repo: msscan.MsRepo, revision: str | None) -> None:
    revisions = [r for r in repo.revisions if revision is None or r.name == revision]
    complete = all([remove_revision(cleaner, repo, rev) for rev in revisions])
    if revision is not None or not complete or repo.legacy:
        return
    remove_hubget_partials(cleaner, repo)
    cleaner.prune_empty_dirs(repo.path)
    if not cleaner.dry_run and not repo.path.exists():
        cleaner.report.removed.append(Removed(CACHE, "repo", repo.path, 0, repo.repo_id))


def remove_hubget_partials(cleaner: Cleaner, repo: msscan.MsRepo) -> None:
    for path in repo.hubget_partials:
        if hubget_partial_in_use(path):
            cleaner.skip(CACHE, path, "its writer is still running", repo.repo_id)
        else:
            cleaner.unlink(CACHE, "partial", path, repo.repo_id)
    cleaner.rmdir_empty(repo.path / PARTIAL_DIR, repo.path)


def _remove_sdk_partial(cleaner: Cleaner, repo: msscan.MsRepo, rev: msscan.MsRevision, partial: Path) -> bool:
    target = msscan.sdk_partial_target(partial)
    relpath = target.relative_to(rev.path).as_posix()
    with held(_lock_for(repo, relpath), create=not cleaner.dry_run) as free:
        if not free:
            cleaner.skip(CACHE, partial, "a download holds its lock", repo.repo_id)
            return False
        cleaner.unlink(CACHE, "partial", partial, repo.repo_id)
        return True


def prune_cache(cleaner: Cleaner, root: Path, *, min_age: float = STALE_LOCK_AGE) -> None:
    """Temp files nobody writes, stale locks, and hubget's records of folders that are gone."""
    for repo in msscan.read_cache(root):
        for rev in repo.revisions:
            for partial in rev.partials:
                _remove_sdk_partial(cleaner, repo, rev, partial)
        remove_hubget_partials(cleaner, repo)
    lock_dir = root / ".lock"
    for entry in list_dir(lock_dir):
        path = Path(entry.path)
        if entry.name.endswith(".lock") and remove_stale_lock(path, min_age=min_age, dry_run=cleaner.dry_run):
            cleaner.report.removed.append(Removed(CACHE, "lock", path, 0))
    for entry in list_dir(root / RECORDS_DIR):
        path = Path(entry.path)
        if entry.name.endswith(".json") and not _record_folder_exists(path):
            cleaner.unlink(CACHE, "record", path)


def _record_folder_exists(record: Path) -> bool:
    try:
        folder = json.loads(record.read_text()).get("folder")
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: not ours to judge
    return not isinstance(folder, str) or os.path.isdir(folder)
