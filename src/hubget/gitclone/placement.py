"""Putting a verified LFS object at its work-tree path without storing its bytes twice.

Order of preference: a reflink (copy-on-write clone: shared extents, separate inodes, so editing
either file never changes the other; btrfs, XFS, bcachefs, APFS-like filesystems), then a hard
link (one inode for both names: ext4 and most others), then a plain copy.

A hard-linked file is made read-only: writing into the work-tree file in place (``open(path,
"r+b")``, or a tool that truncates and rewrites an existing file) would otherwise change the LFS
object too, and ``git lfs fsck`` would report it corrupt. Git itself never writes into an existing
work-tree file (checkout, reset and pull unlink it and create a new one), nor does git-lfs into
an object. Replace such a file (delete it first, or write elsewhere and rename) to change it.
Root ignores file modes, so for root the read-only bit is advice only.
"""

from __future__ import annotations

import enum
import errno
import os
import shutil
from pathlib import Path

from hubget.layouts import fsutil

PLACE_SUFFIX = ".hubget-place"


class LinkMode(str, enum.Enum):
    AUTO = "auto"  # reflink, else hard link, else copy
    REFLINK = "reflink"
    HARDLINK = "hardlink"
    COPY = "copy"


def reflink(src: Path, dst: Path) -> None:
    fsutil.reflink(src, dst, exclusive=False)


def _hardlink(src: Path, dst: Path) -> None:
    os.link(src, dst)


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


_METHODS = {
    LinkMode.REFLINK: (reflink,),
    LinkMode.HARDLINK: (_hardlink,),
    LinkMode.COPY: (_copy,),
    LinkMode.AUTO: (reflink, _hardlink, _copy),
}
_UNSUPPORTED = {
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOTTY,
    errno.EPERM,
    errno.EMLINK,
}


def place(obj: Path, target: Path, *, executable: bool, mode: LinkMode = LinkMode.AUTO) -> str:
    """Make ``target`` hold the bytes of ``obj``; returns how ("reflink", "hardlink", "copy").

    The new name is built beside ``target`` and renamed over it, so ``target`` is always either
    the old pointer or the whole content.
    """
    tmp = target.with_name(f".{target.name}{PLACE_SUFFIX}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    last: OSError | None = None
    for method in _METHODS[mode]:
        try:
            method(obj, tmp)
        except OSError as e:
            if e.errno not in _UNSUPPORTED or len(_METHODS[mode]) == 1:
                raise
            last = e
            continue
        used = method.__name__.lstrip("_")
        exec_bits = 0o111 if executable else 0
        if used == "hardlink":
            os.chmod(tmp, 0o444 | (0o555 & exec_bits))
        else:
            os.chmod(tmp, (0o666 & ~_umask()) | (exec_bits & ~_umask()))
        os.replace(tmp, target)
        return used
    raise last or OSError(errno.EOPNOTSUPP, "no way to place the file")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def shares_storage(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one inode (hard link); reflinks are not visible through stat."""
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
