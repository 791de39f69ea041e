"""Hostile file names from the hub and symlinks planted in the cache or the local folder: nothing
is ever written outside the destination, and hostile names are refused before any file exists."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import hubget
from hubget.errors import UnsafePathError
from tests.faults.faultserver import FaultServer
from tests.faults.harness import (
    assert_cache_verified,
    assert_clean_failure,
    assert_files,
    assert_ok,
    cli_args,
    run_cli,
)
from tests.support.fakehub import FakeHfRepo

pytestmark = pytest.mark.timeout(60)

REPO = "org/names"
WEIGHTS = os.urandom(200 * 1024)
FILES = {
    "config.json": b'{"c": 3}\n',
    "model.safetensors": WEIGHTS,
    "sub/dir/notes.txt": b"notes\n",
}
W = "model.safetensors"
VICTIM = b"precious bytes outside the cache\n"

HOSTILE = {
    "dotdot": "../x",
    "dotdot_deep": "a/../../x",
    "absolute": "/tmp/hubget-hostile-x",
    "drive": "C:\\x",
    "drive_slash": "C:/x",
    "unc": "\\\\host\\share\\x",
    "backslash_dotdot": "..\\x",
    "nul": "a\x00b",
    "newline": "a\nb",
    "overlong_component": "a" * 300,
    "overlong_path": "/".join(["d" * 200] * 30),
    "empty_segment": "a//b",
    "dot_segment": "./x",
}


def tree_with(name: str) -> dict[str, bytes]:
    return {**FILES, name: b"hostile\n"}


def everything_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("key", sorted(HOSTILE))
def test_hostile_name_refused_before_any_file_operation(hub: FaultServer, tmp_path, key):
    FakeHfRepo(hub, REPO, tree_with(HOSTILE[key])).publish()  # type: ignore[arg-type]
    cache = tmp_path / "a" / "cache"
    local = tmp_path / "a" / "local"
    with pytest.raises(UnsafePathError):
        hubget.snapshot_download(REPO, endpoint=hub.base, cache_dir=cache, token=False)
    with pytest.raises(UnsafePathError):
        hubget.snapshot_download(REPO, endpoint=hub.base, local_dir=local, cache_dir=cache, token=False)
    # refused while reading the listing: not one file or folder was created, here or anywhere
    assert not (tmp_path / "a").exists() or everything_under(tmp_path / "a") <= {cache, local}
    assert not Path("/tmp/hubget-hostile-x").exists()
    assert not (tmp_path / "x").exists()
    # no byte of any file was requested
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_hostile_name_cli_is_one_line_exit_5(hub: FaultServer, tmp_path):
    FakeHfRepo(hub, REPO, tree_with("../../etc/evil")).publish()  # type: ignore[arg-type]
    assert_clean_failure(run_cli(cli_args(REPO, hub.base, tmp_path / "c")), 5, "../../etc/evil")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.json"))


# -- symlinks planted where hubget writes ------------------------------------------------------


@pytest.fixture
def repo(hub: FaultServer) -> FakeHfRepo:
    return FakeHfRepo(hub, REPO, FILES).publish()  # type: ignore[arg-type]


@pytest.fixture
def victim(tmp_path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "victim"
    target.write_bytes(VICTIM)
    return target


def _blob_dir(cache: Path) -> Path:
    d = cache / "models--org--names" / "blobs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_symlink_at_the_blob_path(hub, repo, tmp_path, victim):
    cache = tmp_path / "cache"
    os.symlink(victim, _blob_dir(cache) / repo.etags[W])
    result = run_cli(cli_args(REPO, hub.base, cache))
    assert victim.read_bytes() == VICTIM
    if result.returncode == 0:
        assert_files(assert_ok(result), FILES)
        assert_cache_verified(cache)
    else:
        assert_clean_failure(result, 5)


def test_symlink_at_the_blob_path_to_a_file_of_the_right_size(hub, repo, tmp_path, victim):
    """A planted link to bytes of the announced size is not "already downloaded"."""
    cache = tmp_path / "cache"
    victim.write_bytes(os.urandom(len(WEIGHTS)))
    before = victim.read_bytes()
    os.symlink(victim, _blob_dir(cache) / repo.etags[W])
    result = run_cli(cli_args(REPO, hub.base, cache))
    assert victim.read_bytes() == before
    if result.returncode == 0:
        assert_files(assert_ok(result), FILES)
        assert_cache_verified(cache)
    else:
        assert_clean_failure(result, 5)


def test_symlinks_at_the_temp_path_and_its_state(hub, repo, tmp_path, victim):
    cache = tmp_path / "cache"
    blobs = _blob_dir(cache)
    partial = blobs / (repo.etags[W] + ".hubget-partial")
    victim.write_bytes(b"\0" * len(WEIGHTS))  # the size a resumable partial would have
    os.symlink(victim, partial)
    state_victim = victim.with_name("state-victim")
    state_victim.write_text(
        json.dumps(
            {
                "version": 1,
                "expected_hash": repo.etags[W],
                "hash_algo": "sha256",
                "size": len(WEIGHTS),
                "done": [],
            }
        )
    )
    state_before = state_victim.read_bytes()
    os.symlink(state_victim, partial.with_name(partial.name + ".json"))
    assert_files(assert_ok(run_cli(cli_args(REPO, hub.base, cache))), FILES)
    assert victim.read_bytes() == b"\0" * len(WEIGHTS)
    assert state_victim.read_bytes() == state_before
    assert_cache_verified(cache)


def test_symlinked_folder_inside_the_snapshot(hub, repo, tmp_path):
    cache = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    snap = cache / "models--org--names" / "snapshots" / repo.commit
    snap.mkdir(parents=True)
    os.symlink(outside, snap / "sub")
    result = run_cli(cli_args(REPO, hub.base, cache))
    assert list(outside.iterdir()) == []
    assert_clean_failure(result, 5, "symlink")


def test_symlinked_folder_in_local_dir(hub, repo, tmp_path):
    local = tmp_path / "local"
    outside = tmp_path / "outside"
    outside.mkdir()
    local.mkdir()
    os.symlink(outside, local / "sub")
    result = run_cli(["download", REPO, "--endpoint", hub.base, "--local-dir", str(local), "-q"])
    assert list(outside.iterdir()) == []
    assert_clean_failure(result, 5, "symlink")


def test_symlink_at_a_local_dir_destination(hub, repo, tmp_path, victim):
    local = tmp_path / "local"
    local.mkdir()
    os.symlink(victim, local / "config.json")
    result = run_cli(["download", REPO, "--endpoint", hub.base, "--local-dir", str(local), "-q"])
    assert victim.read_bytes() == VICTIM
    if result.returncode == 0:
        assert not (local / "config.json").is_symlink()
        assert_files(local, FILES)
    else:
        assert_clean_failure(result, 5, "symlink")


def test_symlink_at_a_local_dir_temp_path(hub, repo, tmp_path, victim):
    local = tmp_path / "local"
    temp = local / ".cache" / "huggingface" / "download" / (W + ".hubget-partial")
    temp.parent.mkdir(parents=True)
    os.symlink(victim, temp)
    assert_files(
        assert_ok(run_cli(["download", REPO, "--endpoint", hub.base, "--local-dir", str(local), "-q"])),
        FILES,
    )
    assert victim.read_bytes() == VICTIM
    assert hashlib.sha256((local / W).read_bytes()).digest() == hashlib.sha256(WEIGHTS).digest()
