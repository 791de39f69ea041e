"""The pipeline every entry point runs: source -> plan -> engine -> layout.

``fetch_snapshot`` resolves a repo on a source, works out what the layout lacks, has the engine
fetch it (one lock per blob against other processes) and commits every verified file.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget.errors import EntryNotFoundError
from hubget.filters import filter_paths
from hubget.layouts.base import Layout
from hubget.layouts.locks import take_locks, wait_lock
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.sources.base import Source
from hubget.transfer.jobs import FileJob, ProgressSink

LOCK_WAIT_SECONDS = 6 * 3600  # another process downloading the same blob: wait for it
# Gives a fresh (url, headers) for a file whose URL stopped working (see FileJob.refresh).
Refresher = Callable[[RemoteFile], "tuple[str, dict[str, str]] | None"]


@dataclass
class FileStatus:
    path: str
    size: int | None
    present: bool  # already complete on disk before this run
    bytes_fetched: int = 0
    sources: dict[str, int] = field(default_factory=dict)


@dataclass
class FetchReport:
    path: Path
    snapshot: Snapshot
    files: list[FileStatus]
    dry_run: bool = False
    xet: Any = None  # api.xet.XetReport when the Xet path was tried

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def missing_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files if not f.present)


def _lock_path(layout: Layout, file: RemoteFile) -> Path | None:
    fn = getattr(layout, "lock_path", None)
    return fn(file) if callable(fn) else None


def _partial_path(layout: Layout, snapshot: Snapshot, file: RemoteFile) -> Path | None:
    fn = getattr(layout, "partial_path", None)
    return fn(snapshot, file) if callable(fn) else None


def select_files(
    snapshot: Snapshot,
    allow_patterns: str | Iterable[str] | None = None,
    ignore_patterns: str | Iterable[str] | None = None,
    filenames: Iterable[str] | None = None,
) -> list[RemoteFile]:
    files = snapshot.files
    if filenames is not None:
        wanted = list(filenames)
        by_path = snapshot.by_path()
        missing = [name for name in wanted if name not in by_path]
        if missing:
            raise EntryNotFoundError(
                f"not in {snapshot.ref.repo_id}@{snapshot.commit[:12]}: {', '.join(missing)}"
            )
        files = [by_path[name] for name in wanted]
    return list(filter_paths(files, allow_patterns, ignore_patterns, key=lambda f: f.path))


def _job(layout: Layout, snapshot: Snapshot, file: RemoteFile, refresher: Refresher | None = None) -> FileJob:
    return FileJob(
        url=file.url,
        dest=layout.target(snapshot, file),
        size=file.size,
        expected_hash=file.sha256 or file.git_sha1,
        hash_algo="sha256" if file.sha256 else "git-sha1",
        headers=dict(file.headers),
        label=file.path,
        mirrors=list(file.extra_urls),
        partial=_partial_path(layout, snapshot, file),
        # A hub's resolve URL redirects to a freshly signed CDN URL on every request: when a
        # signature expires mid-download (403/410 from the CDN), asking the hub again is the fix.
        refresh=(lambda job: refresher(file)) if refresher else (lambda job: (file.url, dict(file.headers))),
        rate_bucket=file.rate_bucket,
    )


def fetch_snapshot(
    source: Source,
    ref: RepoRef,
    layout: Layout,
    *,
    allow_patterns: str | Iterable[str] | None = None,
    ignore_patterns: str | Iterable[str] | None = None,
    filenames: Iterable[str] | None = None,
    max_workers: int = 8,
    connections: int = 8,
    progress: ProgressSink | None = None,
    dry_run: bool = False,
    snapshot: Snapshot | None = None,
    engine_options: dict[str, Any] | None = None,
    refresher: Refresher | None = None,
) -> FetchReport:
    """Resolve ``ref`` on ``source``, download what ``layout`` lacks, commit it, return a report.

    ``engine_options`` go to the Engine (stall_timeout, split_threshold, ...). ``refresher`` gives a
    file whose URL expired a fresh one (default: its own URL again, for a hub's resolve URL)."""
    from hubget.transfer.engine import Engine  # the engine pulls in threads and urllib3 pools

    snapshot = snapshot or source.resolve(ref)
    files = select_files(snapshot, allow_patterns, ignore_patterns, filenames)
    statuses = {f.path: FileStatus(f.path, f.size, present=layout.is_complete(snapshot, f)) for f in files}
    missing = [f for f in files if not statuses[f.path].present]
    if dry_run:
        return FetchReport(Path(), snapshot, list(statuses.values()), dry_run=True)

    for f in files:
        if statuses[f.path].present:
            layout.commit(snapshot, f)

    engine = Engine(
        max_workers=max_workers, connections=connections, progress=progress, **(engine_options or {})
    )
    from hubget.api.xet import xet_route  # Xet-backed files: from the CAS when it can, else the bridge

    xet = xet_route(
        source,
        snapshot,
        progress=progress,
        max_workers=max_workers,
        connections=connections,
        stall_timeout=(engine_options or {}).get("stall_timeout"),
    )
    lock_files = {f.path: _lock_path(layout, f) for f in missing}
    # One lock per blob, all taken up front (a flock each); a blob another process holds waits below.
    held, busy = take_locks(p for p in lock_files.values() if p is not None)
    taken = set(busy)
    ready: list[RemoteFile] = []
    deferred: list[RemoteFile] = []
    for f in missing:
        # (files sharing a blob with one already locked ride along)
        (deferred if lock_files[f.path] in taken else ready).append(f)
    try:
        _download(engine, layout, snapshot, ready, statuses, xet, refresher)
    finally:
        for lock in held.values():
            lock.release()

    for f in deferred:
        if progress:
            progress.message(f"waiting for another process downloading {f.path}")
        lock_file = _lock_path(layout, f)
        assert lock_file is not None
        lock = wait_lock(lock_file, LOCK_WAIT_SECONDS)
        try:
            if layout.is_complete(snapshot, f):
                layout.commit(snapshot, f)
            else:
                _download(engine, layout, snapshot, [f], statuses, xet, refresher)
        finally:
            lock.release()

    report = FetchReport(layout.finalize(snapshot), snapshot, list(statuses.values()))
    report.xet = xet.report if xet is not None else None
    return report


def _download(
    engine: Any,
    layout: Layout,
    snapshot: Snapshot,
    files: list[RemoteFile],
    statuses: dict[str, FileStatus],
    xet: Any = None,
    refresher: Refresher | None = None,
) -> None:
    if xet is not None and files:
        files = xet.download(layout, snapshot, files, statuses)  # what it could not, goes on below
    if not files:
        return
    # Files with the same content share one target (the HF cache's blob): fetch it once.
    sharing: dict[Path, list[RemoteFile]] = {}
    for f in files:
        sharing.setdefault(layout.target(snapshot, f), []).append(f)
    jobs = [_job(layout, snapshot, group[0], refresher) for group in sharing.values()]
    committed: set[str] = set()
    if getattr(layout, "commit_when_placed", False):
        # Links made by the finisher threads as each file lands, not one by one after the last.
        for job, group in zip(jobs, sharing.values(), strict=True):
            job.on_placed = functools.partial(_commit_group, layout, snapshot, group, committed)
    try:
        results = engine.run(jobs)
    except BaseException:
        # Keep what did finish: commit every file that is now complete, then report the failure.
        for f in files:
            with contextlib.suppress(Exception):
                if f.path not in committed and layout.is_complete(snapshot, f):
                    layout.commit(snapshot, f)
        raise
    by_label = {r.job.label: r for r in results}
    for f in files:
        if f.path not in committed:
            layout.commit(snapshot, f)
        if result := by_label.get(f.path):
            statuses[f.path].bytes_fetched = result.bytes_fetched
            statuses[f.path].sources = dict(result.sources)


def _commit_group(layout: Layout, snapshot: Snapshot, group: list[RemoteFile], committed: set[str]) -> None:
    for f in group:
        layout.commit(snapshot, f)
        committed.add(f.path)
