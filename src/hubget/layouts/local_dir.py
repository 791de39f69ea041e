"""``local_dir`` mode: files at {local_dir}/{path}, with huggingface_hub's per-file metadata
({local_dir}/.cache/huggingface/download/{path}.metadata: commit, etag, timestamp) so that
huggingface_hub and hubget both know a file is current without re-hashing it."""

from __future__ import annotations

import time
from pathlib import Path

from hubget.hashing import hash_file
from hubget.layouts.fsutil import atomic_write_text
from hubget.layouts.hf_cache import CACHEDIR_TAG
from hubget.models import RemoteFile, Snapshot
from hubget.paths import join_inside, safe_relpath


class LocalDirLayout:
    def __init__(self, local_dir: Path | str) -> None:
        self.root = Path(local_dir).expanduser()
        self.meta_root = self.root / ".cache" / "huggingface"

    def metadata_path(self, path: str) -> Path:
        return join_inside(self.meta_root / "download", safe_relpath(path) + ".metadata")

    def lock_path(self, file: RemoteFile) -> Path:
        return join_inside(self.meta_root / "download", safe_relpath(file.path) + ".lock")

    def partial_path(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        """Temp bytes live under .cache/huggingface/download, not in the user's folder."""
        return join_inside(self.meta_root / "download", safe_relpath(file.path) + ".hubget-partial")

    def read_metadata(self, path: str) -> tuple[str, str, float] | None:
        try:
            lines = self.metadata_path(path).read_text().splitlines()
            return lines[0].strip(), lines[1].strip(), float(lines[2])
        except (OSError, IndexError, ValueError):
            return None

    def _write_metadata(self, snapshot: Snapshot, file: RemoteFile) -> None:
        atomic_write_text(self.metadata_path(file.path), f"{snapshot.commit}\n{file.etag}\n{time.time()}\n")

    def _ensure_meta_root(self) -> None:
        self.meta_root.mkdir(parents=True, exist_ok=True)
        for name, text in ((".gitignore", "*"), ("CACHEDIR.TAG", CACHEDIR_TAG)):
            if not (self.meta_root / name).exists():
                (self.meta_root / name).write_text(text)

    # Layout protocol
    def target(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        return join_inside(self.root, safe_relpath(file.path))

    def is_complete(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        dest = self.target(snapshot, file)
        try:
            st = dest.stat()
        except OSError:
            return False
        if dest.is_symlink() or (file.size is not None and st.st_size != file.size):
            return False
        meta = self.read_metadata(file.path)
        if meta and meta[1] == file.etag and st.st_mtime - 1 <= meta[2]:
            return True
        # A file placed by hand (or modified since): trust it only if its hash matches.
        algo = "sha256" if file.sha256 else "git-sha1"
        if hash_file(dest, algo) == file.etag:
            self._ensure_meta_root()
            self._write_metadata(snapshot, file)
            return True
        return False

    def commit(self, snapshot: Snapshot, file: RemoteFile) -> None:
        self._ensure_meta_root()
        self._write_metadata(snapshot, file)

    def finalize(self, snapshot: Snapshot) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self._ensure_meta_root()
        return self.root
