"""Write a small file whole or not at all: a temp file beside it, renamed over it.

The temp name is the writer's own (``mkstemp``): two processes writing the same file (on a cache
whose file locks do not work) never rename each other's temp file away. A reader sees the old
content or the new, never a part.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, durable: bool = False, make_parent: bool = False) -> None:
    """Replace ``path`` with ``data``; ``durable`` fsyncs the data before the rename."""
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
