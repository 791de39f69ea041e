"""Plain data passed along the pipeline: RepoRef -> Source.resolve() -> Snapshot -> Engine -> Layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

RepoType = Literal["model", "dataset", "space"]
REPO_TYPES: tuple[str, ...] = ("model", "dataset", "space")


@dataclass(frozen=True)
class RepoRef:
    repo_id: str  # "org/name"
    repo_type: RepoType = "model"
    revision: str | None = None  # None: the source's default branch


@dataclass
class RemoteFile:
    """One file of a snapshot, as a hub describes it.

    ``path`` has already been checked by ``hubget.paths.safe_relpath``.
    ``sha256`` is known for LFS files (HF) and for every file on ModelScope;
    ``git_sha1`` is the git blob id (HF non-LFS files). ``etag`` is what the HF cache names blobs by.
    """

    path: str
    size: int | None
    url: str
    sha256: str | None = None
    git_sha1: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra_urls: list[str] = field(default_factory=list)  # other sources serving the same bytes
    xet_hash: str | None = None  # the Xet content hash, for a Xet-backed file (fetched over HTTP here)
    rate_bucket: str | None = None  # the hub's rate-limit bucket that requests to ``url`` count against

    @property
    def etag(self) -> str:
        if self.sha256:
            return self.sha256
        if self.git_sha1:
            return self.git_sha1
        raise ValueError(f"{self.path}: the hub gave no hash for this file")


@dataclass
class Snapshot:
    ref: RepoRef
    commit: str  # 40-hex on HF; on ModelScope the revision name when no sha is known
    files: list[RemoteFile]
    source: str  # "huggingface", "modelscope", a mirror's endpoint...
    endpoint: str = ""

    def by_path(self) -> dict[str, RemoteFile]:
        return {f.path: f for f in self.files}


FillState = Literal["waiting", "running", "done", "failed"]


@dataclass(frozen=True)
class FillProgress:
    """Where a mirror's fill of one blob from upstream stands (``hubget serve --upstream``).

    ``done`` lists the ``[start, end)`` ranges of ``partial`` that are written and synced (not yet
    verified). ``lineage`` names the bytes on disk: it changes whenever bytes that were there are
    disowned (the hash failed, the partial file was lost), so a client that got bytes of an older
    lineage is never given the rest from a newer one. ``error`` is the HubgetError of a failed fill."""

    state: FillState
    lineage: int
    done: tuple[tuple[int, int], ...] = ()
    partial: Path | None = None
    error: Exception | None = None
