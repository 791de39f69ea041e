"""What every source (Hugging Face, a mirror, ModelScope, a Git-LFS remote) provides.

A Source only speaks a hub's protocol: it lists a revision's files with sizes and hashes and
gives download URLs with their headers. It never writes files.
"""

from __future__ import annotations

from typing import Protocol

from hubget.models import RemoteFile, RepoRef, Snapshot


class Source(Protocol):
    name: str  # "huggingface", "modelscope", ...
    endpoint: str

    def resolve(self, ref: RepoRef) -> Snapshot:
        """List every file of ``ref`` at its revision (commit resolved). Raises HubgetError."""
        ...

    def file_info(self, ref: RepoRef, path: str) -> RemoteFile:
        """Describe one file (used when only a few files are asked for). Raises EntryNotFoundError."""
        ...
