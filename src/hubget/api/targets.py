"""Where a download goes: the layout for the cache or folder the user named, and, offline, the
snapshot already there."""

from __future__ import annotations

from pathlib import Path

from hubget.errors import OfflineError, UsageError
from hubget.layouts.base import Layout
from hubget.layouts.hf_cache import HfCacheLayout
from hubget.layouts.local_dir import LocalDirLayout
from hubget.layouts.ms_cache import MsCacheLayout, MsLocalDirLayout
from hubget.models import REPO_TYPES, RepoRef


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


def modelscope_layout(
    ref: RepoRef, cache_dir: str | Path | None = None, local_dir: str | Path | None = None
) -> Layout:
    """The layout `hubget download --source modelscope` writes with (cache, or ``local_dir``)."""
    if local_dir is not None:
        return MsLocalDirLayout(ref, local_dir, cache_dir)
    return MsCacheLayout(ref, cache_dir)
