"""Path safety shared by the client (hub-supplied names) and the server (request paths)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hubget.errors import UnsafePathError

MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relpath(name: str) -> str:
    """Return ``name`` if it is a harmless relative POSIX path inside a repo, else raise.

    Rejects: empty, absolute, drive letters, UNC/backslash paths, ``..`` and ``.`` segments,
    empty segments, NUL and other control characters, overlong paths or components.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError("empty file name from the hub")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafePathError(f"file name with a control character: {name!r}")
    if "\\" in name:
        raise UnsafePathError(f"file name with a backslash: {name!r}")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafePathError(f"absolute file name: {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePathError(f"file name too long ({len(name)} characters)")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"file name with an empty, '.' or '..' segment: {name!r}")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise UnsafePathError(f"file name component too long: {part[:40]!r}...")
    return name


def join_inside(root: Path, relpath: str, checked: set[Path] | None = None) -> Path:
    """Join a checked relative path below ``root`` and make sure no existing symlinked folder on
    the way leads outside ``root``. Returns the joined path (which may not exist yet).

    The last component may be a symlink: files are only ever replaced with ``os.replace``,
    which swaps the link itself and never writes through it. ``checked``: folders found to be
    real folders by earlier calls (a caller joining thousands of paths below one root keeps it);
    the folders checked now are added."""
    safe_relpath(relpath)
    target = root / relpath
    probe = root
    root_real: Path | None = None
    for part in relpath.split("/")[:-1]:
        probe = probe / part
        if checked is not None and probe in checked:
            continue
        if probe.is_symlink():
            root_real = root_real or Path(os.path.realpath(root))
            real = Path(os.path.realpath(probe))
            if real != root_real and root_real not in real.parents:
                raise UnsafePathError(f"{relpath}: a symlink on the way leads outside {root}")
        elif checked is not None and probe.is_dir():
            checked.add(probe)
    return target
