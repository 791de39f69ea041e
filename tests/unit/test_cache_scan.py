"""hubget.cache.scan(): the numbers huggingface_hub's scan_cache_dir() gives for the HF cache, and the
ModelScope layouts (current and old) read with their temp files set apart."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import scan_cache_dir

import hubget.cache
from tests.support.hfcache import commit_id, hf_repo_dir, write_hf_revision, write_ms_revision

WEIGHTS = os.urandom(50_000)


def hf_view(cache: Path) -> dict:
    info = scan_cache_dir(cache)
    return {
        "total": info.size_on_disk,
        "repos": {
            (r.repo_type, r.repo_id): (
                r.size_on_disk,
                r.nb_files,
                r.last_accessed,
                r.last_modified,
                {
                    v.commit_hash: (sorted(v.refs), v.size_on_disk, v.nb_files, v.last_modified)
                    for v in r.revisions
                },
            )
            for r in info.repos
        },
    }


def hubget_view(cache: Path, ms: Path) -> dict:
    result = hubget.cache.scan(hf_cache_dir=cache, ms_cache_dir=ms, caches="hf")
    return {
        "total": result.hf_size_on_disk,
        "repos": {
            (r.repo_type, r.repo_id): (
                r.size_on_disk,
                r.nb_files,
                r.last_accessed,
                r.last_modified,
                {v.name: (v.refs, v.size_on_disk, v.nb_files, v.last_modified) for v in r.revisions},
            )
            for r in result.repos
        },
    }


def test_scan_agrees_with_scan_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    v1 = {"config.json": b'{"v": 1}', "model.safetensors": WEIGHTS, "sub/dir/tok.json": b"{}"}
    v2 = {**v1, "config.json": b'{"v": 2}'}
    write_hf_revision(cache, "org/a", commit_id(1), v1, refs=("v1.0",))
    write_hf_revision(cache, "org/a", commit_id(2), v2, refs=("main", "refs/pr/1"))
    write_hf_revision(cache, "org/a", commit_id(3), {"only.bin": os.urandom(10)})  # detached
    write_hf_revision(
        cache,
        "org/data",
        commit_id(4),
        {"train.parquet": os.urandom(999)},
        refs=("main",),
        repo_type="dataset",
    )
    write_hf_revision(cache, "solo", commit_id(5), {"x.txt": b"x"}, refs=("main",))
    (hf_repo_dir(cache, "org/empty") / "snapshots" / commit_id(6)).mkdir(parents=True)  # an empty revision
    (cache / ".locks" / "models--org--a").mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert hubget_view(cache, tmp_path / "ms") == hf_view(cache)
    result = hubget.cache.scan(hf_cache_dir=cache, caches="hf")
    a = next(r for r in result.repos if r.repo_id == "org/a")
    assert a.refs == ["main", "refs/pr/1", "v1.0"] and a.nb_files == 5 and not a.problems


def test_a_broken_link_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo = write_hf_revision(cache, "org/a", commit_id(1), {"a.bin": WEIGHTS}, refs=("main",))
    next((repo / "blobs").iterdir()).unlink()
    (repo / "refs" / "gone").write_text(commit_id(9))
    result = hubget.cache.scan(hf_cache_dir=cache, caches="hf")
    assert len(result.repos) == 1
    problems = result.repos[0].problems
    assert any("blob missing" in p for p in problems) and any("not cached" in p for p in problems)
    assert scan_cache_dir(cache).warnings  # huggingface_hub calls it corrupted too


def test_modelscope_layouts_and_partials(tmp_path: Path) -> None:
    ms = tmp_path / "ms"
    folder = write_ms_revision(ms, "owner/model", {"config.json": b"{}", "w/model.bin": WEIGHTS})
    os.link(folder / "w" / "model.bin", folder / "w" / "copy.bin")  # one inode, two names
    (folder / "w" / "big.bin.incomplete").write_bytes(b"p" * 100)
    (folder.parent.parent / ".hubget-partial").mkdir()
    (folder.parent.parent / ".hubget-partial" / ("0" * 64)).write_bytes(b"q" * 10)
    old = ms / "hub" / "models" / "owner" / "old___name"
    old.mkdir(parents=True)
    (old / "model.bin").write_bytes(b"o" * 300)
    (old / ".msc").write_bytes(b"index")
    write_ms_revision(ms, "owner/model", {"config.json": b"{}"}, revision="v1.0")
    result = hubget.cache.scan(hf_cache_dir=tmp_path / "none", ms_cache_dir=ms)
    repos = {(r.repo_id, r.path.name): r for r in result.repos}
    current = repos[("owner/model", "owner--model")]
    assert [v.name for v in current.revisions] == ["master", "v1.0"]
    assert current.size_on_disk == 2 + len(WEIGHTS) + 2 and current.revisions[0].nb_files == 3
    legacy = repos[("owner/old.name", "old___name")]
    assert legacy.revisions[0].name == "(legacy)" and legacy.size_on_disk == 300
    assert sorted(p.size for p in result.partial_files) == [10, 100]
    assert result.ms_size_on_disk == result.disk_usage == 2 + len(WEIGHTS) + 2 + 300


def test_disk_usage_counts_a_file_both_caches_share_once(tmp_path: Path) -> None:
    hf, ms = tmp_path / "hf", tmp_path / "ms"
    repo = write_hf_revision(hf, "org/a", commit_id(1), {"model.safetensors": WEIGHTS}, refs=("main",))
    folder = write_ms_revision(ms, "org/a", {})
    folder.mkdir(parents=True, exist_ok=True)
    os.link(next((repo / "blobs").iterdir()), folder / "model.safetensors")
    result = hubget.cache.scan(hf_cache_dir=hf, ms_cache_dir=ms)
    assert result.hf_size_on_disk == result.ms_size_on_disk == len(WEIGHTS)
    assert result.size_on_disk == 2 * len(WEIGHTS) and result.disk_usage == len(WEIGHTS)
    assert [r.cache for r in result.repos] == ["hf", "ms"]


def test_two_hundred_repos(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    for i in range(200):
        write_hf_revision(
            cache, f"org/m{i}", commit_id(i), {"config.json": b"%d" % i, "m.bin": b"w" * i}, refs=("main",)
        )
    result = hubget.cache.scan(hf_cache_dir=cache, caches="hf")
    assert len(result.repos) == 200
    assert result.hf_size_on_disk == scan_cache_dir(cache).size_on_disk
