"""What `hubget serve` finds on disk: content-derived commits of plain folders, the persistent hash
cache, repo lookup rules, and re-serving a Hugging Face cache filled by huggingface_hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hubget.server.hashcache as hashcache
from hubget.errors import EntryNotFoundError, RepoNotFoundError, RevisionNotFoundError
from hubget.server.store import Store
from tests.protocol.clientrun import run_client
from tests.protocol.conftest import HubRepos
from tests.support.hubserver import hub_server
from tests.support.repos import git_blob_sha1, hashes, sha256_hex, write_folder_repo


def test_folder_commit_follows_content(tmp_path: Path):
    repo_dir = write_folder_repo(tmp_path / "models/org/r", {"a.txt": b"one", "w.safetensors": b"x" * 100})
    store = Store(tmp_path)
    repo = store.find("model", "org/r")
    first = repo.resolve("main")
    assert repo.resolve("master") == first and repo.resolve(first) == first
    entries = {e.path: e for e in repo.list_files(first)}
    assert entries["w.safetensors"].is_lfs and entries["w.safetensors"].sha256 == sha256_hex(b"x" * 100)
    assert not entries["a.txt"].is_lfs and entries["a.txt"].git_sha1 == git_blob_sha1(b"one")

    # Same bytes written again (new mtime): same commit. Different bytes: a new commit.
    (repo_dir / "a.txt").write_bytes(b"one")
    os.utime(repo_dir / "a.txt", ns=(1, 1))
    assert Store(tmp_path).find("model", "org/r").resolve("main") == first
    (repo_dir / "a.txt").write_bytes(b"two")
    second = Store(tmp_path).find("model", "org/r").resolve("main")
    assert second != first
    with pytest.raises(RevisionNotFoundError):
        Store(tmp_path).find("model", "org/r").list_files(first)


def test_hash_cache_persists_across_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_folder_repo(tmp_path / "models/org/r", {"big.bin": os.urandom(50_000), "c.json": b"{}"})
    calls: list[str] = []
    real = hashcache._hash_file

    def counting(path: Path, algo: str, size: int) -> str:
        calls.append(f"{Path(path).name}:{algo}")
        return real(path, algo, size)

    monkeypatch.setattr(hashcache, "_hash_file", counting)
    store = Store(tmp_path)
    commit = store.find("model", "org/r").resolve()
    store.close()
    assert sorted(calls) == ["big.bin:sha256", "c.json:git_sha1"]
    calls.clear()
    store = Store(tmp_path)  # a new process would find the same sqlite file
    assert store.find("model", "org/r").resolve() == commit
    store.close()
    assert calls == []
    assert (tmp_path / ".hubget-cache" / "hashes.sqlite").is_file()
    # The cache folder is never served as a repo or a file.
    with pytest.raises(RepoNotFoundError):
        Store(tmp_path).find("model", ".hubget-cache/hashes.sqlite")


def test_repo_lookup_rules(tmp_path: Path):
    write_folder_repo(tmp_path / "models/org/a", {"f": b"1"})
    write_folder_repo(tmp_path / "org2/b", {"f": b"2"})  # ROOT/{owner}/{name} is a model too
    write_folder_repo(tmp_path / "datasets/org/a", {"f": b"3"})
    write_folder_repo(tmp_path / "models/gpt2", {"f": b"4"})  # a repo id without owner
    store = Store(tmp_path)
    assert store.find("model", "org2/b").open_file(store.find("model", "org2/b").resolve(), "f")[1].path
    assert store.find("dataset", "org/a").resolve() != store.find("model", "org/a").resolve()
    assert store.find("model", "gpt2").resolve()
    for repo_type, repo_id in [
        ("model", "org"),
        ("model", "../models/org/a"),
        ("space", "org/a"),
        ("model", "org/a/f"),
    ]:
        with pytest.raises(RepoNotFoundError):
            store.find(repo_type, repo_id)  # type: ignore[arg-type]
    repo = store.find("model", "org/a")
    with pytest.raises(EntryNotFoundError):
        repo.open_file(repo.resolve(), "../a/f")
    assert ("model", "gpt2") in store.list_repos() and ("model", "org2/b") in store.list_repos()


def test_serve_an_hf_cache(hub_url: str, hub_repos: HubRepos, tmp_path: Path):
    """A cache filled by huggingface_hub is served again: same commits, same bytes, same ETags."""
    fill = """
        from huggingface_hub import snapshot_download
        a = snapshot_download("org/plain")
        b = snapshot_download("org/git", revision="v1.0")
        c = snapshot_download("org/ds", repo_type="dataset")
        emit({"plain": [Path(a).name, tree_hashes(a)], "git": [Path(b).name, tree_hashes(b)],
              "ds": [Path(c).name, tree_hashes(c)],
              "blobs": sorted(p.name for p in Path(a).parent.parent.joinpath("blobs").iterdir())})
        """
    first = run_client(fill, endpoint=hub_url, hf_home=tmp_path / "one")
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    with hub_server(empty_root, hf_cache=tmp_path / "one" / "hub") as url2:
        # revision v1.0 was stored in the cache as refs/v1.0, so it resolves there too
        second = run_client(fill, endpoint=url2, hf_home=tmp_path / "two")
    assert first == second
    assert first["plain"][1] == hashes(hub_repos.plain)
    v1 = hub_repos.git_commits["v1.0"]
    assert first["git"] == [v1, hashes(hub_repos.git_files[v1])]
    assert first["ds"][1] == hashes(hub_repos.dataset)


def test_listing_hashes_reach_other_processes_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Hashes are written in batches; a listing ends with a write, so another server process (a new
    Store on the same root, the first one still open) does not hash the files again."""
    files = {f"d{i % 3}/f{i}.txt": os.urandom(100 + i) for i in range(40)}
    write_folder_repo(tmp_path / "models/org/r", files)
    monkeypatch.setattr(hashcache, "FLUSH_ROWS", 10_000)
    monkeypatch.setattr(hashcache, "FLUSH_SECONDS", 3600.0)
    calls: list[str] = []
    real = hashcache._hash_file

    def counting(path: Path, algo: str, size: int) -> str:
        calls.append(algo)
        return real(path, algo, size)

    monkeypatch.setattr(hashcache, "_hash_file", counting)
    first = Store(tmp_path)
    commit = first.find("model", "org/r").resolve()
    assert len(calls) == len(files)
    calls.clear()
    other = Store(tmp_path)
    repo = other.find("model", "org/r")
    assert repo.resolve() == commit
    assert calls == []
    assert {e.path: e.git_sha1 for e in repo.list_files(commit)} == {
        p: git_blob_sha1(b) for p, b in files.items()
    }
    first.close()
    other.close()


