"""hubget.cache.verify(): every blob hashed once with the algorithm its name says, in parallel; ModelScope
files by hubget's records; nothing that names no hash passes for verified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import hubget.cache
from hubget.errors import NotFoundError
from hubget.layouts.ms_cache import RECORDS_DIR, VerifiedRecords
from tests.support.hfcache import commit_id, etag_of, write_hf_revision, write_ms_revision

BIG = os.urandom(300_000)


def cache_with_two_repos(hf: Path) -> Path:
    files = {"model.safetensors": BIG, "config.json": b'{"a": 1}', "nested/tokenizer.json": b"{}"}
    write_hf_revision(hf, "org/a", commit_id(1), files, refs=("v1",))
    repo = write_hf_revision(hf, "org/a", commit_id(2), {**files, "config.json": b'{"a": 2}'}, refs=("main",))
    write_hf_revision(hf, "org/b", commit_id(3), {"model.safetensors": BIG}, refs=("main",))
    return repo


def flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x80
    path.write_bytes(bytes(data))


def test_each_blob_once_both_algorithms(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    repo = cache_with_two_repos(hf)
    report = hubget.cache.verify(hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms", workers=3)
    assert len(report.checks) == 3 + 1 + 1  # org/a: 2 configs + weights + tokenizer; org/b: its own blob
    assert {c.status for c in report.checks} == {"ok"} and report.workers == 3
    assert report.bytes_hashed == 2 * len(BIG) + 8 + 8 + 2
    weights = next(c for c in report.checks if c.repo_id == "org/a" and c.algo == "sha256")
    assert weights.revisions == [commit_id(1), commit_id(2)] and weights.paths == ["model.safetensors"]
    flip(repo / "blobs" / etag_of("model.safetensors", BIG))
    flip(repo / "blobs" / etag_of("config.json", b'{"a": 2}'), 3)
    report = hubget.cache.verify("org/a", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    bad = sorted((c.algo, c.paths[0]) for c in report.broken)
    assert bad == [("git-sha1", "config.json"), ("sha256", "model.safetensors")]
    assert report.unrepaired == report.broken and report.mb_per_s > 0
    only_v1 = hubget.cache.verify("org/a", revision="v1", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert [c.paths[0] for c in only_v1.broken] == ["model.safetensors"]
    prefix = hubget.cache.verify(
        "org/a", revision=commit_id(1)[:10], hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms"
    )
    assert len(prefix.checks) == 3


def test_missing_blobs_unknown_repos_and_plain_files(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    repo = cache_with_two_repos(hf)
    (repo / "blobs" / etag_of("nested/tokenizer.json", b"{}")).unlink()
    plain = repo / "snapshots" / commit_id(2) / "plain.txt"
    plain.write_text("not a link")
    report = hubget.cache.verify("org/a", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    assert [c.paths[0] for c in report.with_status("missing")] == ["nested/tokenizer.json"]
    assert [c.paths[0] for c in report.with_status("unverifiable")] == ["plain.txt"]
    with pytest.raises(NotFoundError):
        hubget.cache.verify("org/zzz", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")
    with pytest.raises(NotFoundError):
        hubget.cache.verify("org/a", revision="nope", hf_cache_dir=hf, ms_cache_dir=tmp_path / "ms")


def test_modelscope_by_hubget_records(tmp_path: Path) -> None:
    ms = tmp_path / "ms"
    folder = write_ms_revision(ms, "owner/m", {"model.bin": BIG, "config.json": b"{}"})
    st = (folder / "model.bin").stat()
    records = VerifiedRecords(folder, ms / RECORDS_DIR)
    records.add("model.bin", st.st_size, st.st_mtime_ns, hashlib.sha256(BIG).hexdigest())
    records.flush()
    report = hubget.cache.verify(hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms, offline=True)
    status = {c.paths[0]: (c.status, c.basis) for c in report.checks}
    assert status["model.bin"] == ("ok", "hubget record")
    assert status["config.json"][0] == "unverifiable"
    flip(folder / "model.bin")
    os.utime(folder / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = hubget.cache.verify(hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms, offline=True)
    assert [c.paths[0] for c in report.broken] == ["model.bin"]
    # Rewritten since (new mtime): the record no longer vouches for it, and offline nothing else does.
    (folder / "model.bin").write_bytes(BIG)
    report = hubget.cache.verify(hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms, offline=True)
    assert not report.broken and {c.status for c in report.checks} == {"unverifiable"}


def test_an_unreachable_modelscope_hub_leaves_files_unverified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBGET_RETRIES", "0")
    ms = tmp_path / "ms"
    write_ms_revision(ms, "owner/m", {"config.json": b"{}"})
    report = hubget.cache.verify(
        hf_cache_dir=tmp_path / "hf", ms_cache_dir=ms, offline=False, ms_endpoint="http://127.0.0.1:9"
    )
    assert [c.status for c in report.checks] == ["unverifiable"]
    assert "hub unreachable" in report.checks[0].basis and "could not be read" in report.notes[0]
