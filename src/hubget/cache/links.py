"""One file's bytes under a second name without storing them twice.

A reflink (``FICLONE``: btrfs, XFS, bcachefs, ...) shares the extents but not the inode: writing
into either file copies what it changes, so it is always safe. A hard link is one inode under two
names: safe only where nobody writes into the file in place, which is why callers say where they
link (``hubget.cache.dedup`` explains which cache files qualify). A byte copy is the last resort
and only when asked for.

The new name is built beside the target and renamed over it, so the target is always either the
old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from hubget.layouts.fsutil import reflink

TEMP_SUFFIX = ".hubget-link"
# The filesystem cannot do it (or not between these two folders): try the next method.
UNSUPPORTED = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EPERM, errno.EMLINK}
)
METHODS = {
    "auto": ("reflink", "hardlink"),
    "reflink": ("reflink",),
    "hardlink": ("hardlink",),
    "copy": ("reflink", "copy"),  # files of their own: a reflink is one, a hard link is not
    "any": ("reflink", "hardlink", "copy"),  # shared where the filesystem allows, else copied
}


def _make(method: str, src: Path, dst: Path) -> None:
    if method == "reflink":
        reflink(src, dst)
    elif method == "hardlink":
        os.link(src, dst, follow_symlinks=True)
    else:
        shutil.copyfile(src, dst)


def place(src: Path, target: Path, *, mode: str = "auto", keep_mtime: bool = True) -> str:
    """Make ``target`` hold the bytes of ``src``: returns "reflink", "hardlink" or "copy".

    ``mode`` "auto" tries a reflink, then a hard link, and raises OSError when neither works;
    "copy" wants a file of its own: a reflink, else a byte copy; "any" copies only when neither
    a reflink nor a hard link is possible. A reflink or a copy keeps ``src``'s
    mtime (a hard link shares it)."""
    if mode not in METHODS:
        raise ValueError(f"unknown link mode {mode!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TEMP_SUFFIX}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    last: OSError | None = None
    for method in METHODS[mode]:
        try:
            _make(method, src, tmp)
        except OSError as e:
            last = e
            if e.errno in UNSUPPORTED:
                continue
            raise
        try:
            if method != "hardlink" and keep_mtime:
                st = os.stat(src)
                os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return method
    raise last or OSError(errno.EOPNOTSUPP, f"cannot link {src} to {target}")


def make_read_only(path: Path) -> None:
    """Drop every write bit of ``path`` (for all of its names, when it is a hard link)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
