"""rm and prune take the downloaders' locks without waiting and leave what is locked; bytes freed are
counted per inode; a dry run changes nothing and reports what the real run then does."""

from __future__ import annotations

import os
import time
from pathlib import Path

from huggingface_hub import scan_cache_dir

import hubget.cache
from hubget.layouts.ms_cache import sdk_lock_path
from tests.support.heldlock import HeldLock
from tests.support.hfcache import commit_id, etag_of, hf_repo_dir, write_hf_revision, write_ms_revision

OLD = time.time() - 7200
W1, W2 = os.urandom(40_000), os.urandom(20_000)


def make_cache(hf: Path) -> Path:
    write_hf_revision(hf, "org/a", commit_id(1), {"w.safetensors": W1, "c.json": b"1"}, refs=("v1",))
    return write_hf_revision(
        hf, "org/a", commit_id(2), {"w.safetensors": W1, "x.bin": W2, "c.json": b"2"}, refs=("main",)
    )


def lock_of(hf: Path, etag: str) -> Path:
    return hf / ".locks" / "models--org--a" / f"{etag}.lock"


def test_rm_revision_frees_only_what_no_other_revision_links(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    repo = make_cache(hf)
    dry = hubget.cache.rm("org/a", revision="v1", dry_run=True, hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert (repo / "refs" / "v1").exists() and (repo / "snapshots" / commit_id(1)).is_dir()
    done = hubget.cache.rm("org/a", revision="v1", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert done.bytes_freed == dry.bytes_freed == 1 + 40  # v1's own c.json blob, and refs/v1
    assert [c.commit_hash for r in scan_cache_dir(hf).repos for c in r.revisions] == [commit_id(2)]


def test_rm_keeps_a_blob_whose_lock_a_download_holds(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    repo = make_cache(hf)
    etag = etag_of("x.bin", W2)
    (repo / "blobs" / f"{etag}.incomplete").write_bytes(b"partial")
    with HeldLock(lock_of(hf, etag)):
        report = hubget.cache.rm("org/a", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
        kept = {s.path.name for s in report.skipped}
        assert kept == {etag, f"{etag}.incomplete"}
        assert sorted(p.name for p in (repo / "blobs").iterdir()) == sorted(kept)
        assert not (repo / "snapshots").exists() or not any((repo / "snapshots").iterdir())
    again = hubget.cache.rm("org/a", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert not repo.exists() and not (hf / ".locks" / "models--org--a").exists()
    assert again.bytes_freed == len(W2) + len(b"partial")


def test_prune_detached_orphans_partials_and_locks(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    repo = make_cache(hf)
    write_hf_revision(hf, "org/a", commit_id(3), {"d.bin": b"d" * 5000})  # detached
    (repo / "blobs" / ("f" * 64)).write_bytes(b"o" * 700)  # orphan
    (repo / "blobs" / ("1" * 64 + ".hubget-partial")).write_bytes(b"p" * 300)
    (repo / "blobs" / ("1" * 64 + ".hubget-partial.json")).write_text("{}")
    young, old = lock_of(hf, "2" * 64), lock_of(hf, "3" * 64)
    for lock in (young, old):
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    os.utime(old, (OLD, OLD))
    # A young detached snapshot may be a download that has not written its ref yet: kept.
    kept = hubget.cache.prune(hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert (repo / "snapshots" / commit_id(3)).is_dir() and young.exists() and not old.exists()
    assert not (repo / "blobs" / ("f" * 64)).exists() and kept.bytes_freed == 700 + 300 + 2
    for p in [repo / "snapshots" / commit_id(3), *(repo / "snapshots" / commit_id(3)).rglob("*")]:
        os.utime(p, (OLD, OLD), follow_symlinks=False)
    with HeldLock(lock_of(hf, "4" * 64)):  # and while any download writes into the repo: kept
        assert hubget.cache.prune(hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms").bytes_freed == 0
    report = hubget.cache.prune(hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms", min_age=3600)
    assert report.bytes_freed == 5000 and not (repo / "snapshots" / commit_id(3)).exists()
    assert sorted(c.commit_hash for r in scan_cache_dir(hf).repos for c in r.revisions) == [
        commit_id(1),
        commit_id(2),
    ]


def test_a_held_stale_looking_lock_stays(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    make_cache(hf)
    lock = lock_of(hf, "5" * 64)
    with HeldLock(lock):
        os.utime(lock, (OLD, OLD))
        hubget.cache.prune(hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
        assert lock.exists()
    hubget.cache.prune(hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert not lock.exists()


def test_bytes_freed_count_an_inode_once_its_last_name_goes(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    repo = make_cache(hf)
    outside = tmp_path / "exported.bin"
    os.link(repo / "blobs" / etag_of("x.bin", W2), outside)
    report = hubget.cache.rm("org/a", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert report.bytes_freed == len(W1) + 1 + 1 + 2 * 40  # x.bin lives on as exported.bin
    assert outside.read_bytes() == W2


def test_modelscope_rm_and_prune_respect_the_sdk_locks(tmp_path: Path) -> None:
    ms = tmp_path / "ms"
    folder = write_ms_revision(ms, "owner/m", {"config.json": b"{}", "model.bin": W1})
    (folder / "big.bin.incomplete").write_bytes(b"i" * 123)
    stale_lock = ms / ".lock" / "file_0.lock"
    stale_lock.parent.mkdir(parents=True, exist_ok=True)
    stale_lock.touch()
    os.utime(stale_lock, (OLD, OLD))
    with HeldLock(sdk_lock_path(ms, "owner/m", "model", "big.bin")):
        report = hubget.cache.prune(hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms)
        assert (folder / "big.bin.incomplete").exists() and not stale_lock.exists()
        assert [s.path.name for s in report.skipped] == ["big.bin.incomplete"]
    assert hubget.cache.prune(hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms).bytes_freed == 123
    with HeldLock(sdk_lock_path(ms, "owner/m", "model", "model.bin")):
        report = hubget.cache.rm("owner/m", cache="ms", hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms)
        assert (
            report.bytes_freed == 2
            and (folder / "model.bin").exists()
            and not (folder / "config.json").exists()
        )
    hubget.cache.rm("owner/m", hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms)
    assert not (ms / "models" / "owner--m").exists()


def test_rm_says_which_repo_when_the_name_is_ambiguous(tmp_path: Path) -> None:
    import pytest

    from hubget.errors import NotFoundError, UsageError

    hf, ms = tmp_path / "hf", tmp_path / "ms"
    write_hf_revision(hf, "org/a", commit_id(1), {"c.json": b"1"}, refs=("main",))
    write_ms_revision(ms, "org/a", {"c.json": b"1"})
    with pytest.raises(UsageError, match="--cache hf or --cache ms"):
        hubget.cache.rm("org/a", hf_cache_dir=hf, ms_cache_dir=ms)
    with pytest.raises(NotFoundError):
        hubget.cache.rm("org/nope", hf_cache_dir=hf, ms_cache_dir=ms)
    with pytest.raises(NotFoundError):
        hubget.cache.rm("org/a", revision="v9", cache="hf", hf_cache_dir=hf, ms_cache_dir=ms)
    assert hf_repo_dir(hf, "org/a").exists()
