"""Whether two listings describe the same bytes, and two repos the same model: the proof a mirror
or a ModelScope repo must give before it serves a file (same size and hash, never the name alone)."""

from __future__ import annotations

from hubget.models import RemoteFile, Snapshot


def same_bytes(a: RemoteFile, b: RemoteFile) -> bool:
    """True when two listings describe the same content: same size and an equal hash of one kind."""
    if a.size is None or a.size != b.size:
        return False
    if a.sha256 and b.sha256:
        return a.sha256.lower() == b.sha256.lower()
    if a.git_sha1 and b.git_sha1:
        return a.git_sha1.lower() == b.git_sha1.lower()
    return False  # no hash both sides give: nothing proves the bytes are the same


def weight_files(snapshot: Snapshot) -> list[RemoteFile]:
    """The files the hub describes by sha256 (LFS: weights, tokenizer models, ...)."""
    return [f for f in snapshot.files if f.sha256]


def model_match(reference: Snapshot, other: Snapshot) -> tuple[bool, str]:
    """Whether ``other`` holds the same model as ``reference``: every weight file present with the
    same size and sha256. Returns the verdict in words."""
    weights = weight_files(reference)
    if not weights:
        return False, "nothing to compare: the reference lists no file with a sha256"
    theirs = other.by_path()
    missing = [f.path for f in weights if f.path not in theirs]
    if missing:
        return False, f"lacks {len(missing)} weight file(s), e.g. {missing[0]}"
    differ = [f.path for f in weights if not same_bytes(f, theirs[f.path])]
    if differ:
        return False, f"different bytes (sha256 or size) for {len(differ)} weight file(s), e.g. {differ[0]}"
    return True, f"same sha256 and size for all {len(weights)} weight file(s)"
