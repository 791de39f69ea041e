"""``hubget.cache.rm()`` and ``hubget.cache.prune()``: free space without breaking either cache.

- ``rm(repo)`` removes a repo (or one revision of it) from the Hugging Face or the ModelScope cache.
- ``prune()`` removes what no tool will read again: detached revisions (no ref names them) and
  orphan blobs of the Hugging Face cache, temp files of downloads that are no longer running
  (huggingface_hub's ``*.incomplete``, the SDK's ``*.incomplete`` / ``*.parallel_tmp``, hubget's
  ``*.hubget-partial*``), lock files nobody holds, and hubget's records of folders that are gone.

Nothing a running download uses is removed: each file goes only under the lock its downloader
takes (see ``hubget.cache.inuse``), and what is locked is reported as skipped.
"""

from __future__ import annotations

from pathlib import Path

from hubget.cache import hfclean, hfscan, msclean, msscan
from hubget.cache.deletion import Cleaner, CleanReport
from hubget.cache.inuse import STALE_LOCK_AGE
from hubget.cache.scan import cache_dirs, check_caches
from hubget.errors import NotFoundError, UsageError

__all__ = ["CleanReport", "prune", "rm"]


def rm(
    repo: str,
    *,
    revision: str | None = None,
    repo_type: str | None = None,
    cache: str | None = None,
    dry_run: bool = False,
    hf_cache_dir: str | Path | None = None,
    ms_cache_dir: str | Path | None = None,
) -> CleanReport:
    """Remove ``repo`` (or its ``revision``: a ref, a commit, or a ModelScope revision folder).

    ``cache`` ("hf" or "ms") says which cache when both hold a repo of that name."""
    chosen = check_caches(cache)
    hf_dir, ms_dir = cache_dirs(hf_cache_dir, ms_cache_dir)
    hf_matches = []
    ms_matches = []
    if "hf" in chosen:
        hf_matches = [r for r in hfscan.read_cache(hf_dir) if _is(r.repo_id, r.repo_type, repo, repo_type)]
    if "ms" in chosen:
        ms_matches = [r for r in msscan.read_cache(ms_dir) if _is(r.repo_id, r.repo_type, repo, repo_type)]
    if not hf_matches and not ms_matches:
        raise NotFoundError(f"{repo} is not in {' or '.join(_names(chosen, hf_dir, ms_dir))}")
    if hf_matches and ms_matches:
        raise UsageError(f"{repo} is in both caches: say which with --cache hf or --cache ms")
    if len(hf_matches) + len(ms_matches) > 1:
        kinds = ", ".join(sorted({r.repo_type for r in [*hf_matches, *ms_matches]}))
        raise UsageError(f"several repos named {repo} ({kinds}): say which with --repo-type")
    report = CleanReport(dry_run)
    cleaner = Cleaner(report)
    if hf_matches:
        hf_repo = hf_matches[0]
        if revision is None:
            hfclean.remove_revisions(cleaner, hf_repo, set(), whole_repo=True)
        else:
            revisions = hfscan.revisions_named(hf_repo, revision)
            if not revisions:
                raise NotFoundError(f"revision {revision!r} of {repo} is not cached (in {hf_dir})")
            hfclean.remove_revisions(cleaner, hf_repo, {r.commit for r in revisions}, whole_repo=False)
    else:
        ms_repo = ms_matches[0]
        if revision is not None and not any(r.name == revision for r in ms_repo.revisions):
            names = ", ".join(r.name for r in ms_repo.revisions) or "none"
            raise NotFoundError(f"revision {revision!r} of {repo} is not cached (cached: {names})")
        msclean.remove_repo(cleaner, ms_repo, revision)
    return report


def prune(
    *,
    dry_run: bool = False,
    caches: tuple[str, ...] | list[str] | str | None = None,
    min_age: float = STALE_LOCK_AGE,
    hf_cache_dir: str | Path | None = None,
    ms_cache_dir: str | Path | None = None,
) -> CleanReport:
    """Remove detached revisions, orphan blobs, stale temp files, stale locks and stale records.

    ``min_age`` (seconds) spares lock files and detached snapshots written more recently than that:
    a download writes its ref last, so a young detached snapshot may still be in the making."""
    chosen = check_caches(caches)
    hf_dir, ms_dir = cache_dirs(hf_cache_dir, ms_cache_dir)
    report = CleanReport(dry_run)
    cleaner = Cleaner(report)
    if "hf" in chosen and hf_dir.is_dir():
        for repo in hfscan.read_cache(hf_dir):
            hfclean.prune_repo(cleaner, repo, min_age=min_age)
        hfclean.prune_locks(cleaner, hf_dir, min_age=min_age)
    if "ms" in chosen and ms_dir.is_dir():
        msclean.prune_cache(cleaner, ms_dir, min_age=min_age)
    return report


def _is(repo_id: str, repo_type: str, wanted: str, wanted_type: str | None) -> bool:
    return repo_id == wanted and (wanted_type is None or repo_type == wanted_type)


def _names(chosen: tuple[str, ...], hf_dir: Path, ms_dir: Path) -> list[str]:
    return [
        f"the {'Hugging Face' if c == 'hf' else 'ModelScope'} cache {hf_dir if c == 'hf' else ms_dir}"
        for c in chosen
    ]
