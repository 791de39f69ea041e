"""hubget speaks Xet: against the hub replica and the CAS replica (filled by hf_xet), Xet-backed files
come from the CAS, byte-identical and verified, with no request to the HTTP bridge; tokens and signed
URLs are renewed mid-file; damaged xorb ranges are caught; the off switches take the bridge."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hubget
import hubget.api.pipeline
from hubget.api.targets import hf_layout
from hubget.models import RepoRef
from hubget.sources.huggingface import HfSource
from tests.support import xetspec as spec
from tests.support.casreplica import CasReplica, publish, weights_like
from tests.support.hubreplica import HubReplica, make_repo

MiB = 1024 * 1024
ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


def repo_files(seed: int = 0) -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "x", "hidden_size": 64}\n',
        "model-00001-of-00002.safetensors": weights_like(12 * MiB, seed=seed),
        "model-00002-of-00002.safetensors": weights_like(5 * MiB, seed=seed + 1) + os.urandom(3 * MiB),
        "tokenizer.model": b"".join(b"piece %d\n" % i for i in range(200_000)),
    }


@pytest.fixture
def replicas():
    with HubReplica() as hub, CasReplica() as cas:
        yield hub, cas


def _blob(cache: Path, repo_id: str, data: bytes) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}" / "blobs" / hashlib.sha256(data).hexdigest()


def _bridge_requests(hub: HubReplica) -> int:
    return sum(hub.counters.bridge_requests.values())


def _download(hub: HubReplica, tmp_path: Path, repo_id: str = "org/xet", **kw) -> Path:
    return Path(
        hubget.snapshot_download(repo_id, endpoint=hub.hub_url, cache_dir=tmp_path, token=False, **kw)
    )


def test_snapshot_over_xet_is_byte_identical_without_the_bridge(replicas, tmp_path, monkeypatch):
    hub, cas = replicas
    monkeypatch.setenv("HUBGET_XET_BATCH_BYTES", str(4 * MiB))  # several reconstructions per file
    files = repo_files()
    repo = publish(hub, cas, make_repo("org/xet", files))
    xet_paths = {p for p, f in repo.files.items() if f.xet_hash}
    assert len(xet_paths) == 3
    cas.counters.reset()
    hub.reset()
    path = _download(hub, tmp_path)
    for name, data in files.items():
        assert (path / name).read_bytes() == data, name
        assert (path / name).is_symlink()
        assert name not in xet_paths or _blob(tmp_path, "org/xet", data).is_file()
    assert _bridge_requests(hub) == 0
    assert hub.counters.resolver_calls["org/xet", "config.json"] == 1  # the regular file, over HTTP
    assert hub.counters.api_calls["xet-read-token"] == 1
    requests = cas.counters.requests
    assert requests["v2-reconstruction"] >= 6 and requests["xorb-range"] >= len(cas.xorbs)
    xorb_bytes = sum(len(x.data) for x in cas.xorbs.values())
    assert cas.counters.transfer_bytes <= xorb_bytes  # every xorb byte at most once
    assert cas.counters.auth_seen["transfer"] == []  # the CAS token never goes to the transfer origin
    assert not list(tmp_path.rglob("*.hubget-partial*"))
    # A second run finds everything in place and asks the CAS for nothing.
    cas.counters.reset()
    _download(hub, tmp_path)
    assert cas.counters.requests == {}


def test_hf_hub_download_of_one_xet_file(replicas, tmp_path):
    hub, cas = replicas
    files = repo_files(seed=5)
    publish(hub, cas, make_repo("org/xet", files))
    hub.reset()
    name = "model-00002-of-00002.safetensors"
    path = hubget.hf_hub_download("org/xet", name, endpoint=hub.hub_url, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == files[name]
    assert _bridge_requests(hub) == 0 and cas.counters.requests["xorb-range"] >= 1


def test_token_and_signed_urls_renewed_mid_file(replicas, tmp_path, monkeypatch):
    hub, cas = replicas
    files = {"weights.bin": os.urandom(12 * MiB)}
    publish(hub, cas, make_repo("org/xet", files))
    monkeypatch.setenv("HUBGET_XET_BATCH_BYTES", str(MiB))
    cas.token_lifetime = 1.5  # tokens and URLs expire several times while the file downloads
    cas.url_expiry = 1.5
    cas.rate_per_conn = 1.5 * MiB
    cas.counters.reset()
    start = time.monotonic()
    path = _download(hub, tmp_path, connections=2, max_workers=1)
    took = time.monotonic() - start
    assert (path / "weights.bin").read_bytes() == files["weights.bin"]
    assert took > 2 * cas.token_lifetime
    assert cas.counters.tokens_issued["read"] >= 3  # renewed before expiry...
    assert cas.counters.unauthorized == 0  # ...so the CAS never had to refuse one
    assert hub.counters.api_calls["xet-read-token"] == cas.counters.tokens_issued["read"]
    assert _bridge_requests(hub) == 0


def test_refused_xorb_urls_are_replaced_mid_file(replicas, tmp_path, monkeypatch):
    hub, cas = replicas
    files = {"weights.bin": os.urandom(16 * MiB)}
    publish(hub, cas, make_repo("org/xet", files))
    monkeypatch.setenv("HUBGET_XET_BATCH_BYTES", str(MiB))
    cas.rate_per_conn = MiB  # 4 s on 4 connections
    cas.counters.reset()
    timer = threading.Timer(1.0, cas.revoke_urls)  # the CDN refuses every URL handed out so far
    timer.start()
    try:
        path = _download(hub, tmp_path, connections=4, max_workers=1)
    finally:
        timer.cancel()
    assert (path / "weights.bin").read_bytes() == files["weights.bin"]
    assert cas.counters.refused_urls["expired"] >= 1
    # The batches whose URLs were refused were asked for again, each once.
    assert 16 < cas.counters.requests["v2-reconstruction"] <= 16 + cas.counters.refused_urls["expired"]
    assert _bridge_requests(hub) == 0


def test_revoked_token_is_replaced_after_a_401(replicas, tmp_path, monkeypatch):
    hub, cas = replicas
    files = {"weights.bin": os.urandom(12 * MiB)}
    publish(hub, cas, make_repo("org/xet", files))
    monkeypatch.setenv("HUBGET_XET_BATCH_BYTES", str(MiB))
    cas.rate_per_conn = 1.5 * MiB  # 4 s on 2 connections
    cas.counters.reset()
    timer = threading.Timer(1.0, cas.revoke_tokens)  # the token dies long before its exp
    timer.start()
    try:
        path = _download(hub, tmp_path, connections=2, max_workers=1)
    finally:
        timer.cancel()
    assert (path / "weights.bin").read_bytes() == files["weights.bin"]
    assert cas.counters.unauthorized >= 1 and cas.counters.tokens_issued["read"] >= 2
    assert _bridge_requests(hub) == 0


@pytest.mark.parametrize("mode", ["header", "truncate"])
def test_damaged_xorb_range_is_detected_and_fetched_again(replicas, tmp_path, monkeypatch, mode):
    hub, cas = replicas
    files = {"model.safetensors": weights_like(6 * MiB, seed=7), "config.json": b"{}"}
    publish(hub, cas, make_repo("org/xet", files))
    monkeypatch.setenv("HUBGET_XET_BATCH_BYTES", str(2 * MiB))
    cas.counters.reset()
    cas.corrupt_next(times=2, mode=mode)
    path = _download(hub, tmp_path)
    assert (path / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert cas.counters.corrupted == 2
    ranges = cas.counters.requests["xorb-range"]
    assert ranges >= cas.counters.requests["v2-reconstruction"] + 2  # the damaged ranges, again
    assert _bridge_requests(hub) == 0  # repaired within Xet


def test_silently_wrong_bytes_never_reach_the_cache(replicas, tmp_path, monkeypatch):
    """A flipped byte in a chunk stored uncompressed decodes fine: the sha256 catches it, the bad
    file is discarded, and the HTTP bridge delivers the right bytes."""
    hub, cas = replicas
    data = os.urandom(3 * MiB)  # random bytes: hf_xet stores the chunks as they are
    publish(hub, cas, make_repo("org/xet", {"weights.bin": data}))
    cas.counters.reset()
    cas.corrupt_next(times=1, mode="flip")
    path = _download(hub, tmp_path)
    assert (path / "weights.bin").read_bytes() == data
    assert cas.counters.corrupted == 1
    assert hub.counters.bridge_requests["org/xet", "weights.bin"] >= 1


@pytest.mark.parametrize("switch", ["HUBGET_DISABLE_XET", "HF_HUB_DISABLE_XET"])
def test_off_switch_takes_the_bridge(replicas, tmp_path, monkeypatch, switch):
    hub, cas = replicas
    files = repo_files(seed=9)
    publish(hub, cas, make_repo("org/xet", files))
    cas.counters.reset()
    hub.reset()
    monkeypatch.setenv(switch, "1")
    path = _download(hub, tmp_path)
    for name, data in files.items():
        assert (path / name).read_bytes() == data
    assert cas.counters.requests == {} and hub.counters.api_calls["xet-read-token"] == 0
    assert hub.counters.bridge_requests["org/xet", "model-00001-of-00002.safetensors"] >= 1


def test_no_cas_behind_the_hub_falls_back_to_the_bridge(tmp_path):
    """A hub (or mirror) whose token names no CAS: the Xet path gives up, the bridge serves."""
    files = repo_files(seed=11)
    with HubReplica([make_repo("org/xet", files)]) as hub:  # made-up Xet hashes, casUrl = the bridge
        path = _download(hub, tmp_path)
        for name, data in files.items():
            assert (path / name).read_bytes() == data
        assert _bridge_requests(hub) >= 3


def test_sigkill_then_rerun_resumes_from_the_finished_terms(replicas, tmp_path):
    hub, cas = replicas
    data = os.urandom(24 * MiB)
    publish(hub, cas, make_repo("org/big", {"weights.safetensors": data, "config.json": b"{}"}))
    blob = _blob(tmp_path, "org/big", data)
    env = {**os.environ, **ENV, "HUBGET_XET_BATCH_BYTES": str(2 * MiB)}
    cmd = [sys.executable, "-m", "hubget", "download", "org/big", "--endpoint", hub.hub_url]
    cmd += ["--cache-dir", str(tmp_path), "-q"]
    cas.rate_per_conn = 2 * MiB
    cas.counters.reset()
    proc = subprocess.Popen(
        [*cmd, "--connections", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while cas.counters.transfer_bytes < len(data) // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # a resume-state save after the half-way mark
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not blob.exists()
    states = list(blob.parent.glob("*.hubget-partial.json"))
    assert states, "the killed run left resume state"
    recorded = sum(end - start for start, end in json.loads(states[0].read_text())["done"])
    assert recorded >= len(data) // 4
    cas.rate_per_conn = None
    cas.counters.reset()
    result = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert blob.read_bytes() == data
    # Stored uncompressed, a xorb byte is a file byte: the rerun moved only what was not recorded.
    assert cas.counters.transfer_bytes <= len(data) - recorded + 2 * MiB, (
        cas.counters.transfer_bytes,
        recorded,
    )
    assert _bridge_requests(hub) == 0
    assert not list(blob.parent.glob("*.hubget-partial*"))


def test_second_revision_fetches_only_the_chunks_that_changed(replicas, tmp_path):
    hub, cas = replicas
    tensors = [weights_like(4 * MiB, seed=s) for s in range(5)]
    v1 = {"model.safetensors": b"".join(tensors), "config.json": b"{}"}
    tensors[2] = weights_like(4 * MiB, seed=99)  # the new revision changes one tensor
    v2 = {"model.safetensors": b"".join(tensors), "config.json": b'{"v": 2}'}
    publish(hub, cas, make_repo("org/xet", v1))
    old = _download(hub, tmp_path)
    old_xorbs = set(cas.xorbs)
    repo = publish(hub, cas, make_repo("org/xet", v2))  # hf_xet deduplicates against v1's xorbs
    terms = cas.files[repo.files["model.safetensors"].xet_hash].terms
    changed = sum(t.end - t.start for t in terms if spec.hash_to_hex(t.xorb) not in old_xorbs)
    assert 0 < changed < sum(t.end - t.start for t in terms) // 2
    cas.counters.reset()
    report = hubget.api.pipeline.fetch_snapshot(
        HfSource(hub.hub_url, False), RepoRef("org/xet"), hf_layout(RepoRef("org/xet"), tmp_path, None)
    )
    assert (report.path / "model.safetensors").read_bytes() == v2["model.safetensors"]
    assert report.path != old and (old / "model.safetensors").read_bytes() == v1["model.safetensors"]
    # Only the changed chunks crossed the network, counted at the CAS...
    assert cas.counters.chunks_fetched() == changed
    assert all(x not in old_xorbs for x, _ in cas.counters.chunks_served)
    # ...and the report says how much came from disk instead.
    assert report.xet.reused_bytes >= len(v2["model.safetensors"]) - changed * 128 * 1024
    assert report.xet.saved_bytes > 2 * report.xet.network_bytes
    assert _bridge_requests(hub) == 0
    import huggingface_hub

    assert huggingface_hub.scan_cache_dir(tmp_path).warnings == []  # the chunk index is invisible to it


def test_chunks_whose_file_changed_on_disk_are_fetched(replicas, tmp_path):
    hub, cas = replicas
    tensors = [weights_like(2 * MiB, seed=s) for s in range(3)]
    publish(hub, cas, make_repo("org/xet", {"model.safetensors": b"".join(tensors)}))
    old = _download(hub, tmp_path) / "model.safetensors"
    blob = old.resolve()
    blob.chmod(0o644)
    with open(blob, "r+b") as f:  # edited behind hubget's back: its recorded chunks no longer count
        f.write(b"\0" * 10)
    tensors[1] = weights_like(2 * MiB, seed=50)
    new = b"".join(tensors)
    publish(hub, cas, make_repo("org/xet", {"model.safetensors": new}))
    cas.counters.reset()
    path = _download(hub, tmp_path)
    assert (path / "model.safetensors").read_bytes() == new
    repo = hub.repos["model", "org/xet"]
    terms = cas.files[repo.files["model.safetensors"].xet_hash].terms
    needed = {(spec.hash_to_hex(t.xorb), i) for t in terms for i in range(t.start, t.end)}
    assert set(cas.counters.chunks_served) == needed  # nothing taken from the edited file
