"""``hubget.cache.dedup()``: identical files of the HF cache, the ModelScope cache and extra folders
stored once.

Files with the same size are hashed (sha256, on a thread pool); each set of identical files then
shares one copy: a reflink where the filesystem has them (own inodes, shared extents), else a hard
link to one kept file (one inode). Before a file is replaced, its size, mtime and inode must still
be those that were hashed, and the lock its downloader would hold must be free.

Which files may share an inode, and why:
- Hugging Face blobs (``blobs/{etag}``): immutable. huggingface_hub and hubget write a blob under
  a temp name, verify it, and rename it into place; they never open a finished blob for writing.
  A blob named by a sha256 must hash to it, or it is left alone (and reported) rather than copied
  into other places.
- ModelScope snapshot files, once complete: the SDK (and hubget) write ``x.incomplete`` /
  ``x.parallel_tmp`` / hubget's ``.hubget-partial/`` and rename the finished file over ``x``; an update
  is a new rename, never a write into ``x``.
- Files of the extra folders: only the caller knows; a hard-linked file is made read-only (for all
  its names), so that an edit in place fails instead of changing every copy.
Never linked: temp files of any tool (written in place while a download runs: ``*.incomplete``,
``*.parallel_tmp``, ``*.hubget-partial*``), snapshot symlinks, blobs that are symlinks into
huggingface_hub's shared store (already stored once), ``.git`` folders, local_dir metadata, and
anything a download holds the lock of.
"""

from __future__ import annotations

import os
import stat
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget.cache import hfscan, msscan
from hubget.cache.hashpool import FileCheck, hash_all
from hubget.cache.import_folder import folder_files
from hubget.cache.inuse import held
from hubget.cache.links import make_read_only, place
from hubget.cache.scan import cache_dirs, check_caches
from hubget.layouts.fsutil import list_dir
from hubget.layouts.ms_cache import sdk_lock_path

MIN_SIZE = 1024 * 1024  # below this, a link saves less than the hashing costs
KIND_ORDER = {"hf": 0, "ms": 1, "folder": 2}  # which copy is kept: a blob first


@dataclass
class Candidate:
    kind: str  # hf, ms, folder
    path: Path
    stat: os.stat_result
    lock: Path | None = None
    named_sha256: str | None = None  # an HF blob's name
    ms_record: tuple[msscan.MsRepo, msscan.MsRevision, str] | None = None

    @property
    def inode(self) -> tuple[int, int]:
        return (self.stat.st_dev, self.stat.st_ino)


@dataclass
class DedupGroup:
    sha256: str
    size: int
    kept: Path
    linked: list[Path] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


@dataclass
class DedupReport:
    dry_run: bool
    groups: list[DedupGroup] = field(default_factory=list)
    bytes_saved: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def files_linked(self) -> int:
        return sum(len(g.linked) for g in self.groups)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "bytes_saved": self.bytes_saved,
            "files_linked": self.files_linked,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
            "groups": [
                {
                    "sha256": g.sha256,
                    "size": g.size,
                    "kept": str(g.kept),
                    "linked": [str(p) for p in g.linked],
                    "methods": g.methods,
                }
                for g in self.groups
            ],
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
        }


