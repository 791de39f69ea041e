"""Drop-ins for ``modelscope.snapshot_download`` and ``modelscope.model_file_download``.

Same parameter names and return values as the modelscope SDK; the files land where the SDK reads
them (``hubget.layouts.ms_cache``), fetched by hubget's engine: many files and many ranges at once,
resumable, sha256-verified, and never re-hashed once recorded as verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hubget.api.targets import modelscope_layout
from hubget.errors import OfflineError, UsageError
from hubget.layouts.base import Layout
from hubget.layouts.ms_cache import cached_folder
from hubget.models import RepoRef, Snapshot
from hubget.paths import safe_relpath
from hubget.sources.modelscope import ModelScopeSource
from hubget.transfer.jobs import ProgressSink

Patterns = str | Sequence[str] | None


def _patterns(primary: Patterns, alias: Patterns) -> list[str] | None:
    """The SDK's rule: ``allow_patterns`` wins over ``allow_file_pattern`` when both are given.
    Its legacy regex-like ``.*`` is read as the glob ``*``, as the SDK does."""
    chosen = primary if primary else alias
    if not chosen:
        return None
    items = [chosen] if isinstance(chosen, str) else list(chosen)
    return [p.replace(".*", "*") for p in items if p]


def _ref(model_id: str | None, repo_id: str | None, repo_type: str | None, revision: str | None) -> RepoRef:
    effective = repo_id or model_id
    if not effective:
        raise UsageError("give a model_id (or repo_id) such as owner/name")
    repo_type = repo_type or "model"
    if repo_type not in ("model", "dataset"):
        raise UsageError(f"ModelScope repo_type must be model or dataset, not {repo_type!r}")
    return RepoRef(effective, repo_type, revision)  # type: ignore[arg-type]


def modelscope_source_and_layout(
    repo_id: str,
    *,
    repo_type: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
) -> tuple[ModelScopeSource, Layout, RepoRef]:
    """What ``fetch_snapshot`` needs for a ModelScope repo (used by `hubget download --source modelscope`)."""
    ref = _ref(repo_id, None, repo_type, revision)
    return ModelScopeSource(endpoint, token), modelscope_layout(ref, cache_dir, local_dir), ref


def modelscope_snapshot_download(
    model_id: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    allow_patterns: Patterns = None,
    ignore_patterns: Patterns = None,
    allow_file_pattern: Patterns = None,
    ignore_file_pattern: Patterns = None,
    max_workers: int = 8,
    repo_type: str | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    *,
    repo_id: str | None = None,
    connections: int = 8,
    progress: ProgressSink | None = None,
    **_ignored: Any,
) -> str:
    """Download a ModelScope repo (or the files the patterns select); return its folder, exactly the
    folder ``modelscope.snapshot_download`` returns for the same arguments."""
    ref = _ref(model_id, repo_id, repo_type, revision)
    if local_files_only:
        return str(cached_folder(ref, cache_dir, local_dir))
    from hubget.api.pipeline import fetch_snapshot

    report = fetch_snapshot(
        ModelScopeSource(endpoint, token),
        ref,
        modelscope_layout(ref, cache_dir, local_dir),
        allow_patterns=_patterns(allow_patterns, allow_file_pattern),
        ignore_patterns=_patterns(ignore_patterns, ignore_file_pattern),
        max_workers=max_workers,
        connections=connections,
        progress=progress,
    )
    return str(report.path)


def modelscope_dataset_snapshot_download(dataset_id: str, **kwargs: Any) -> str:
    """``modelscope.dataset_snapshot_download``."""
    kwargs.pop("repo_type", None)
    return modelscope_snapshot_download(dataset_id, repo_type="dataset", **kwargs)


def modelscope_file_download(
    model_id: str,
    file_path: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    *,
    repo_type: str | None = None,
    connections: int = 8,
    progress: ProgressSink | None = None,
    **_ignored: Any,
) -> str:
    """Download one file; return its path, as ``modelscope.model_file_download`` does."""
    safe_relpath(file_path)
    ref = _ref(model_id, None, repo_type, revision)
    if local_files_only:
        path = cached_folder(ref, cache_dir, local_dir) / file_path
        if not path.is_file():
            raise OfflineError(f"offline mode: {file_path} of {ref.repo_id} is not in the cache")
        return str(path)
    from hubget.api.pipeline import fetch_snapshot

    source = ModelScopeSource(endpoint, token)
    layout = modelscope_layout(ref, cache_dir, local_dir)
    info = source.file_info(ref, file_path)
    snapshot = Snapshot(ref, ref.revision or "master", [info], source.name, source.endpoint)
    fetch_snapshot(source, ref, layout, connections=connections, progress=progress, snapshot=snapshot)
    return str(layout.target(snapshot, info))
