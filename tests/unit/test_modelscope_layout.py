"""The ModelScope cache layout, with the modelscope SDK's own path logic as the judge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubget.errors import OfflineError, UnsafePathError
from hubget.layouts import ms_cache
from hubget.layouts.ms_cache import MsCacheLayout, MsLocalDirLayout, cached_folder, repo_folder, sdk_lock_path
from hubget.models import RemoteFile, RepoRef, Snapshot
from tests.support.repos import sha256_hex


def sdk_download_folder(root: Path, repo_id: str, repo_type: str = "model") -> Path:
    """The folder modelscope.snapshot_download writes to, computed by the SDK's own functions."""
    from modelscope.hub.utils.utils import find_reusable_legacy_repo_dir
    from modelscope_hub import HubApi

    legacy = find_reusable_legacy_repo_dir(repo_id, repo_type=repo_type, cache_dir=str(root))
    if legacy is not None:
        return Path(legacy)
    manager = HubApi(endpoint="http://127.0.0.1:9").downloader
    found = manager._find_legacy_repo_dir(repo_id, repo_type, root)
    if found is not None:
        return found
    return manager._repo_cache_dir_path(repo_id, repo_type, root) / "snapshots" / "master"


def fill(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")


@pytest.mark.parametrize(
    "existing",
    [
        [],
        ["models/Qwen/Qwen3___5-0___8B"],
        ["hub/models/Qwen/Qwen3___5-0___8B"],
        ["hub/Qwen/Qwen3.5-0.8B"],
        ["Qwen/Qwen3___5-0___8B"],
        ["models/Qwen/Qwen3.5-0.8B"],
        ["models/Qwen--Qwen3.5-0.8B/snapshots/master", "hub/Qwen/Qwen3.5-0.8B"],
        ["models/Qwen--Qwen3.5-0.8B/snapshots/master", "hub/models/Qwen/Qwen3___5-0___8B"],
        ["hub/models/Qwen/Qwen3___5-0___8B", "Qwen/Qwen3.5-0.8B"],
    ],
)
def test_folder_is_the_one_the_sdk_uses(tmp_path: Path, existing: list[str]) -> None:
    for rel in existing:
        fill(tmp_path / rel)
    want = sdk_download_folder(tmp_path, "Qwen/Qwen3.5-0.8B")
    assert repo_folder(tmp_path, "Qwen/Qwen3.5-0.8B", "model", None) == want
    layout = MsCacheLayout(RepoRef("Qwen/Qwen3.5-0.8B"), tmp_path)
    assert layout.folder == want


def test_dataset_folder_and_revision(tmp_path: Path) -> None:
    assert repo_folder(tmp_path, "org/ds", "dataset", None) == tmp_path / "datasets/org--ds/snapshots/master"
    assert (
        sdk_download_folder(tmp_path, "org/ds", "dataset") == tmp_path / "datasets/org--ds/snapshots/master"
    )
    assert repo_folder(tmp_path, "org/m", "model", "v1.0") == tmp_path / "models/org--m/snapshots/v1.0"


def test_cache_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "c"))
    layout = MsCacheLayout(RepoRef("org/m"))
    assert layout.folder == tmp_path / "c/models/org--m/snapshots/master"


def test_lock_is_the_sdk_lock(tmp_path: Path) -> None:
    from modelscope_hub import HubApi

    manager = HubApi(endpoint="http://127.0.0.1:9").downloader
    for repo_type, path in (("model", "a/b.bin"), ("dataset", "x.txt")):
        want = manager._lock_path("org/m", repo_type, cache_dir=tmp_path, file_path=path)
        assert sdk_lock_path(tmp_path, "org/m", repo_type, path) == want


def test_offline_lookup_follows_the_sdk(tmp_path: Path) -> None:
    snaps = tmp_path / "models/org--m/snapshots"
    with pytest.raises(OfflineError):
        cached_folder(RepoRef("org/m"), tmp_path)
    fill(snaps / "v2")
    assert cached_folder(RepoRef("org/m"), tmp_path) == snaps / "v2"  # the only one
    fill(snaps / "v3")
    with pytest.raises(OfflineError, match="several"):
        cached_folder(RepoRef("org/m"), tmp_path)
    (snaps / "main").mkdir()
    with pytest.raises(OfflineError):
        cached_folder(RepoRef("org/m"), tmp_path)  # an empty folder does not count
    fill(snaps / "main")
    assert cached_folder(RepoRef("org/m"), tmp_path) == snaps / "main"
    fill(snaps / "master")
    assert cached_folder(RepoRef("org/m"), tmp_path) == snaps / "master"
    assert cached_folder(RepoRef("org/m", revision="v3"), tmp_path) == snaps / "v3"
    with pytest.raises(OfflineError):
        cached_folder(RepoRef("org/m", revision="v9"), tmp_path)
    with pytest.raises(OfflineError):
        cached_folder(RepoRef("org/m"), tmp_path, local_dir=tmp_path / "nothing")


