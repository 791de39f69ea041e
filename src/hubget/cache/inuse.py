"""Is a download using this file right now? Asked the way the downloaders answer it: by their locks.

huggingface_hub and hubget hold ``{cache}/.locks/{repo folder}/{etag}.lock`` while they write
``blobs/{etag}`` (and link it into a snapshot); the modelscope SDK and hubget hold
``{root}/.lock/file_{sha256 of the repo and path}.lock`` while they write a ModelScope file. Both are
``flock``s (filelock), released by the kernel when a process dies, so a lock we can take without
waiting is a lock nobody holds. Everything here is taken without waiting: what is locked is skipped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from hubget.layouts.locks import try_lock
from hubget.transfer.owners import owner_alive, private_owner
from hubget.transfer.partial import load_state, state_path

# A lock file nobody holds is only removed once it is this old: filelock releases in place so that
# waiters share the inode; current filelock re-checks the inode after taking the lock, older ones
# (in another tool's environment) may not, and a fresh lock file is most likely about to be used.
STALE_LOCK_AGE = 600.0


@contextlib.contextmanager
def held(lock_path: Path, *, create: bool = True) -> Iterator[bool]:
    """Take ``lock_path`` without waiting; yields False when another process holds it.

    With ``create=False`` (dry runs) a lock file that does not exist counts as free and is not
    created: nobody can hold a lock on a file that is not there."""
    if not create and not lock_path.exists():
        yield True
        return
    try:
        lock = try_lock(lock_path)
    except OSError:
        yield False  # a lock we cannot even open (read-only cache, permissions): hands off
        return
    if lock is None:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def lock_is_free(lock_path: Path) -> bool:
    with held(lock_path, create=False) as free:
        return free


def remove_stale_lock(lock_path: Path, *, min_age: float = STALE_LOCK_AGE, dry_run: bool = False) -> bool:
    """Remove a lock file nobody holds and nobody created in the last ``min_age`` seconds.

    The file is unlinked while we hold it, so a process that opened it meanwhile and takes it after
    us finds it unlinked (filelock checks ``st_nlink``) and starts over on a new file."""
    try:
        if time.time() - lock_path.lstat().st_mtime < min_age:
            return False
    except OSError:
        return False
    if dry_run:
        return lock_is_free(lock_path)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Exception:  # Timeout, or a file we cannot lock at all
        return False
    try:
        os.unlink(lock_path)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(Exception):
            lock.release()


def hubget_partial_in_use(partial: Path) -> bool:
    """Whether a hubget temp file belongs to a writer that is still alive (its resume state says who).

    This covers writers whose lock does not work (NFS without flock) and private temp names."""
    private = private_owner(partial.name)
    if private is not None:
        try:
            return owner_alive(private, partial.stat().st_mtime)
        except OSError:
            return False
    state_file = partial if partial.name.endswith(".json") else state_path(partial)
    state = load_state(state_file)
    if state is None or not state.owner:
        return False
    try:
        return owner_alive(state.owner, state_file.stat().st_mtime)
    except OSError:
        return False
