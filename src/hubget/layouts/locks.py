"""Per-blob inter-process locks (filelock: flock where it works, released when a process dies)."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout


def try_lock(path: Path) -> FileLock | None:
    """Take the lock at ``path`` without waiting; None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def wait_lock(path: Path, timeout: float) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    lock.acquire(timeout=timeout)
    return lock