def dedup(
    folders: list[str | Path] | tuple[str | Path, ...] = (),
    *,
    dry_run: bool = False,
    caches: tuple[str, ...] | list[str] | str | None = None,
    min_size: int = MIN_SIZE,
    mode: str = "auto",
    hf_cache_dir: str | Path | None = None,
    ms_cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> DedupReport:
    """Make identical files of the caches (and ``folders``) share their bytes; see the module doc.

    ``mode``: "auto" (reflink, else hard link), "reflink" or "hardlink"."""
    started = time.perf_counter()
    report = DedupReport(dry_run)
    hf_dir, ms_dir = cache_dirs(hf_cache_dir, ms_cache_dir)
    chosen = check_caches(caches)
    candidates: list[Candidate] = []
    if "hf" in chosen:
        candidates += _hf_candidates(hf_dir)
    if "ms" in chosen:
        candidates += _ms_candidates(ms_dir)
    for folder in folders:
        candidates += _folder_candidates(Path(folder).expanduser())
    by_size: dict[int, list[Candidate]] = defaultdict(list)
    for c in candidates:
        if c.stat.st_size >= max(1, min_size):
            by_size[c.stat.st_size].append(c)
    groups = [g for g in by_size.values() if len({c.inode for c in g}) > 1]
    hashes = _hash_groups(groups, report, workers)
    by_hash: dict[str, list[Candidate]] = defaultdict(list)
    for group in groups:
        for c in group:
            if (digest := hashes.get(c.inode)) is not None:
                by_hash[digest].append(c)
    for digest, same in sorted(by_hash.items()):
        if len({c.inode for c in same}) > 1:
            _link_group(digest, same, mode, report)
    report.seconds = time.perf_counter() - started
    return report


def _hf_candidates(cache_dir: Path) -> list[Candidate]:
    out = []
    for repo in hfscan.read_cache(cache_dir):
        for entry in list_dir(repo.path / "blobs"):
            if hfscan.is_partial_name(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            named = entry.name if hfscan.hash_algo_of(entry.name) == "sha256" else None
            st = entry.stat(follow_symlinks=False)
            out.append(Candidate("hf", Path(entry.path), st, repo.lock_path(entry.name), named))
    return out


def _ms_candidates(root: Path) -> list[Candidate]:
    out = []
    for repo in msscan.read_cache(root):
        for rev in repo.revisions:
            for f in rev.files:
                lock = sdk_lock_path(root, repo.repo_id, repo.repo_type, f.path)
                out.append(Candidate("ms", f.file, f.stat, lock, ms_record=(repo, rev, f.path)))
    return out


def _folder_candidates(folder: Path) -> list[Candidate]:
    out = []
    for path in folder_files(folder).values():
        if path.name.endswith(msscan.SDK_PARTIAL_SUFFIXES):
            continue
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):  # a symlink is not replaced: what it points to may be
            out.append(Candidate("folder", path, st))
    return out


def _hash_groups(
    groups: list[list[Candidate]], report: DedupReport, workers: int | None
) -> dict[tuple[int, int], str]:
    """sha256 per inode (one file of each); an HF blob that does not hash to its name is left out."""
    checks: dict[tuple[int, int], FileCheck] = {}
    named: dict[tuple[int, int], Candidate] = {}
    for group in groups:
        for c in group:
            if c.inode not in checks:
                checks[c.inode] = FileCheck(
                    "", "", "", [], [], c.path, c.stat.st_size, "sha256", c.named_sha256, ""
                )
            if c.named_sha256:
                named[c.inode] = c
    report.bytes_hashed = hash_all(list(checks.values()), workers or max(2, os.cpu_count() or 2))
    out = {}
    for inode, check in checks.items():
        if check.actual is None:
            report.skipped.append((check.file, check.note or "cannot read"))
        elif inode in named and check.actual != named[inode].named_sha256:
            report.skipped.append(
                (named[inode].path, "its content does not match its name: run hubget cache verify")
            )
        else:
            out[inode] = check.actual
    return out


def _link_group(digest: str, same: list[Candidate], mode: str, report: DedupReport) -> None:
    same.sort(key=lambda c: (KIND_ORDER[c.kind], str(c.path)))
    keeper = same[0]
    group = DedupGroup(digest, keeper.stat.st_size, keeper.path)
    replaced: dict[tuple[int, int], int] = defaultdict(int)
    nlinks: dict[tuple[int, int], int] = {}
    for c in same[1:]:
        if c.inode == keeper.inode:
            continue
        if not _unchanged(c):
            report.skipped.append((c.path, "changed since it was hashed"))
            continue
        with held(c.lock, create=not report.dry_run) if c.lock else _free() as free:
            if not free:
                report.skipped.append((c.path, "a download holds its lock"))
                continue
            method = "dry-run"
            if not report.dry_run:
                try:
                    method = place(keeper.path, c.path, mode=mode)
                except OSError as e:
                    report.skipped.append((c.path, f"cannot link: {e.strerror or e}"))
                    continue
                if method == "hardlink":
                    make_read_only(c.path)
                if c.ms_record is not None:
                    _record(c, digest)
        group.linked.append(c.path)
        group.methods.append(method)
        replaced[c.inode] += 1
        nlinks[c.inode] = c.stat.st_nlink
    # An inode's bytes are freed once every one of its names was replaced.
    report.bytes_saved += sum(group.size for inode, n in replaced.items() if n >= nlinks[inode])
    if group.linked:
        report.groups.append(group)


def _unchanged(c: Candidate) -> bool:
    try:
        st = c.path.lstat()
    except OSError:
        return False
    return (st.st_ino, st.st_size, st.st_mtime_ns) == (c.stat.st_ino, c.stat.st_size, c.stat.st_mtime_ns)


def _record(c: Candidate, digest: str) -> None:
    """Keep hubget's ModelScope record current: the file's mtime is now the kept file's."""
    assert c.ms_record is not None
    repo, rev, relpath = c.ms_record
    st = c.path.stat()
    records = repo.records(rev)
    records.add(relpath, st.st_size, st.st_mtime_ns, digest)
    records.flush()


class _free:
    """A lock that is always free (files of extra folders have no downloader)."""

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None