def snapshot_of(files: dict[str, bytes]) -> Snapshot:
    remote = [RemoteFile(p, len(d), f"http://x/{p}", sha256=sha256_hex(d)) for p, d in files.items()]
    return Snapshot(RepoRef("org/m"), "master", remote, "modelscope")


def test_complete_files_are_trusted_by_record_not_rehashed(tmp_path: Path, monkeypatch) -> None:
    files = {"a.bin": b"a" * 1000, "sub/b.txt": b"b"}
    snap = snapshot_of(files)
    layout = MsCacheLayout(RepoRef("org/m"), tmp_path)
    for f in snap.files:
        assert not layout.is_complete(snap, f)
        target = layout.target(snap, f)
        assert target == tmp_path / "models/org--m/snapshots/master" / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[f.path])
        layout.commit(snap, f)
    assert layout.finalize(snap) == tmp_path / "models/org--m/snapshots/master"
    assert sorted(os.listdir(layout.folder)) == ["a.bin", "sub"]  # nothing of hubget's among the files

    calls: list[Path] = []
    real_hash = ms_cache.hash_file
    monkeypatch.setattr(ms_cache, "hash_file", lambda p, algo="sha256": calls.append(p) or real_hash(p, algo))
    fresh = MsCacheLayout(RepoRef("org/m"), tmp_path)  # a later run: records come from disk
    assert all(fresh.is_complete(snap, f) for f in snap.files)
    assert calls == []

    # Same size, other bytes, new mtime: the record no longer applies and the hash decides.
    a = fresh.target(snap, snap.files[0])
    a.write_bytes(b"z" * 1000)
    assert not fresh.is_complete(snap, snap.files[0])
    assert calls == [a]
    # The right bytes written by someone else (the SDK, a copy): hashed once, then recorded.
    a.write_bytes(files["a.bin"])
    assert fresh.is_complete(snap, snap.files[0])
    fresh.finalize(snap)
    calls.clear()
    assert MsCacheLayout(RepoRef("org/m"), tmp_path).is_complete(snap, snap.files[0])
    assert calls == []


def test_wrong_size_or_symlink_is_not_complete(tmp_path: Path) -> None:
    snap = snapshot_of({"a.bin": b"abc"})
    layout = MsCacheLayout(RepoRef("org/m"), tmp_path)
    target = layout.target(snap, snap.files[0])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"abcd")
    assert not layout.is_complete(snap, snap.files[0])
    target.unlink()
    (target.parent / "inside").write_bytes(b"abc")
    target.symlink_to(target.parent / "inside")
    assert not layout.is_complete(snap, snap.files[0])  # the SDK cache holds plain files
    target.unlink()
    (tmp_path / "elsewhere").write_bytes(b"abc")
    target.symlink_to(tmp_path / "elsewhere")
    assert not layout.is_complete(snap, snap.files[0])  # planted to lead outside: never trusted


def test_partials_stay_out_of_the_snapshot_folder(tmp_path: Path) -> None:
    snap = snapshot_of({"a.bin": b"abc", "b.bin": b"abc"})
    layout = MsCacheLayout(RepoRef("org/m"), tmp_path)
    parts = {layout.partial_path(snap, f) for f in snap.files}
    assert len(parts) == 2  # same bytes, two paths: never one temp file
    for part in parts:
        assert part.parent == tmp_path / "models/org--m/.hubget-partial"
    local = MsLocalDirLayout(RepoRef("org/m"), tmp_path / "out", tmp_path)
    assert local.target(snap, snap.files[0]) == tmp_path / "out/a.bin"
    assert local.partial_path(snap, snap.files[0]).parent == tmp_path / "out/.hubget-partial"
    local.partial_dir.mkdir(parents=True)
    assert local.finalize(snap) == tmp_path / "out"
    assert not local.partial_dir.exists()  # an empty partial folder is removed


def test_hostile_paths_are_refused(tmp_path: Path) -> None:
    layout = MsCacheLayout(RepoRef("org/m"), tmp_path)
    bad = RemoteFile("../../etc/passwd", 1, "http://x", sha256="0" * 64)
    with pytest.raises(UnsafePathError):
        layout.target(snapshot_of({}), bad)