def test_open_file_in_an_hf_cache_agrees_with_the_listing(tmp_path: Path):
    """HfCacheRepo finds one file without walking the snapshot: same entries and bytes as the
    listing, and the same refusals (missing blob, linked folder, path leaving the snapshot)."""
    cache = tmp_path / "hub"
    repo_dir = cache / "models--org--c"
    commit = "a" * 40
    snap = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    (snap / "sub").mkdir(parents=True)
    blobs.mkdir()
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    weights, config = os.urandom(3000), b'{"a": 1}\n'
    (blobs / sha256_hex(weights)).write_bytes(weights)
    (blobs / git_blob_sha1(config)).write_bytes(config)
    (snap / "model.safetensors").symlink_to(blobs / sha256_hex(weights))
    (snap / "sub" / "config.json").symlink_to(blobs / git_blob_sha1(config))
    (snap / "copied.txt").write_bytes(b"a copy, not a link\n")
    (snap / "missing.bin").symlink_to(blobs / ("b" * 64))  # blob never downloaded
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (snap / "linked").symlink_to(outside, target_is_directory=True)
    empty = tmp_path / "root"
    empty.mkdir()
    repo = Store(empty, hf_cache=cache).find("model", "org/c")
    assert repo.resolve() == commit
    listed = repo.list_files(commit)
    assert [e.path for e in listed] == ["copied.txt", "model.safetensors", "sub/config.json"]
    for entry in listed:
        found, body = repo.open_file(commit, entry.path)
        assert found == entry
        assert body.path is not None and body.path.read_bytes() == (snap / entry.path).read_bytes()
    assert repo.entry(commit, "model.safetensors").sha256 == sha256_hex(weights)
    assert repo.entry(commit, "sub/config.json").git_sha1 == git_blob_sha1(config)
    for bad in ("missing.bin", "linked/secret.txt", "../../../outside/secret.txt", "nope.txt", "sub"):
        with pytest.raises(EntryNotFoundError):
            repo.open_file(commit, bad)
