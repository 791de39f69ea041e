"""hubget download against a scripted hub: corrupt bytes, cross-origin redirects, hub errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hubget
from hubget.errors import AuthError, IntegrityError, RepoNotFoundError
from tests.support.fakehub import FakeHfRepo
from tests.support.rangeserver import Fault, RangeServer

WEIGHTS = os.urandom(3 * 1024 * 1024 + 17)
FILES = {
    "config.json": b'{"model_type": "llama"}\n',
    "model.safetensors": WEIGHTS,
    "sub/dir/notes.txt": b"hi\n",
}
TOKEN = "hf_secret_token_123"


@pytest.fixture
def hub():
    with RangeServer() as server:
        yield server


@pytest.fixture
def cdn():
    with RangeServer() as server:
        yield server


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", **env_extra}
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "hubget", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cache_layout_bytes_and_symlinks(hub, tmp_path):
    repo = FakeHfRepo(hub, "org/tiny", FILES).publish()
    path = Path(hubget.snapshot_download("org/tiny", endpoint=hub.base, cache_dir=tmp_path, token=False))
    repo_dir = tmp_path / "models--org--tiny"
    assert path == repo_dir / "snapshots" / repo.commit
    for name, data in FILES.items():
        link = path / name
        assert link.is_symlink()
        assert not os.path.isabs(os.readlink(link))
        assert link.resolve() == (repo_dir / "blobs" / repo.etags[name]).resolve()
        assert link.read_bytes() == data
    assert (repo_dir / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()).stat().st_size == len(WEIGHTS)
    assert (repo_dir / "refs" / "main").read_text() == repo.commit
    assert not list(repo_dir.rglob("*.hubget-partial*"))


def test_corrupt_byte_is_an_integrity_error_and_nothing_reaches_the_final_path(hub, tmp_path):
    repo = FakeHfRepo(hub, "org/tiny", FILES).publish()
    hub.fault(repo.resolve_path("model.safetensors"), Fault("corrupt", times=-1, offset=1_000_000))
    with pytest.raises(IntegrityError):
        hubget.snapshot_download("org/tiny", endpoint=hub.base, cache_dir=tmp_path, token=False)
    repo_dir = tmp_path / "models--org--tiny"
    assert not (repo_dir / "blobs" / repo.etags["model.safetensors"]).exists()
    assert not (repo_dir / "snapshots" / repo.commit / "model.safetensors").exists()
    # the healthy files are kept
    assert (repo_dir / "snapshots" / repo.commit / "config.json").read_bytes() == FILES["config.json"]

    result = _cli(["download", "org/tiny", "--endpoint", hub.base, "--cache-dir", str(tmp_path), "-q"], {})
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "model.safetensors" in result.stderr


def test_token_goes_to_the_hub_and_never_to_another_origin(hub, cdn, tmp_path):
    repo = FakeHfRepo(hub, "org/tiny", FILES).publish()
    cdn_url = cdn.add("/cdn/blob", WEIGHTS)
    repo.redirect("model.safetensors", cdn_url + "?X-Amz-Signature=abc")
    path = hubget.snapshot_download("org/tiny", endpoint=hub.base, cache_dir=tmp_path, token=TOKEN)
    assert (Path(path) / "model.safetensors").read_bytes() == WEIGHTS
    hub_auth = [r.headers.get("Authorization") for r in hub.requests]
    assert hub_auth and all(h == f"Bearer {TOKEN}" for h in hub_auth)
    cdn_requests = [r for r in cdn.requests if r.path.startswith("/cdn/blob?X-Amz-Signature=abc")]
    assert cdn_requests
    for r in cdn_requests:
        assert "Authorization" not in r.headers
        assert TOKEN not in " ".join(r.headers.values())


def test_hub_errors_are_typed_and_one_line(hub, tmp_path):
    FakeHfRepo(hub, "org/tiny", FILES).publish()
    with pytest.raises(RepoNotFoundError):
        hubget.snapshot_download("org/missing", endpoint=hub.base, cache_dir=tmp_path, token=False)
    result = _cli(["download", "org/missing", "--endpoint", hub.base, "--cache-dir", str(tmp_path)], {})
    assert result.returncode == 3
    assert result.stderr.startswith("hubget: error: repository not found")

    hub.fault("/api/models/org/tiny/revision/main", Fault("status", times=-1, status=401))
    with pytest.raises(AuthError):
        hubget.snapshot_download("org/tiny", endpoint=hub.base, cache_dir=tmp_path, token=False)
    result = _cli(["download", "org/tiny", "--endpoint", hub.base, "--cache-dir", str(tmp_path)], {})
    assert result.returncode == 4
    assert "token" in result.stderr


def test_files_with_the_same_content_share_one_blob_fetched_once(hub, tmp_path):
    files = {**FILES, "copy/model.safetensors": WEIGHTS}
    repo = FakeHfRepo(hub, "org/dup", files).publish()
    path = Path(hubget.snapshot_download("org/dup", endpoint=hub.base, cache_dir=tmp_path, token=False))
    assert (path / "copy" / "model.safetensors").read_bytes() == WEIGHTS
    assert (path / "copy" / "model.safetensors").resolve() == (path / "model.safetensors").resolve()
    fetched = sum(
        hub.bytes_sent[repo.resolve_path(p)] for p in ("model.safetensors", "copy/model.safetensors")
    )
    assert fetched == len(WEIGHTS)
