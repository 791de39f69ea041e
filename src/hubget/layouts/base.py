"""Where verified files go on disk. A Layout never downloads; it names targets and commits them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from hubget.models import RemoteFile, Snapshot


class Layout(Protocol):
    def target(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        """The path the engine renames the verified bytes onto (e.g. blobs/{etag})."""
        ...

    def is_complete(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        """True when the file is already on disk, verified, and needs no byte of network."""
        ...

    def commit(self, snapshot: Snapshot, file: RemoteFile) -> None:
        """After the engine placed ``target``: symlinks, metadata, index files."""
        ...

    def finalize(self, snapshot: Snapshot) -> Path:
        """After all files: refs etc. Returns the folder the user gets (snapshot dir or local_dir)."""
        ...
