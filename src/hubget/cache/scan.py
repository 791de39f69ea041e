"""``hubget.cache.scan()``: the repos of the Hugging Face and ModelScope caches, with sizes, dates,
revisions and refs.

Hugging Face numbers are huggingface_hub's (``scan_cache_dir()``): a repo's size counts each blob
path once however many revisions link to it, ``nb_files`` is the repo's distinct blobs, the cache
total counts each blob path once. ModelScope has no blobs: a repo's size counts each inode once.
``disk_usage`` is what both caches really take: every inode once, whichever caches share it (after
``hubget cache dedup`` that is less than the sum of the sizes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget import config
from hubget.cache import hfscan, msscan

CACHES = ("hf", "ms")


@dataclass
class CachedRevision:
    name: str  # Hugging Face: the 40-hex commit; ModelScope: the revision folder (master, a tag, ...)
    refs: list[str]
    size_on_disk: int
    nb_files: int
    last_modified: float
    path: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "revision": self.name,
            "refs": self.refs,
            "size_on_disk": self.size_on_disk,
            "nb_files": self.nb_files,
            "last_modified": self.last_modified,
            "path": str(self.path),
        }


@dataclass
class CachedRepo:
    cache: str  # "hf" or "ms"
    repo_type: str
    repo_id: str
    path: Path
    size_on_disk: int
    nb_files: int
    last_accessed: float
    last_modified: float
    revisions: list[CachedRevision]
    problems: list[str] = field(default_factory=list)

    @property
    def refs(self) -> list[str]:
        return sorted({ref for r in self.revisions for ref in r.refs})

    @property
    def cache_id(self) -> str:
        return f"{self.repo_type}/{self.repo_id}"

    def as_json(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "repo_type": self.repo_type,
            "repo_id": self.repo_id,
            "path": str(self.path),
            "size_on_disk": self.size_on_disk,
            "nb_files": self.nb_files,
            "last_accessed": self.last_accessed,
            "last_modified": self.last_modified,
            "refs": self.refs,
            "revisions": [r.as_json() for r in self.revisions],
            "problems": self.problems,
        }


@dataclass
class PartialFile:
    cache: str
    path: Path
    size: int


@dataclass
class CacheScan:
    hf_cache_dir: Path | None
    ms_cache_dir: Path | None
    repos: list[CachedRepo]
    hf_size_on_disk: int  # scan_cache_dir().size_on_disk
    ms_size_on_disk: int
    disk_usage: int  # every inode of both caches once
    partial_files: list[PartialFile]
    seconds: float

    @property
    def size_on_disk(self) -> int:
        return self.hf_size_on_disk + self.ms_size_on_disk

    def as_json(self) -> dict[str, Any]:
        return {
            "hf_cache_dir": str(self.hf_cache_dir) if self.hf_cache_dir else None,
            "ms_cache_dir": str(self.ms_cache_dir) if self.ms_cache_dir else None,
            "size_on_disk": self.size_on_disk,
            "hf_size_on_disk": self.hf_size_on_disk,
            "ms_size_on_disk": self.ms_size_on_disk,
            "disk_usage": self.disk_usage,
            "partial_files": [
                {"cache": p.cache, "path": str(p.path), "size": p.size} for p in self.partial_files
            ],
            "repos": [r.as_json() for r in self.repos],
            "seconds": round(self.seconds, 4),
        }


def cache_dirs(
    hf_cache_dir: str | Path | None = None, ms_cache_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """The caches to work on: the arguments, else HF_HUB_CACHE / HF_HOME and MODELSCOPE_CACHE."""
    hf = Path(hf_cache_dir).expanduser() if hf_cache_dir else config.hf_hub_cache()
    ms = Path(ms_cache_dir).expanduser() if ms_cache_dir else config.ms_cache()
    return hf, ms


def check_caches(caches: tuple[str, ...] | list[str] | str | None) -> tuple[str, ...]:
    from hubget.errors import UsageError

    if caches is None or caches == "all":
        return CACHES
    chosen = (caches,) if isinstance(caches, str) else tuple(caches)
    for c in chosen:
        if c not in CACHES:
            raise UsageError(f"cache must be hf, ms or all, not {c!r}")
    return chosen


def scan(
    *,
    hf_cache_dir: str | Path | None = None,
    ms_cache_dir: str | Path | None = None,
    caches: tuple[str, ...] | list[str] | str | None = None,
) -> CacheScan:
    """Read both caches (or those named in ``caches``: "hf", "ms") and sum up what they hold."""
    started = time.perf_counter()
    chosen = check_caches(caches)
    hf_dir, ms_dir = cache_dirs(hf_cache_dir, ms_cache_dir)
    repos: list[CachedRepo] = []
    partials: list[PartialFile] = []
    inodes: dict[tuple[int, int], int] = {}
    hf_total = ms_total = 0
    if "hf" in chosen:
        hf_total = _scan_hf(hf_dir, repos, partials, inodes)
    if "ms" in chosen:
        ms_total = _scan_ms(ms_dir, repos, partials, inodes)
    return CacheScan(
        hf_dir if "hf" in chosen else None,
        ms_dir if "ms" in chosen else None,
        repos,
        hf_total,
        ms_total,
        sum(inodes.values()),
        partials,
        time.perf_counter() - started,
    )


def hf_repo_summary(repo: hfscan.HfRepo) -> CachedRepo:
    stats = repo.blob_stats
    revisions = []
    for rev in repo.revisions:
        blobs = {f.blob_s for f in rev.files if f.blob_s in stats}
        if blobs:
            modified = max(stats[b].st_mtime for b in blobs)
        else:
            modified = _mtime(rev.path)
        size = sum(stats[b].st_size for b in blobs)
        revisions.append(
            CachedRevision(rev.commit, sorted(rev.refs), size, len(rev.files), modified, rev.path)
        )
    if stats:
        accessed = max(s.st_atime for s in stats.values())
        modified = max(s.st_mtime for s in stats.values())
    else:
        accessed, modified = _atime(repo.path), _mtime(repo.path)
    return CachedRepo(
        "hf",
        repo.repo_type,
        repo.repo_id,
        repo.path,
        sum(s.st_size for s in stats.values()),
        len(stats),
        accessed,
        modified,
        revisions,
        list(repo.problems),
    )


def ms_repo_summary(repo: msscan.MsRepo) -> CachedRepo:
    revisions = []
    seen: dict[tuple[int, int], os.stat_result] = {}
    for rev in repo.revisions:
        own = {(f.stat.st_dev, f.stat.st_ino): f.stat for f in rev.files}
        seen.update(own)
        modified = max((s.st_mtime for s in own.values()), default=_mtime(rev.path))
        size = sum(s.st_size for s in own.values())
        revisions.append(CachedRevision(rev.name, [], size, len(rev.files), modified, rev.path))
    accessed = max((s.st_atime for s in seen.values()), default=_atime(repo.path))
    modified = max((s.st_mtime for s in seen.values()), default=_mtime(repo.path))
    return CachedRepo(
        "ms",
        repo.repo_type,
        repo.repo_id,
        repo.path,
        sum(s.st_size for s in seen.values()),
        len(seen),
        accessed,
        modified,
        revisions,
    )


def _scan_hf(
    cache_dir: Path,
    repos: list[CachedRepo],
    partials: list[PartialFile],
    inodes: dict[tuple[int, int], int],
) -> int:
    store = hfscan.shared_store_dir(cache_dir)
    store_prefix = os.path.realpath(store) + os.sep if store else None
    physical: dict[str, int] = {}
    for repo in hfscan.read_cache(cache_dir):
        summary = hf_repo_summary(repo)
        repos.append(summary)
        for blob, st in repo.blob_stats.items():
            inodes[(st.st_dev, st.st_ino)] = st.st_size
            if store_prefix is None or not _points_into(blob, store_prefix):
                physical[blob] = st.st_size
        for p in hfscan.partial_files(repo.path):
            partials.append(PartialFile("hf", p, _size(p)))
    for payload, size in hfscan.shared_store_payloads(cache_dir).items():
        physical[str(payload)] = size
        try:
            st = payload.stat()
            inodes[(st.st_dev, st.st_ino)] = size
        except OSError:
            pass
    return sum(physical.values())


def _scan_ms(
    root: Path,
    repos: list[CachedRepo],
    partials: list[PartialFile],
    inodes: dict[tuple[int, int], int],
) -> int:
    own: dict[tuple[int, int], int] = {}
    for repo in msscan.read_cache(root):
        repos.append(ms_repo_summary(repo))
        for rev in repo.revisions:
            for f in rev.files:
                own[(f.stat.st_dev, f.stat.st_ino)] = f.stat.st_size
            partials.extend(PartialFile("ms", p, _size(p)) for p in rev.partials)
        partials.extend(PartialFile("ms", p, _size(p)) for p in repo.hubget_partials)
    inodes.update(own)
    return sum(own.values())


def _points_into(blob: str, store_prefix: str) -> bool:
    try:
        return os.path.islink(blob) and os.path.realpath(blob).startswith(store_prefix)
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _atime(path: Path) -> float:
    try:
        return path.stat().st_atime
    except OSError:
        return 0.0
