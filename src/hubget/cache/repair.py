"""Fetch again, through the normal verified pipeline, only the cached files ``verify`` found wrong.

Layouts take a file of the right size as complete (they never re-hash what they committed), so a
corrupt file is first moved aside (``{file}.hubget-corrupt``), under the same lock a download of
it would take, and then ``hubget.api.fetch_snapshot`` runs for just the paths that name it: the
engine downloads, verifies and renames them into place as for any download. When the refetch
fails, the file moved aside is put back, so the cache is exactly as it was and the file is still
reported as corrupt.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from hubget.api import fetch_snapshot, hf_layout
from hubget.cache.hashpool import FileCheck
from hubget.cache.inuse import held
from hubget.errors import HubgetError
from hubget.layouts.base import Layout
from hubget.layouts.hf_cache import blob_lock_path
from hubget.layouts.ms_cache import MsCacheLayout, sdk_lock_path
from hubget.models import RepoRef
from hubget.sources.base import Source

ASIDE_SUFFIX = ".hubget-corrupt"


def repair_files(
    checks: list[FileCheck],
    *,
    hf_cache_dir: Path,
    ms_cache_dir: Path,
    endpoint: str | None = None,
    ms_endpoint: str | None = None,
    token: str | None = None,
) -> int:
    """Refetch every corrupt or missing file of ``checks``; marks them ``repaired``, returns bytes fetched."""
    fetched = 0
    groups: dict[tuple[str, str, str, str], list[FileCheck]] = defaultdict(list)
    for check in checks:
        # One revision is enough: every revision that links to a blob links to the same bytes.
        groups[(check.cache, check.repo_type, check.repo_id, check.revisions[0])].append(check)
    for (cache, repo_type, repo_id, revision), group in groups.items():
        ref = RepoRef(repo_id, repo_type, revision)  # type: ignore[arg-type]
        try:
            if cache == "hf":
                fetched += _repair_hf(ref, group, hf_cache_dir, endpoint, token)
            else:
                fetched += _repair_ms(ref, group, ms_cache_dir, ms_endpoint, token)
        except HubgetError as e:
            for check in group:
                if not check.repaired:
                    check.note = f"not repaired: {e}"
    return fetched


def _repair_hf(
    ref: RepoRef, group: list[FileCheck], cache_dir: Path, endpoint: str | None, token: str | None
) -> int:
    from hubget.sources.huggingface import HfSource

    repo_folder = group[0].file.parent.parent.name
    locks = {c.file: blob_lock_path(cache_dir, repo_folder, c.file.name) for c in group}
    return _refetch(
        group, locks, lambda: HfSource(endpoint, token), lambda: hf_layout(ref, cache_dir, None), ref
    )


def _repair_ms(
    ref: RepoRef, group: list[FileCheck], root: Path, ms_endpoint: str | None, token: str | None
) -> int:
    from hubget.sources.modelscope import ModelScopeSource

    layout = MsCacheLayout(ref, root)
    if any(os.path.abspath(layout.folder / c.paths[0]) != os.path.abspath(c.file) for c in group):
        for c in group:
            c.note = f"not repaired: the SDK would write this revision into {layout.folder}, not here"
        return 0
    locks = {c.file: sdk_lock_path(root, ref.repo_id, ref.repo_type, c.paths[0]) for c in group}
    return _refetch(group, locks, lambda: ModelScopeSource(ms_endpoint, token), lambda: layout, ref)


def _refetch(
    group: list[FileCheck],
    locks: dict[Path, Path],
    source_fn: Callable[[], Source],
    layout_fn: Callable[[], Layout],
    ref: RepoRef,
) -> int:
    aside: dict[Path, Path] = {}
    todo: list[FileCheck] = []
    for check in group:
        with held(locks[check.file]) as free:
            if not free:
                check.note = "not repaired: a download of this file is running"
                continue
            if check.status == "corrupt" and os.path.lexists(check.file):
                moved = check.file.with_name(check.file.name + ASIDE_SUFFIX)
                os.replace(check.file, moved)
                aside[check.file] = moved
        todo.append(check)  # the lock is released: fetch_snapshot takes it again itself
    if not todo:
        return 0
    paths = sorted({p for c in todo for p in c.paths})
    try:
        report = fetch_snapshot(source_fn(), ref, layout_fn(), filenames=paths)
    except BaseException:
        for original, moved in aside.items():
            if not os.path.lexists(original):
                with contextlib.suppress(OSError):
                    os.replace(moved, original)
        raise
    for check in todo:
        check.repaired = True
        check.note = "fetched again and verified"
        if moved := aside.get(check.file):
            with contextlib.suppress(OSError):
                moved.unlink()
    return sum(f.bytes_fetched for f in report.files)
