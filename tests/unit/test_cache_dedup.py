"""Links without copies (reflink, else hard link), and dedup: same sha256 -> one copy, never a temp file,
a locked file, or a blob that does not match its name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import hubget.cache
from hubget.cache.links import place, same_inode
from hubget.layouts.hf_cache import blob_lock_path
from tests.support.heldlock import HeldLock
from tests.support.hfcache import commit_id, etag_of, write_hf_revision, write_ms_revision

W = os.urandom(2 * 1024 * 1024)


def test_place_modes(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    method = place(src, tmp_path / "auto" / "a.bin")
    assert method in ("reflink", "hardlink")
    assert (method == "hardlink") == same_inode(src, tmp_path / "auto" / "a.bin")
    assert place(src, tmp_path / "h.bin", mode="hardlink") == "hardlink" and same_inode(
        src, tmp_path / "h.bin"
    )
    copied = tmp_path / "c.bin"
    assert place(src, copied, mode="copy") in ("reflink", "copy") and not same_inode(src, copied)
    copied.write_bytes(b"changed")
    assert src.read_bytes() == b"abc" * 1000
    with pytest.raises(ValueError):
        place(src, tmp_path / "x", mode="symlink")


def test_dedup_hf_ms_and_a_folder(tmp_path: Path) -> None:
    hf, ms, extra = tmp_path / "hf", tmp_path / "ms", tmp_path / "models"
    repo = write_hf_revision(
        hf, "org/a", commit_id(1), {"model.safetensors": W, "c.json": b"{}"}, refs=("main",)
    )
    folder = write_ms_revision(ms, "org/a", {"model.safetensors": W, "c.json": b"{}"})
    (folder / "model.safetensors.incomplete").write_bytes(W)  # written in place by the SDK: never linked
    extra.mkdir()
    (extra / "copy.safetensors").write_bytes(W)
    (extra / "small.json").write_bytes(b"{}")
    blob = repo / "blobs" / etag_of("model.safetensors", W)
    dry = hubget.cache.dedup([extra], dry_run=True, hf_cache_dir=hf, ms_cache_dir=ms)
    assert dry.bytes_saved == 2 * len(W) and not same_inode(blob, folder / "model.safetensors")
    report = hubget.cache.dedup([extra], hf_cache_dir=hf, ms_cache_dir=ms)
    assert report.bytes_saved == 2 * len(W) and report.files_linked == 2  # c.json is under --min-size
    assert [g.kept for g in report.groups] == [blob]  # the HF blob is the copy kept
    if set(report.groups[0].methods) == {"hardlink"}:
        assert same_inode(blob, folder / "model.safetensors") and same_inode(blob, extra / "copy.safetensors")
        assert not os.stat(blob).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # read-only now
    assert not same_inode(blob, folder / "model.safetensors.incomplete")
    assert hubget.cache.dedup([extra], hf_cache_dir=hf, ms_cache_dir=ms).files_linked == 0
    assert (folder / "model.safetensors").read_bytes() == W


def test_dedup_leaves_locked_files_and_wrong_blobs(tmp_path: Path) -> None:
    hf, ms = tmp_path / "hf", tmp_path / "ms"
    repo = write_hf_revision(hf, "org/a", commit_id(1), {"model.safetensors": W}, refs=("main",))
    repo_b = write_hf_revision(hf, "org/b", commit_id(2), {"model.safetensors": W}, refs=("main",))
    etag = etag_of("model.safetensors", W)
    with HeldLock(blob_lock_path(hf, repo_b.name, etag)):
        report = hubget.cache.dedup(hf_cache_dir=hf, ms_cache_dir=ms)
        assert report.files_linked == 0 and report.skipped[0][1] == "a download holds its lock"
    bad = bytearray(W)
    bad[7] ^= 1
    os.chmod(repo / "blobs" / etag, 0o644)
    (repo / "blobs" / etag).write_bytes(bytes(bad))  # org/a's blob no longer matches its name
    write_ms_revision(ms, "org/b", {"model.safetensors": bytes(bad)})
    report = hubget.cache.dedup(hf_cache_dir=hf, ms_cache_dir=ms)
    assert report.files_linked == 0 and "does not match its name" in report.skipped[0][1]
