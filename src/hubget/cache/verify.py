"""``hubget.cache.verify()``: hash what the caches hold against the hashes the files are known by.

- Hugging Face: a blob is named by its etag, and the etag is the hash: 64 hex digits are the
  sha256 of an LFS file, 40 the git blob sha1 of any other. Each blob is hashed once, however many
  revisions and repos link to it; a snapshot link to a missing blob is reported as missing.
- ModelScope: the SDK records no hash in its cache (neither the current layout nor the old
  ``.msc`` index). hubget records (size, mtime, sha256) of each file it verified; a file whose
  size and mtime still match its record is checked against that sha256. The others are checked
  against the hub's listing of that revision when the hub answers (``MODELSCOPE_ENDPOINT``), and
  reported as unverifiable when it does not or ``offline`` is set.

Files are hashed on a thread pool (hashlib releases the GIL), the largest first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubget import config
from hubget.cache import hfscan, msscan
from hubget.cache.hashpool import FileCheck, ProgressCallback, hash_all
from hubget.cache.scan import cache_dirs, check_caches
from hubget.errors import HubgetError, NetworkError, NotFoundError

LISTING_TIMEOUT = 10.0  # seconds the ModelScope hub gets to answer a listing before it counts as unreachable


@dataclass
class VerifyReport:
    checks: list[FileCheck]
    bytes_hashed: int
    seconds: float
    workers: int
    notes: list[str] = field(default_factory=list)
    bytes_refetched: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_hashed / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def with_status(self, status: str) -> list[FileCheck]:
        return [c for c in self.checks if c.status == status]

    @property
    def broken(self) -> list[FileCheck]:
        return [c for c in self.checks if c.status in ("corrupt", "missing")]

    @property
    def unrepaired(self) -> list[FileCheck]:
        return [c for c in self.broken if not c.repaired]

    def as_json(self) -> dict[str, Any]:
        counts = {s: len(self.with_status(s)) for s in ("ok", "corrupt", "missing", "unverifiable")}
        return {
            "files": len(self.checks),
            **counts,
            "repaired": sum(c.repaired for c in self.checks),
            "unrepaired": len(self.unrepaired),
            "bytes_hashed": self.bytes_hashed,
            "bytes_refetched": self.bytes_refetched,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 1),
            "workers": self.workers,
            "notes": self.notes,
            "checks": [c.as_json() for c in self.checks if c.status != "ok"],
        }


def verify(
    repo: str | None = None,
    *,
    revision: str | None = None,
    repo_type: str | None = None,
    caches: tuple[str, ...] | list[str] | str | None = None,
    repair: bool = False,
    workers: int | None = None,
    offline: bool | None = None,
    hf_cache_dir: str | Path | None = None,
    ms_cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    ms_endpoint: str | None = None,
    token: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Hash every cached file (or those of ``repo``, ``revision``) against its known hash.

    With ``repair``, what is corrupt or missing is fetched again through the verified download
    pipeline (``hubget.cache.repair``), and nothing else. ``offline`` (default: HF_HUB_OFFLINE) never
    asks a hub for a listing."""
    chosen = check_caches(caches)
    offline = config.hf_offline() if offline is None else offline
    hf_dir, ms_dir = cache_dirs(hf_cache_dir, ms_cache_dir)
    notes: list[str] = []
    hub_down: list[str] = []  # why the ModelScope hub did not answer: asked once per run, not per repo
    checks: list[FileCheck] = []
    matched = False
    if "hf" in chosen:
        for hf_repo in hfscan.read_cache(hf_dir):
            if _wanted(hf_repo.repo_id, hf_repo.repo_type, repo, repo_type):
                matched = True
                checks.extend(_hf_checks(hf_repo, revision))
    if "ms" in chosen:
        for ms_repo in msscan.read_cache(ms_dir):
            if _wanted(ms_repo.repo_id, ms_repo.repo_type, repo, repo_type):
                matched = True
                checks.extend(_ms_checks(ms_repo, revision, offline, ms_endpoint, token, notes, hub_down))
    if repo is not None and not matched:
        raise NotFoundError(f"{repo} is in neither cache ({hf_dir}, {ms_dir})")
    if repo is not None and revision is not None and not checks:
        raise NotFoundError(f"revision {revision!r} of {repo} is not cached")
    started = time.perf_counter()
    pool_size = workers or max(2, os.cpu_count() or 2)
    hashed = hash_all(checks, pool_size, on_progress)
    report = VerifyReport(checks, hashed, time.perf_counter() - started, pool_size, notes)
    unverifiable = report.with_status("unverifiable")
    if unverifiable:
        notes.append(
            f"{len(unverifiable)} file(s) could not be verified: nothing names their hash (see 'basis')"
        )
    if repair and report.broken:
        from hubget.cache.repair import repair_files

        report.bytes_refetched = repair_files(
            report.broken,
            hf_cache_dir=hf_dir,
            ms_cache_dir=ms_dir,
            endpoint=endpoint,
            ms_endpoint=ms_endpoint,
            token=token,
        )
    return report


