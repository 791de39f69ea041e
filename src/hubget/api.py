"""The façade: options -> source -> plan -> engine -> layout.

``fetch_snapshot`` is the one pipeline every entry point (HF, ModelScope, from_pretrained, CLI)
runs; ``snapshot_download`` and ``hf_hub_download`` mirror huggingface_hub's signatures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from hubget import config
from hubget.errors import EntryNotFoundError, OfflineError, UsageError
from hubget.filters import filter_paths
from hubget.layouts.base import Layout
from hubget.layouts.hf_cache import HfCacheLayout
from hubget.layouts.local_dir import LocalDirLayout
from hubget.layouts.locks import try_lock, wait_lock
from hubget.models import REPO_TYPES, RemoteFile, RepoRef, Snapshot
from hubget.sources.base import Source
from hubget.transfer.jobs import FileJob, ProgressSink

LOCK_WAIT_SECONDS = 6 * 3600  # another process downloading the same blob: wait for it


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


def _job(layout: Layout, snapshot: Snapshot, file: RemoteFile) -> FileJob:
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
        refresh=lambda job: (file.url, dict(file.headers)),
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
) -> FetchReport:
    """Resolve ``ref`` on ``source``, download what ``layout`` lacks, commit it, return a report.

    ``engine_options`` go to the Engine (stall_timeout, split_threshold, ...)."""
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
    held: dict[Path, FileLock] = {}
    ready: list[RemoteFile] = []
    deferred: list[RemoteFile] = []
    for f in missing:
        lock_file = _lock_path(layout, f)
        if lock_file is not None and lock_file not in held:
            lock = try_lock(lock_file)
            if lock is None:
                deferred.append(f)  # another process is on it; see below
                continue
            held[lock_file] = lock
        ready.append(f)  # (files sharing a blob with one already locked ride along)
    try:
        _download(engine, layout, snapshot, ready, statuses)
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
                _download(engine, layout, snapshot, [f], statuses)
        finally:
            lock.release()

    return FetchReport(layout.finalize(snapshot), snapshot, list(statuses.values()))


def _download(
    engine: Any, layout: Layout, snapshot: Snapshot, files: list[RemoteFile], statuses: dict[str, FileStatus]
) -> None:
    if not files:
        return
    # Files with the same content share one target (the HF cache's blob): fetch it once.
    unique: dict[Path, RemoteFile] = {}
    for f in files:
        unique.setdefault(layout.target(snapshot, f), f)
    jobs = [_job(layout, snapshot, f) for f in unique.values()]
    try:
        results = engine.run(jobs)
    except BaseException:
        # Keep what did finish: commit every file that is now complete, then report the failure.
        for f in files:
            with contextlib.suppress(Exception):
                if layout.is_complete(snapshot, f):
                    layout.commit(snapshot, f)
        raise
    by_label = {r.job.label: r for r in results}
    for f in files:
        layout.commit(snapshot, f)
        if result := by_label.get(f.path):
            statuses[f.path].bytes_fetched = result.bytes_fetched
            statuses[f.path].sources = dict(result.sources)


# -- Hugging Face drop-ins -------------------------------------------------------------------


def check_repo_type(repo_type: str | None) -> str:
    repo_type = repo_type or "model"
    if repo_type not in REPO_TYPES:
        raise UsageError(f"repo_type must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}")
    return repo_type


def hf_layout(ref: RepoRef, cache_dir: str | Path | None, local_dir: str | Path | None) -> Layout:
    return LocalDirLayout(local_dir) if local_dir else HfCacheLayout(ref, cache_dir)


def offline_snapshot(ref: RepoRef, cache_dir: str | Path | None, local_dir: str | Path | None) -> Path:
    if local_dir:
        if Path(local_dir).is_dir():
            return Path(local_dir)
        raise OfflineError(f"offline mode: {local_dir} does not exist")
    layout = HfCacheLayout(ref, cache_dir)
    commit = layout.cached_commit(ref.revision)
    if commit and layout.snapshot_dir(commit).is_dir():
        return layout.snapshot_dir(commit)
    raise OfflineError(
        f"offline mode: {ref.repo_id}@{ref.revision or 'main'} is not in the cache {layout.cache_dir}"
    )


def snapshot_download(
    repo_id: str,
    *,
    repo_type: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    allow_patterns: str | list[str] | None = None,
    ignore_patterns: str | list[str] | None = None,
    max_workers: int = 8,
    connections: int = 8,
    token: str | bool | None = None,
    local_files_only: bool = False,
    source: str = "hf",
    progress: ProgressSink | None = None,
    modelscope_id: str | None = None,
    mapping_file: str | Path | None = None,
    **_ignored: Any,
) -> str:
    """Download a whole repo (or the files the patterns select); return the snapshot folder
    (or ``local_dir``). Same meaning as ``huggingface_hub.snapshot_download``.

    ``source="auto"`` asks the Hugging Face endpoint, the mirrors and ModelScope at once and takes
    each file from every source that serves the same bytes (``hubget.sources.auto``);
    ``modelscope_id`` and ``mapping_file`` name the repo on ModelScope when its id differs."""
    if source == "modelscope":
        from hubget.modelscope_api import modelscope_snapshot_download

        return modelscope_snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            max_workers=max_workers,
            repo_type=repo_type,
            local_files_only=local_files_only,
            token=token if isinstance(token, str) else None,
            endpoint=endpoint,
        )
    if source not in ("hf", "huggingface", "auto"):
        raise UsageError(f"unknown source {source!r} (hf, modelscope or auto)")
    ref = RepoRef(repo_id, check_repo_type(repo_type), revision)  # type: ignore[arg-type]
    if local_files_only or config.hf_offline():
        return str(offline_snapshot(ref, cache_dir, local_dir))
    if source == "auto":
        from hubget.sources.auto import fetch_auto

        _, auto_report = fetch_auto(
            ref,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            local_dir=local_dir,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            max_workers=max_workers,
            connections=connections,
            progress=progress,
            modelscope_id=modelscope_id,
            mapping_file=mapping_file,
        )
        return str(auto_report.path)
    from hubget.sources.huggingface import HfSource

    report = fetch_snapshot(
        HfSource(endpoint, token),
        ref,
        hf_layout(ref, cache_dir, local_dir),
        allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns,
        max_workers=max_workers,
        connections=connections,
        progress=progress,
    )
    return str(report.path)


def hf_hub_download(
    repo_id: str,
    filename: str,
    *,
    subfolder: str | None = None,
    repo_type: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    connections: int = 8,
    progress: ProgressSink | None = None,
    **_ignored: Any,
) -> str:
    """Download one file; return its local path. Same meaning as ``huggingface_hub.hf_hub_download``."""
    if subfolder:
        filename = f"{subfolder.strip('/')}/{filename}"
    ref = RepoRef(repo_id, check_repo_type(repo_type), revision)  # type: ignore[arg-type]
    if local_files_only or config.hf_offline():
        path = offline_snapshot(ref, cache_dir, local_dir) / filename
        if not path.exists():
            raise OfflineError(f"offline mode: {filename} of {repo_id} is not in the cache")
        return str(path)
    from hubget.sources.huggingface import HfSource

    source = HfSource(endpoint, token)
    layout = hf_layout(ref, cache_dir, local_dir)
    try:
        info, commit = source.head(ref, filename)
    except EntryNotFoundError:
        if isinstance(layout, HfCacheLayout):
            with contextlib.suppress(Exception):
                commit, _ = source.resolve_commit(ref)
                layout.mark_missing(commit, filename)
        raise
    snapshot = Snapshot(ref, commit, [info], source.name, source.endpoint)
    report = fetch_snapshot(
        source, ref, layout, connections=connections, progress=progress, snapshot=snapshot
    )
    return (
        str(report.path / filename)
        if isinstance(layout, HfCacheLayout)
        else str(layout.target(snapshot, info))
    )
