"""Per-blob inter-process locks (flock where it works, released when a process dies).

``take_locks`` takes many at once, as a download of thousands of small files needs: one ``open`` and
one ``flock`` per lock file, each folder made once. It is the same lock as filelock's (which
huggingface_hub uses on the same files): an exclusive ``flock`` on the lock file, left in place when
released so that waiters share its inode, and taken again when the file was unlinked meanwhile.
Where ``flock`` is missing, filelock (with its soft-lock fallback) takes that lock instead; it is
imported only then (its import costs a download's start-up about 20 ms).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from filelock import FileLock

NO_FLOCK = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL})


class Held(Protocol):
    def release(self) -> None: ...


class FlockLock:
    """An exclusive ``flock`` held on an open lock file; ``release`` closes it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass  # closing releases it too
            os.close(fd)


def _flock_now(path: Path) -> Held | None:
    """The lock at ``path`` without waiting (its folder exists); None when another process holds it."""
    for _ in range(8):  # the lock file unlinked between our open and our flock: open it again
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:
            os.close(fd)
            if e.errno in NO_FLOCK:
                return try_lock(path)  # filelock knows what to do where flock is missing
            raise
        if os.fstat(fd).st_nlink > 0:
            return FlockLock(fd)
        os.close(fd)
    return try_lock(path)


def take_locks(paths: Iterable[Path]) -> tuple[dict[Path, Held], list[Path]]:
    """Take every lock in ``paths`` that nobody holds: (the locks taken, the paths held elsewhere)."""
    held: dict[Path, Held] = {}
    busy: list[Path] = []
    folders: set[Path] = set()
    try:
        for path in paths:
            if path in held:
                continue
            if path.parent not in folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                folders.add(path.parent)
            lock = _flock_now(path)
            if lock is None:
                busy.append(path)
            else:
                held[path] = lock
    except BaseException:
        for lock in held.values():
            lock.release()
        raise
    return held, busy


def try_lock(path: Path) -> FileLock | None:
    """Take the lock at ``path`` without waiting; None when another process holds it."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def wait_lock(path: Path, timeout: float) -> FileLock:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    lock.acquire(timeout=timeout)
    return lock