def _wanted(repo_id: str, repo_type: str, repo: str | None, wanted_type: str | None) -> bool:
    if repo is None:
        return True
    return repo_id == repo and (wanted_type is None or wanted_type == repo_type)


def _hf_checks(repo: hfscan.HfRepo, revision: str | None) -> list[FileCheck]:
    by_blob: dict[str, FileCheck] = {}
    for rev in hfscan.revisions_named(repo, revision):
        for f in rev.files:
            check = by_blob.get(f.blob_s)
            if check is None:
                check = by_blob[f.blob_s] = _hf_check(repo, f)
            if rev.commit not in check.revisions:
                check.revisions.append(rev.commit)
            if f.path not in check.paths:
                check.paths.append(f.path)
    return list(by_blob.values())


def _hf_check(repo: hfscan.HfRepo, f: hfscan.HfFile) -> FileCheck:
    st = repo.blob_stats.get(f.blob_s)
    in_blobs = os.path.dirname(f.blob_s) == os.path.abspath(repo.path / "blobs")
    algo = hfscan.hash_algo_of(f.etag) if in_blobs else None
    check = FileCheck(
        "hf", repo.repo_type, repo.repo_id, [], [], f.blob, st.st_size if st else 0, algo, None, "blob name"
    )
    if st is None:
        check.status, check.note = "missing", "the snapshot links to a blob that is not there"
    elif algo is None:
        check.status = "unverifiable"
        check.basis = "a plain file in the snapshot" if not in_blobs else "a blob name that is not a hash"
    else:
        check.expected = f.etag
    return check


def _ms_checks(
    repo: msscan.MsRepo,
    revision: str | None,
    offline: bool,
    ms_endpoint: str | None,
    token: str | None,
    notes: list[str],
    hub_down: list[str],
) -> list[FileCheck]:
    out: list[FileCheck] = []
    for rev in repo.revisions:
        if revision is not None and rev.name != revision:
            continue
        records = repo.records(rev)
        unknown: list[FileCheck] = []
        for f in rev.files:
            check = FileCheck(
                "ms",
                repo.repo_type,
                repo.repo_id,
                [rev.name],
                [f.path],
                f.file,
                f.stat.st_size,
                None,
                None,
                "",
            )
            record = records.recorded(f.path)
            if record is not None and record[2] and record[:2] == (f.stat.st_size, f.stat.st_mtime_ns):
                check.algo, check.expected, check.basis = "sha256", record[2], "hubget record"
            else:
                unknown.append(check)
            out.append(check)
        if unknown:
            _from_listing(repo, rev, unknown, offline, ms_endpoint, token, notes, hub_down)
    return out


def _from_listing(
    repo: msscan.MsRepo,
    rev: msscan.MsRevision,
    checks: list[FileCheck],
    offline: bool,
    ms_endpoint: str | None,
    token: str | None,
    notes: list[str],
    hub_down: list[str],
) -> None:
    """Expected hashes from the hub's listing of this revision, for files no record covers."""
    where = f"{repo.repo_id}@{rev.name}"
    if offline or rev.name == msscan.LEGACY_REVISION:
        why = "offline" if offline else "an old-layout folder names no revision"
        for c in checks:
            c.status, c.basis = "unverifiable", f"no hash recorded in the ModelScope cache ({why})"
        notes.append(
            f"{where}: the ModelScope cache records no hash for {len(checks)} file(s); not checked ({why})"
        )
        return
    try:
        if hub_down:
            raise NetworkError(hub_down[0])
        listed = _ms_listing(repo, rev.name, ms_endpoint, token)
    except HubgetError as e:
        if isinstance(e, NetworkError) and not hub_down:
            hub_down.append(str(e))
        for c in checks:
            c.status, c.basis = "unverifiable", "no hash recorded in the ModelScope cache; hub unreachable"
        notes.append(
            f"{where}: the ModelScope cache records no hash for {len(checks)} file(s), and the hub's listing "
            f"could not be read ({e}); not checked"
        )
        return
    for c in checks:
        sha = listed.get(c.paths[0])
        if sha:
            c.algo, c.expected, c.basis = "sha256", sha, "hub listing"
        else:
            c.status, c.basis = "unverifiable", "not in the hub's listing of this revision"
    notes.append(
        f"{where}: {len(checks)} file(s) checked against the hub's listing (the cache records no hash)"
    )


def _ms_listing(
    repo: msscan.MsRepo, revision: str, ms_endpoint: str | None, token: str | None
) -> dict[str, str]:
    from hubget.models import RepoRef
    from hubget.sources.modelscope import ModelScopeSource
    from hubget.transfer.http import HttpClient

    client = HttpClient(
        connect_timeout=LISTING_TIMEOUT,
        read_timeout=LISTING_TIMEOUT,
        retries=1,
        body_timeout=6 * LISTING_TIMEOUT,
    )
    source = ModelScopeSource(ms_endpoint, token, client=client)
    snapshot = source.resolve(RepoRef(repo.repo_id, repo.repo_type, revision))  # type: ignore[arg-type]
    return {f.path: f.sha256 for f in snapshot.files if f.sha256}
