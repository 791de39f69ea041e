"""Which files of a checkout are LFS pointers, and what state their work-tree copies are in."""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from hubget.gitclone.gitcmd import Git
from hubget.paths import join_inside, safe_relpath
from hubget.sources.gitlfs import POINTER_MAX_SIZE, LfsPointer, parse_pointer


@dataclass(frozen=True)
class LfsEntry:
    path: str  # repo-relative, checked by safe_relpath
    pointer: LfsPointer
    executable: bool


class WorktreeState(enum.Enum):
    POINTER = "pointer"  # still the pointer git checked out: to be replaced by the content
    MISSING = "missing"  # deleted from the work tree: to be restored
    PRESENT = "present"  # already holds the content (an earlier run, or git-lfs)
    MODIFIED = "modified"  # something else: the user's; never touched


def list_lfs_entries(git: Git, treeish: str = "HEAD") -> list[LfsEntry]:
    """LFS files of ``treeish``: blobs that parse as pointers and have ``filter=lfs`` (as git-lfs decides)."""
    listing = git.run("ls-tree", "-r", "-z", "-l", "--full-tree", treeish)
    candidates: list[tuple[str, str, bool]] = []  # (blob sha, path, executable)
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha, size = meta.split()
        if kind != b"blob" or mode not in (b"100644", b"100755") or int(size) > POINTER_MAX_SIZE:
            continue
        candidates.append((sha.decode(), raw_path.decode("utf-8", "surrogateescape"), mode == b"100755"))
    if not candidates:
        return []
    blobs = _read_blobs(git, [sha for sha, _, _ in candidates])
    pointers: dict[str, tuple[LfsPointer, bool]] = {}
    for sha, path, executable in candidates:
        pointer = parse_pointer(blobs.get(sha, b""))
        if pointer is not None:
            pointers[path] = (pointer, executable)
    lfs_paths = _lfs_filtered(git, list(pointers))
    return [LfsEntry(safe_relpath(p), pointers[p][0], pointers[p][1]) for p in pointers if p in lfs_paths]


def _read_blobs(git: Git, shas: list[str]) -> dict[str, bytes]:
    unique = list(dict.fromkeys(shas))
    out = git.run("cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in unique:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        pos = header_end + 1
        if len(header) < 3 or header[1] == b"missing":
            continue
        size = int(header[2])
        blobs[sha] = out[pos : pos + size]
        pos += size + 1  # content is followed by a newline
    return blobs


def _lfs_filtered(git: Git, paths: list[str]) -> set[str]:
    if not paths:
        return set()
    encoded = b"\0".join(p.encode("utf-8", "surrogateescape") for p in paths) + b"\0"
    out = git.run("check-attr", "-z", "--stdin", "filter", input=encoded).split(b"\0")
    found: set[str] = set()
    for i in range(0, len(out) - 2, 3):
        if out[i + 2] == b"lfs":
            found.add(out[i].decode("utf-8", "surrogateescape"))
    return found


def worktree_state(root: Path, entry: LfsEntry) -> WorktreeState:
    path = join_inside(root, entry.path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return WorktreeState.MISSING
    if not stat.S_ISREG(st.st_mode):
        return WorktreeState.MODIFIED
    if st.st_size <= POINTER_MAX_SIZE:
        with open(path, "rb") as f:
            if parse_pointer(f.read(POINTER_MAX_SIZE + 1)) == entry.pointer:
                return WorktreeState.POINTER
    # Same size as the object: taken as the content (hashing every large file on each run would
    # cost minutes; `git status` and `git lfs fsck` are the full checks).
    return WorktreeState.PRESENT if st.st_size == entry.pointer.size else WorktreeState.MODIFIED


def path_matches(path: str, pattern: str) -> bool:
    """git-lfs's ``lfs.fetchinclude``/``fetchexclude`` matching: gitignore-like globs.

    A pattern without ``/`` matches a file name or any folder name on the path; one with ``/``
    matches the whole path from the top; a folder matches everything below it.
    """
    pat = pattern.strip().lstrip("/")
    if not pat:
        return False
    if pat.endswith("/"):
        pat = pat.rstrip("/")
    if "/" not in pat:
        return any(fnmatchcase(part, pat) for part in path.split("/"))
    return fnmatchcase(path, pat) or fnmatchcase(path, pat + "/*")


def selected(path: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(path_matches(path, p) for p in include):
        return False
    return not any(path_matches(path, p) for p in exclude)


def split_patterns(values: list[str] | tuple[str, ...] | None) -> list[str]:
    """Patterns from repeated options or git-lfs's comma-separated config values."""
    out: list[str] = []
    for value in values or ():
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return out
