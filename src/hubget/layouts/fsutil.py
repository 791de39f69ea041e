"""Small filesystem helpers shared by the layouts."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def relative_symlink(blob: Path, link: Path) -> None:
    """Point ``link`` at ``blob`` with a relative symlink, replacing what was there; copy the blob
    where the filesystem has no symlinks."""
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(blob, link.parent)
    tmp = link.with_name(f".{link.name}.hubget-link")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(rel, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, link)
