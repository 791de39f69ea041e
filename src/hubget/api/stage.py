"""Staging a repo into a bucket: source -> what the bucket lacks -> objects + manifest.

``stage_snapshot`` resolves a repo on a source, reads ``PREFIX/.hubget/manifest.json`` and lists the
prefix once, streams every missing file into ``PREFIX/<path>`` (``objectstore.upload``: no local copy,
verified before it is completed) and records each finished file in the manifest, so a rerun skips
it and `hubget serve --store s3://` can answer without listing the bucket. A file completed just
before a crash, not yet in the manifest, is recognised by the sha256 in its object metadata.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hubget.api.pipeline import select_files
from hubget.errors import HubgetError, UsageError
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.objectstore.manifest import MANIFEST_NAME, META_DIR, Manifest, ManifestFile, lfs_pointer_sha1
from hubget.objectstore.s3 import S3Bucket, S3Url
from hubget.objectstore.upload import DEFAULT_PART_SIZE, ObjectJob, ObjectResult, Uploader
from hubget.sources.base import Source
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import ProgressSink

MANIFEST_EVERY = 1.0  # seconds between manifest writes while files complete


@dataclass
class StagedFile:
    path: str
    size: int
    present: bool  # complete in the bucket before this run
    bytes_fetched: int = 0
    parts: int = 0
    parts_uploaded: int = 0
    parts_reused: int = 0
    resumed: bool = False
    error: str | None = None


@dataclass
class StageReport:
    target: S3Url
    snapshot: Snapshot
    files: list[StagedFile]
    dry_run: bool = False
    seconds: float = 0.0
    endpoint_url: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def missing_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.present)

    @property
    def parts_uploaded(self) -> int:
        return sum(f.parts_uploaded for f in self.files)

    @property
    def parts_reused(self) -> int:
        return sum(f.parts_reused for f in self.files)


class _ManifestWriter:
    """The manifest being built; written at most once a second while files complete, and at the end."""

    def __init__(self, bucket: S3Bucket, key: str, manifest: Manifest) -> None:
        self.bucket, self.key, self.manifest = bucket, key, manifest
        self._lock = threading.Lock()
        self._dirty = False
        self._written = 0.0

    def add(self, entry: ManifestFile) -> None:
        with self._lock:
            self.manifest.files[entry.path] = entry
            self._dirty = True
            due = time.monotonic() - self._written >= MANIFEST_EVERY
        if due:
            self.flush()

    def flush(self, *, force: bool = False) -> None:
        with self._lock:
            if not (self._dirty or force):
                return
            self.manifest.staged_at = time.time()
            data = self.manifest.to_json()
            self._dirty = False
            self._written = time.monotonic()
        self.bucket.put_bytes(self.key, data)


def _entry(file: RemoteFile, sha256: str, git_sha1: str | None) -> ManifestFile:
    # The hub lists an LFS file by its sha256 and a git file by its blob id; ``git_sha1`` is the blob id
    # computed (and checked) for a git file.
    size = file.size or 0
    if file.git_sha1 is None or git_sha1 is None:
        return ManifestFile(file.path, size, sha256, lfs_pointer_sha1(sha256, size), lfs=True)
    return ManifestFile(file.path, size, sha256, git_sha1, lfs=False)


def _matches(file: RemoteFile, entry: ManifestFile) -> bool:
    if entry.size != file.size:
        return False
    if file.sha256:
        return entry.sha256 == file.sha256
    return bool(file.git_sha1) and not entry.lfs and entry.git_sha1 == file.git_sha1


def _from_metadata(bucket: S3Bucket, key: str, file: RemoteFile) -> ManifestFile | None:
    """A complete object that a crash kept out of the manifest, known by the hashes hubget put on it.
    (A git file staged in several parts has no sha256 there, as it was not known when the upload
    began; it is staged again.)"""
    head = bucket.head(key)
    if head is None or head["size"] != file.size:
        return None
    meta = {k.lower(): v for k, v in head["metadata"].items()}
    sha256 = meta.get("sha256")
    if not sha256 or (file.sha256 and sha256 != file.sha256):
        return None
    if file.git_sha1 and meta.get("git-sha1") != file.git_sha1:
        return None
    if not file.sha256 and not file.git_sha1:
        return None
    return _entry(file, sha256, file.git_sha1)


def _start_manifest(existing: Manifest | None, snapshot: Snapshot, revision: str) -> Manifest:
    ref = snapshot.ref
    same = (
        existing is not None
        and existing.commit == snapshot.commit
        and (existing.repo_id, existing.repo_type) == (ref.repo_id, ref.repo_type)
    )
    if same and existing is not None:
        if revision not in existing.revisions:
            existing.revisions.append(revision)
        return existing
    return Manifest(
        repo_id=ref.repo_id,
        repo_type=ref.repo_type,
        commit=snapshot.commit,
        revisions=[revision],
        source=snapshot.endpoint or snapshot.source,
    )


def stage_snapshot(
    source: Source,
    ref: RepoRef,
    target: S3Url,
    *,
    bucket: S3Bucket | None = None,
    endpoint: str | None = None,
    allow_patterns: str | Iterable[str] | None = None,
    ignore_patterns: str | Iterable[str] | None = None,
    filenames: Iterable[str] | None = None,
    connections: int = 8,
    max_workers: int = 8,
    part_size: int = DEFAULT_PART_SIZE,
    progress: ProgressSink | None = None,
    dry_run: bool = False,
    snapshot: Snapshot | None = None,
) -> StageReport:
    """Stage ``ref`` from ``source`` into ``target`` (``s3://bucket/prefix``); see the module doc.
    ``connections``: parts in flight, all files together; ``max_workers``: files at once."""
    started = time.monotonic()
    bucket = bucket or S3Bucket(target.bucket, endpoint=endpoint, max_connections=connections + 8)
    snapshot = snapshot or source.resolve(ref)
    files = select_files(snapshot, allow_patterns, ignore_patterns, filenames)
    revision = ref.revision or ("master" if source.name == "modelscope" else "main")
    return stage_files(
        bucket,
        target,
        snapshot,
        files,
        revision,
        job_for=_remote_job,
        connections=connections,
        max_workers=max_workers,
        part_size=part_size,
        progress=progress,
        dry_run=dry_run,
        started=started,
    )


def _remote_job(key: str, f: RemoteFile) -> ObjectJob:
    return ObjectJob(
        key=key,
        size=f.size or 0,
        url=f.url,
        headers=dict(f.headers),
        sha256=f.sha256,
        git_sha1=f.git_sha1,
        label=f.path,
        rate_bucket=f.rate_bucket,
    )


def stage_files(
    bucket: S3Bucket,
    target: S3Url,
    snapshot: Snapshot,
    files: list[RemoteFile],
    revision: str,
    *,
    job_for: Callable[[str, RemoteFile], ObjectJob],
    connections: int = 8,
    max_workers: int = 8,
    part_size: int = DEFAULT_PART_SIZE,
    progress: ProgressSink | None = None,
    dry_run: bool = False,
    started: float | None = None,
) -> StageReport:
    """Put ``files`` of ``snapshot`` into ``target`` as ``revision``: what the bucket lacks is streamed
    in (``job_for(key, file)`` says where its bytes come from), the manifest follows what completes.
    Shared by staging from a hub and by `hubget upload` (a local folder or git repo)."""
    started = time.monotonic() if started is None else started
    progress = progress or ProgressSink()
    ref = snapshot.ref
    clash = [f.path for f in files if f.path == META_DIR or f.path.startswith(f"{META_DIR}/")]
    if clash:
        raise UsageError(
            f"{ref.repo_id} has files under {META_DIR}/, where hubget keeps its manifest: {clash[0]}"
        )
    unsized = [f.path for f in files if f.size is None]
    if unsized:
        raise UsageError(f"the hub gave no size for {unsized[0]}: a file of unknown size cannot be staged")

    manifest_key = target.key(MANIFEST_NAME)
    got = bucket.get_bytes(manifest_key)
    existing = Manifest.from_json(got[0]) if got else None
    folder = target.key() + "/" if target.prefix else ""
    sizes = bucket.list_sizes(folder)
    manifest = _start_manifest(existing, snapshot, revision)
    carried = existing.files if existing is not None else {}

    staged: dict[str, StagedFile] = {}
    missing: list[RemoteFile] = []
    changed = manifest is not existing
    for f in files:
        key = target.key(f.path)
        old = carried.get(f.path)
        entry = old if old is not None and _matches(f, old) and sizes.get(key) == f.size else None
        if entry is None and sizes.get(key) == f.size:
            entry = _from_metadata(bucket, key, f)
        if entry is not None:
            changed |= manifest.files.get(f.path) != entry
            manifest.files[f.path] = entry
        elif f.path in manifest.files:
            del manifest.files[f.path]  # listed, but its object is gone or holds other bytes
            changed = True
        staged[f.path] = StagedFile(f.path, f.size or 0, present=entry is not None)
        if entry is None:
            missing.append(f)
    report = StageReport(
        target, snapshot, list(staged.values()), dry_run=dry_run, endpoint_url=bucket.endpoint_url
    )
    if dry_run:
        return report

    writer = _ManifestWriter(bucket, manifest_key, manifest)
    if changed:
        writer.flush(force=True)  # before any object changes: never list a path with another file's hashes
    by_key = {target.key(f.path): f for f in missing}

    def done(result: ObjectResult) -> None:
        f = by_key[result.job.key]
        s = staged[f.path]
        s.bytes_fetched, s.parts, s.resumed = result.bytes_fetched, result.parts, result.resumed
        s.parts_uploaded, s.parts_reused = result.parts_uploaded, result.parts_reused
        if result.error is not None:
            s.error = str(result.error)
            return
        try:
            writer.add(_entry(f, result.sha256, result.git_sha1))
        except HubgetError as exc:
            progress.message(f"manifest not written yet ({exc}); it is written again at the end")

    client = HttpClient(pool_maxsize=connections + 8)
    uploader = Uploader(
        bucket,
        client,
        state_prefix=target.key(),
        connections=connections,
        max_files=max_workers,
        part_size=part_size,
        progress=progress,
        on_done=done,
    )
    jobs = [job_for(target.key(f.path), f) for f in missing]
    try:
        results = uploader.run(jobs)
    finally:
        with contextlib.suppress(HubgetError):
            writer.flush()
        client.clear()
    writer.flush()
    _drop_orphans(bucket, target, results, progress)
    report.seconds = time.monotonic() - started
    failed = [r for r in results if r.error is not None]
    if failed:
        first = failed[0].error
        assert first is not None
        if len(failed) > 1:
            progress.message(f"{len(failed)} files failed; the first: {first}")
        raise first
    return report


def _drop_orphans(
    bucket: S3Bucket, target: S3Url, results: list[ObjectResult], progress: ProgressSink
) -> None:
    """Abort unfinished uploads left by earlier runs for keys this run completed (no record named them)."""
    completed = {r.job.key for r in results if r.error is None}
    if not completed:
        return
    try:
        uploads = bucket.list_uploads(target.key() + "/" if target.prefix else "")
        for key, ids in uploads.items():
            if key in completed:
                for upload_id, _ in ids:
                    bucket.abort_upload(key, upload_id)
    except HubgetError as exc:
        progress.message(f"could not clean up old multipart uploads: {exc}")


def source_for(source: str, endpoint: str | None, token: str | bool | None) -> Source:
    """The source a staging run reads from: ``hf`` (or an HF_ENDPOINT mirror) or ``modelscope``."""
    if source in ("hf", "huggingface"):
        from hubget.sources.huggingface import HfSource

        return HfSource(endpoint, token)
    if source == "modelscope":
        from hubget.sources.modelscope import ModelScopeSource

        return ModelScopeSource(endpoint, token if isinstance(token, str) else None)
    raise UsageError(f"staging into a bucket reads from hf or modelscope, not {source!r}")
