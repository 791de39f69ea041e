"""Xet or the HTTP bridge, per file: the façade's choice for a Hugging Face snapshot.

A file is fetched from the Xet CAS (sources/xet.py for the protocol, transfer/xetengine.py for the
bytes) when it has a Xet hash and a sha256, the hub hands out a read token, lz4 is installed and
neither HUBGET_DISABLE_XET nor HF_HUB_DISABLE_XET is set. Everything else, and every file the Xet path
gives up on (no token, a CAS without the file, ranges that keep failing, a sha256 mismatch), goes to
the HTTP bridge as before; a file given up for a network reason resumes there from the same partial.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget import config
from hubget.errors import DiskError, HubgetError
from hubget.layouts.base import Layout
from hubget.models import RemoteFile, Snapshot
from hubget.sources.huggingface import HfSource
from hubget.sources.xet import XetAuth, XetCas, XetUnavailable, token_url
from hubget.transfer import xetdecode
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import ProgressSink
from hubget.transfer.xetengine import XetEngine, XetJob
from hubget.transfer.xetstore import XetChunkIndex


@dataclass
class XetReport:
    """What the Xet path did in one fetch (for the CLI's summary and for tests)."""

    files: int = 0  # files verified and in place through Xet
    network_bytes: int = 0  # xorb bytes received (compressed)
    file_bytes: int = 0  # bytes of those files
    reused_bytes: int = 0  # file bytes copied from chunks already on disk (an earlier revision's files)
    saved_bytes: int = 0  # xorb bytes not fetched thanks to them
    fallbacks: dict[str, str] = field(default_factory=dict)  # path -> why it went to the bridge
    unavailable: str | None = None  # why the whole snapshot went to the bridge


def usable(file: RemoteFile) -> bool:
    """Xet applies to a file with a Xet hash and a sha256 to verify it by, and no other sources (a
    file that several hubs serve is swarmed over them by the HTTP engine, as asked)."""
    return bool(file.xet_hash and file.sha256 and file.size and not file.extra_urls)


def xet_route(
    source: Any,
    snapshot: Snapshot,
    *,
    progress: ProgressSink | None = None,
    max_workers: int = 8,
    connections: int = 8,
    stall_timeout: float | None = None,
) -> XetRoute | None:
    """The Xet path for ``snapshot``, or None when it cannot apply (switched off, another hub kind,
    no Xet-backed file, lz4 missing)."""
    if config.xet_disabled() or not isinstance(source, HfSource):
        return None
    if not any(usable(f) for f in snapshot.files):
        return None
    if not xetdecode.available():
        if progress:
            progress.message("Xet-backed files come over the HTTP bridge: install hubget[xet] (lz4) for Xet")
        return None
    threads = min(64, max(connections, 2 * max_workers))
    return XetRoute(source, snapshot, progress or ProgressSink(), threads, stall_timeout)


class XetRoute:
    """Downloads a snapshot's Xet-backed files from the CAS; returns the others to the caller."""

    def __init__(
        self,
        source: HfSource,
        snapshot: Snapshot,
        progress: ProgressSink,
        connections: int,
        stall_timeout: float | None,
    ) -> None:
        self.progress = progress
        self.auth = XetAuth(
            source.client, token_url(source.endpoint, snapshot.ref, snapshot.commit), source._headers()
        )
        self.cas = XetCas(source.client, self.auth)
        self.connections = connections
        self.stall_timeout = stall_timeout
        self.report = XetReport()

    def download(
        self, layout: Layout, snapshot: Snapshot, files: list[RemoteFile], statuses: dict[str, Any]
    ) -> list[RemoteFile]:
        """Fetch what of ``files`` Xet can, commit it, and return the files left for the bridge."""
        candidates = [f for f in files if usable(f)]
        if not candidates or self.report.unavailable:
            return files
        try:
            self.auth.current()
        except XetUnavailable as e:
            self.report.unavailable = str(e)
            self.progress.message(f"Xet is not available ({e}); using the HTTP bridge")
            return files
        unique: dict[Path, RemoteFile] = {}
        for f in candidates:
            unique.setdefault(layout.target(snapshot, f), f)
        jobs = [
            XetJob(
                dest=target,
                size=f.size or 0,
                sha256=f.sha256 or "",
                label=f.path,
                reconstruct=functools.partial(self.cas.reconstruct, f.xet_hash),
                partial=_partial_path(layout, snapshot, f),
            )
            for target, f in unique.items()
        ]
        engine = XetEngine(
            HttpClient(pool_maxsize=self.connections, read_timeout=self.stall_timeout),
            connections=self.connections,
            progress=self.progress,
            batch_bytes=config.xet_batch_bytes(),
            stall_timeout=self.stall_timeout,
            store=_chunk_index(layout),
        )
        results, errors = engine.run(jobs)
        by_target = {r.path: r for r in results}
        for label, error in errors.items():
            if isinstance(error, DiskError):
                raise error  # the bridge would hit the same wall
            self.report.fallbacks[label] = str(error)
            self.progress.message(f"{label}: Xet download failed ({error}); using the HTTP bridge")
        left = []
        for f in files:
            result = by_target.get(layout.target(snapshot, f))
            if result is None:
                left.append(f)
                continue
            layout.commit(snapshot, f)
            status = statuses.get(f.path)
            if status is not None and result.job.label == f.path:
                status.bytes_fetched = result.bytes_fetched
                status.sources = {f"xet {k}": v for k, v in result.sources.items()}
        for r in results:
            self.report.files += 1
            self.report.network_bytes += r.bytes_fetched
            self.report.file_bytes += r.job.size or 0
            self.report.reused_bytes += r.sources.get("local chunks", 0)
            self.report.saved_bytes += engine.saved.get(r.job.label, 0)
        if self.report.reused_bytes:
            self.progress.message(
                f"Xet: {self.report.reused_bytes} bytes reused from chunks on disk, "
                f"{self.report.saved_bytes} bytes not downloaded"
            )
        return left


def _chunk_index(layout: Layout) -> XetChunkIndex | None:
    """Where the chunks of this layout's Xet files are indexed: inside the repo's cache folder (which
    huggingface_hub's cache scan does not look into), or local_dir's metadata folder."""
    repo_dir = getattr(layout, "repo_dir", None)
    if isinstance(repo_dir, Path):
        return XetChunkIndex(repo_dir / ".hubget-xet")
    meta = getattr(layout, "meta_root", None)
    if isinstance(meta, Path):
        return XetChunkIndex(meta / "hubget-xet")
    return None


def _partial_path(layout: Layout, snapshot: Snapshot, file: RemoteFile) -> Path | None:
    fn = getattr(layout, "partial_path", None)
    return fn(snapshot, file) if callable(fn) else None


__all__ = ["HubgetError", "XetReport", "XetRoute", "xet_route"]
