"""Which files the Hugging Face Hub keeps in Git LFS (described by sha256) and which in git (by
their git blob sha1): a folder's ``.gitattributes`` ``filter=lfs`` patterns, else the patterns the hub
puts in every new repo, and anything over 10 MiB. Shared by the server (plain-folder repos) and by
``hubget cache import``, which names blobs the way the hub would."""

from __future__ import annotations

import fnmatch
from pathlib import Path

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
# The patterns of the .gitattributes the Hugging Face Hub puts in every new repo.
HF_DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.gguf",
)  # fmt: skip


def lfs_patterns(folder: Path) -> tuple[str, ...]:
    """``filter=lfs`` patterns of the folder's .gitattributes, or the hub's defaults without one."""
    try:
        text = (folder / ".gitattributes").read_text("utf-8", "replace")
    except OSError:
        return HF_DEFAULT_LFS_PATTERNS
    patterns = [line.split()[0] for line in text.splitlines() if "filter=lfs" in line.split()[1:]]
    return tuple(patterns) if patterns else HF_DEFAULT_LFS_PATTERNS


def is_lfs_path(path: str, size: int, patterns: tuple[str, ...]) -> bool:
    if size > LFS_SIZE_THRESHOLD:
        return True
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        # gitattributes: a pattern without a slash matches the name at any depth.
        target = path if "/" in pattern.strip("/") else name
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
            return True
    return False


__all__ = ["HF_DEFAULT_LFS_PATTERNS", "LFS_SIZE_THRESHOLD", "is_lfs_path", "lfs_patterns"]
