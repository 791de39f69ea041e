"""Small filesystem helpers shared by the layouts."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from hubget.atomicfile import atomic_write


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), whole or not at all; its folder is made if missing."""
    atomic_write(path, text.encode(), make_parent=True)


def relative_symlink(blob: Path, link: Path, rel: str | None = None, *, parent_ready: bool = False) -> None:
    """Point ``link`` at ``blob`` with a relative symlink (``rel``, when the caller knows it),
    replacing what was there; copy the blob where the filesystem has no symlinks.

    A new link is one ``symlink``; one already pointing at ``blob`` is left as it is."""
    if not parent_ready:
        link.parent.mkdir(parents=True, exist_ok=True)
    if rel is None:
        rel = os.path.relpath(blob, link.parent)
    try:
        os.symlink(rel, link)
        return
    except FileExistsError:
        with contextlib.suppress(OSError):
            if os.readlink(link) == rel:
                return
    except OSError:
        pass  # no symlinks here, or a name in the way: the general path below
    tmp = link.with_name(f".{link.name}.hubget-link")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(rel, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, link)


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def reflink(src: Path, dst: Path, *, exclusive: bool = True) -> None:
    """Make ``dst`` a reflink of ``src`` (shared extents, an inode of its own: writing one never
    changes the other). Raises OSError where the filesystem cannot (ext4: EOPNOTSUPP/EXDEV);
    ``dst`` is then removed. ``exclusive``: fail if ``dst`` exists rather than truncate it."""
    with open(src, "rb") as s, open(dst, "xb" if exclusive else "wb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError:
            d.close()
            os.unlink(dst)
            raise


def list_dir(path: Path) -> list[os.DirEntry[str]]:
    """The entries of a folder, or none when it cannot be read (gone, not a folder, no access)."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []
