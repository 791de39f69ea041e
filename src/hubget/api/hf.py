"""Drop-ins for ``huggingface_hub.snapshot_download`` and ``hf_hub_download``: same arguments, the
same cache, fetched by hubget's pipeline (``source="modelscope"`` and ``source="auto"`` dispatch to
the ModelScope drop-in and the multi-source orchestration)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from hubget import config
from hubget.api.pipeline import fetch_snapshot
from hubget.api.targets import check_repo_type, hf_layout, offline_snapshot
from hubget.errors import EntryNotFoundError, OfflineError, UsageError
from hubget.layouts.hf_cache import HfCacheLayout
from hubget.models import RepoRef, Snapshot
from hubget.transfer.jobs import ProgressSink


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
    to: str | None = None,
    s3_endpoint: str | None = None,
    **_ignored: Any,
) -> str:
    """Download a whole repo (or the files the patterns select); return the snapshot folder
    (or ``local_dir``). Same meaning as ``huggingface_hub.snapshot_download``.

    ``to="s3://bucket/prefix"`` stages the files into a bucket instead (``hubget.api.stage``: each file
    the object ``prefix/<path>``, plus a manifest) and returns that URL; ``s3_endpoint`` overrides
    ``AWS_ENDPOINT_URL``. ``source`` is then ``hf`` or ``modelscope``.

    ``source="auto"`` asks the Hugging Face endpoint, the mirrors and ModelScope at once and takes
    each file from every source that serves the same bytes (``hubget.api.auto``);
    ``modelscope_id`` and ``mapping_file`` name the repo on ModelScope when its id differs."""
    if to is not None:
        return _stage(
            repo_id,
            to,
            repo_type,
            revision,
            source,
            endpoint,
            token,
            s3_endpoint,
            allow_patterns,
            ignore_patterns,
            max_workers,
            connections,
            progress,
        )
    if source == "modelscope":
        from hubget.api.modelscope import modelscope_snapshot_download

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
        from hubget.api.auto import fetch_auto

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


def _stage(
    repo_id: str,
    to: str,
    repo_type: str | None,
    revision: str | None,
    source: str,
    endpoint: str | None,
    token: str | bool | None,
    s3_endpoint: str | None,
    allow_patterns: str | list[str] | None,
    ignore_patterns: str | list[str] | None,
    max_workers: int,
    connections: int,
    progress: ProgressSink | None,
) -> str:
    from hubget.api.stage import source_for, stage_snapshot
    from hubget.objectstore.s3 import parse_s3_url

    target = parse_s3_url(to)
    ref = RepoRef(repo_id, check_repo_type(repo_type), revision)  # type: ignore[arg-type]
    report = stage_snapshot(
        source_for(source, endpoint, token),
        ref,
        target,
        endpoint=s3_endpoint,
        allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns,
        max_workers=max_workers,
        connections=connections,
        progress=progress,
    )
    return str(report.target)


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
