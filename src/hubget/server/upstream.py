"""What `hubget serve --upstream` needs from whatever fills its store from an upstream hub.

The server only knows this interface; ``hubget.api.mirror.Mirror`` implements it (with the client
pipeline: source -> engine -> HF-cache layout) and the CLI hands it to ``create_app``, so server/
imports no façade. Data crosses it as the plain models of ``hubget.models``.

A blob being filled is shared by every client that wants it (single flight): each one streams the
growing partial file, reading which byte ranges are already on disk from ``BlobFill.progress``
(a ``hubget.models.FillProgress``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hubget.models import FillProgress, RemoteFile, RepoType, Snapshot


class DirectRead(Protocol):
    """Bytes of a blob straight from upstream (a range far ahead of the fill)."""

    def readinto(self, buf: bytearray | memoryview) -> int: ...

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        """(name, type, help, labels, value) for /metrics (Prometheus text)."""
        ...

    def close(self) -> None: ...


class BlobFill(Protocol):
    """One blob being fetched from upstream into the store."""

    size: int
    blob: Path  # the verified file, once ``progress().state == "done"``

    def progress(self) -> FillProgress: ...

    def open_direct(self, start: int, end: int) -> DirectRead | None:
        """Bytes ``[start, end)`` from upstream, not through the store; None when not possible now."""
        ...


@dataclass(frozen=True)
class Growing:
    """A body whose bytes are still arriving: ``current()`` joins the blob's fill, or starts a new one
    when there is none (or the last one failed)."""

    current: Callable[[], BlobFill]


class Upstream(Protocol):
    """The repos of an upstream hub, cached: revisions for a while, listings and blobs for good."""

    endpoint: str

    def snapshot(
        self, repo_type: RepoType, repo_id: str, revision: str, token: str | None = None
    ) -> Snapshot:
        """The commit ``revision`` names (a branch or tag is asked upstream again once its TTL is
        over; when upstream fails, the last known commit) and every file of it. ``token``: the
        client's own upstream token, used when the mirror's cannot see the repo."""
        ...

    def authorize(
        self, repo_type: RepoType, repo_id: str, commit: str, token: str | None, *, files: bool
    ) -> None:
        """Raise (GatedRepoError, AuthError, RepoNotFoundError) unless a client with ``token`` may
        read the repo (``files``: its files' bytes, else its listings). Public repos: no check."""
        ...

    def known_revisions(self, repo_type: RepoType, repo_id: str) -> dict[str, str]:
        """Branches and tags seen so far, with their last known commit."""
        ...

    def commit_date(self, repo_type: RepoType, repo_id: str, commit: str) -> float: ...

    def blob(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        """The verified file in the store, or None."""
        ...

    def fill(self, snapshot: Snapshot, file: RemoteFile, token: str | None = None) -> BlobFill: ...

    def blob_url(self, snapshot: Snapshot, file: RemoteFile, token: str | None = None) -> str | None:
        """Where clients fetch the blob themselves (a presigned URL of an object store that holds the
        store's blobs), once it is complete; None when this process serves the bytes (``blob``,
        ``fill``)."""
        ...

    def whole_only(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        """True for a while after bytes of this blob were disowned: Range requests then get the whole
        file (200), so no client splices bytes it got from the failed fill with good ones."""
        ...

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        """(name, type, help, labels, value) for /metrics (Prometheus text)."""
        ...

    def close(self) -> None: ...
