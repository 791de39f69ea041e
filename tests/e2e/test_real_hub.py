"""hubget against a faithful replica of huggingface.co (tests/support/hubreplica.py): the hub and its
Xet bridge on two origins, signed expiring URLs, rate-limit buckets, a gated repo.

These tests say what hubget must do against the real hub: land byte-identical files in the HF cache,
resolve each file once (not once per byte range) and again only when its signed URL expired, pace
itself under a resolver quota from the RateLimit headers, keep the token off the CDN, report gated
repos and Xet-backed files clearly. hubget runs as a user runs it: the CLI in a subprocess, with
HF_ENDPOINT and a private HF_HOME.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.protocol.clientrun import run_client
from tests.support.hubreplica import BRIDGE, HUB, HubReplica, RateLimits, make_repo
from tests.support.repos import llm_repo_files

MiB = 1024 * 1024
FILES = llm_repo_files(n_shards=3, shard_size=256 * 1024, seed=11)
SMALL = {k: FILES[k] for k in sorted(FILES)[:6]}  # 6 files, 2 of them LFS (Xet)
BIG_NAME = "model.safetensors"
BIG = {"config.json": b'{"model_type": "llama"}\n', BIG_NAME: os.urandom(48 * MiB + 123)}
USER_TOKEN = "hf_replica_user_token"
GRANTED_TOKEN = "hf_replica_granted_token"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {path: sha(data) for path, data in sorted(files.items())}


@pytest.fixture
def hub():
    repos = [
        make_repo("org/llm", FILES),
        make_repo("org/small", SMALL),
        make_repo("org/big", BIG),
        make_repo("org/gated", SMALL, gated=True, granted=[GRANTED_TOKEN]),
    ]
    with HubReplica(repos, users={USER_TOKEN: "alice"}) as replica:
        yield replica


def hubget_cli(
    hub: HubReplica, hf_home: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "HUBGET_"))}
    env.update(HF_ENDPOINT=hub.hub_url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1")
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "hubget", "download", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def snapshot_dir(hub: HubReplica, hf_home: Path, repo_id: str) -> Path:
    commit = hub.repos[("model", repo_id)].commit
    return hf_home / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit


def assert_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert sha((folder / name).read_bytes()) == sha(data), name


def test_files_land_in_the_hf_cache_and_huggingface_hub_finds_them_offline(hub: HubReplica, tmp_path: Path):
    hub.rtt = 0.03  # as far from the hub as a user in another region
    home = tmp_path / "home"
    result = hubget_cli(hub, home, "org/llm")
    assert result.returncode == 0, result.stderr
    folder = snapshot_dir(hub, home, "org/llm")
    assert Path(result.stdout.strip().splitlines()[-1]) == folder
    assert_files(folder, FILES)
    repo = hub.repos[("model", "org/llm")]
    for name, f in repo.files.items():
        assert (folder / name).resolve().name == f.etag  # blobs/<sha256> for LFS, <git sha1> else
    out = run_client(
        """
        from huggingface_hub import hf_hub_download, snapshot_download
        path = snapshot_download("org/llm", local_files_only=True)
        one = hf_hub_download("org/llm", "model-00002-of-00003.safetensors", local_files_only=True)
        one_sha = hashlib.sha256(Path(one).read_bytes()).hexdigest()
        emit({"path": path, "files": tree_hashes(path), "one": one_sha})
        """,
        endpoint=hub.hub_url,
        hf_home=home,
        env={"HF_HUB_DISABLE_XET": "1"},
    )
    assert Path(out["path"]) == folder
    assert out["files"] == hashes(FILES)
    assert out["one"] == sha(FILES["model-00002-of-00003.safetensors"])


def test_one_resolver_call_per_file_even_for_a_file_fetched_in_many_ranges(hub: HubReplica, tmp_path: Path):
    """48 MiB is fetched in 8 MiB ranges; each range must reuse the file's signed bridge URL."""
    result = hubget_cli(hub, tmp_path / "home", "org/big")
    assert result.returncode == 0, result.stderr
    assert_files(snapshot_dir(hub, tmp_path / "home", "org/big"), BIG)
    c = hub.counters
    assert c.ranges(BIG_NAME) >= 4  # it really was fetched in ranges
    refreshes = c.expirations()  # none at the default expiry of an hour
    assert c.resolves() <= len(BIG) + refreshes, (
        f"{c.resolves()} resolver calls for {len(BIG)} files: {dict(c.resolver_calls)}"
    )
    assert c.resolves(BIG_NAME) == 1


def test_tight_resolver_quota_hubget_finishes_with_fewer_429s_than_huggingface_hub(
    hub: HubReplica, tmp_path: Path, record_property
):
    """Quota 3 per 2 s, no Retry-After, only the RateLimit headers (as huggingface.co answers)."""
    hub.limits = RateLimits.tight("resolvers", quota=3, window=2)
    out = run_client(
        """
        from huggingface_hub import snapshot_download
        emit({"files": tree_hashes(snapshot_download("org/small"))})
        """,
        endpoint=hub.hub_url,
        hf_home=tmp_path / "hf",
        env={"HF_HUB_DISABLE_XET": "1"},
    )
    assert out["files"] == hashes(SMALL)
    peer = hub.counters.too_many("resolvers")
    assert peer > 0
    hub.reset()  # counters and rate-limit windows
    result = hubget_cli(hub, tmp_path / "home", "org/small")
    ours = hub.counters.too_many("resolvers")
    record_property("huggingface_hub_429s", peer)
    record_property("hubget_429s", ours)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_files(snapshot_dir(hub, tmp_path / "home", "org/small"), SMALL)
    assert ours < peer, f"hubget got {ours} 429s, huggingface_hub {peer}"


def test_a_429_is_reported_with_its_bucket(hub: HubReplica, tmp_path: Path):
    """Another client used up this window's resolver quota: hubget says so, waits, and finishes."""
    hub.limits = RateLimits.tight("resolvers", quota=3, window=2)
    host, port = hub.hub_url.rsplit("/", 1)[1].split(":")
    for name in list(SMALL)[:3]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("HEAD", f"/org/small/resolve/main/{name}")
        assert conn.getresponse().status in (200, 302)
        conn.close()
    assert hub.counters.resolves() == 3
    result = hubget_cli(hub, tmp_path / "home", "org/small")
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.counters.too_many("resolvers") >= 1
    assert "rate limited" in result.stderr.lower()
    assert "resolvers" in result.stderr
    assert_files(snapshot_dir(hub, tmp_path / "home", "org/small"), SMALL)


def test_signed_url_expiring_during_a_ranged_transfer(hub: HubReplica, tmp_path: Path):
    """URLs live 2 s; at 3 MB/s per connection one 8 MiB range alone takes 2.8 s, and two connections
    need about 6 s for 48 MiB. The file completes, and it is resolved again only when its URL has
    expired: at most once per URL lifetime the transfer spans (a client that asks again only after a
    403 needs 1 + floor(span / expiry); ceil leaves one spare)."""
    hub.url_expiry = 2
    hub.rate_per_conn = 3_000_000
    result = hubget_cli(hub, tmp_path / "home", "org/big", "--connections", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_files(snapshot_dir(hub, tmp_path / "home", "org/big"), BIG)
    c = hub.counters
    span = c.bridge_span(BIG_NAME)
    assert span > hub.url_expiry  # the cap made the transfer outlive its URLs
    lifetimes = math.ceil(span / hub.url_expiry)
    assert c.resolves(BIG_NAME) <= 1 + lifetimes, (
        f"{c.resolves(BIG_NAME)} resolver calls over {span:.1f} s of transfer with {hub.url_expiry} s URLs "
        f"({c.expirations(BIG_NAME)} expired URLs presented)"
    )


def test_the_token_goes_to_the_hub_and_never_to_the_bridge(hub: HubReplica, tmp_path: Path):
    result = hubget_cli(hub, tmp_path / "home", "org/big", token=USER_TOKEN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_files(snapshot_dir(hub, tmp_path / "home", "org/big"), BIG)
    c = hub.counters
    assert c.bridge_hits(BIG_NAME) >= 1
    assert c.authorizations(BRIDGE) == []
    hub_auth = c.authorizations(HUB)
    assert hub_auth and set(hub_auth) == {f"Bearer {USER_TOKEN}"}


def test_gated_repo_needs_a_token(hub: HubReplica, tmp_path: Path):
    anonymous = hubget_cli(hub, tmp_path / "a", "org/gated")
    assert anonymous.returncode == 4, anonymous.stderr[-3000:]
    assert "org/gated" in anonymous.stderr and "gated" in anonymous.stderr.lower()
    assert "Traceback" not in anonymous.stderr
    refused = hubget_cli(hub, tmp_path / "c", "org/gated", token=USER_TOKEN)  # a token without access
    assert refused.returncode == 4, refused.stderr[-3000:]
    assert "org/gated" in refused.stderr and "gated" in refused.stderr.lower()
    granted = hubget_cli(hub, tmp_path / "b", "org/gated", token=GRANTED_TOKEN)
    assert granted.returncode == 0, granted.stderr[-3000:]
    assert_files(snapshot_dir(hub, tmp_path / "b", "org/gated"), SMALL)


def test_dry_run_lists_xet_hashes(hub: HubReplica, tmp_path: Path):
    repo = hub.repos[("model", "org/llm")]
    xet_files = sorted(p for p, f in repo.files.items() if f.xet_hash)
    assert 0 < len(xet_files) < len(repo.files)
    result = hubget_cli(hub, tmp_path / "home", "org/llm", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    listed = {f["path"]: f for f in report["files"]}
    assert sorted(listed) == sorted(repo.files)
    for path, f in repo.files.items():
        assert "xet_hash" in listed[path], path
        assert listed[path]["xet_hash"] == f.xet_hash, path  # None (null) for regular files
    text = hubget_cli(hub, tmp_path / "home", "org/llm", "--dry-run")
    assert text.returncode == 0, text.stderr[-3000:]
    lines = text.stdout.splitlines()
    file_lines = set()
    for path in repo.files:
        line = next(x for x in lines if re.search(rf"(?:^|\s){re.escape(path)}(?:\s|$)", x))
        file_lines.add(line)
        assert bool(re.search(r"\bxet\b", line, re.IGNORECASE)) == (path in xet_files), line
    # A summary line mentions Xet and how many files are Xet-backed (a whole number, not "1.7 MB").
    summary = [x for x in lines if x not in file_lines and re.search(r"\bxet", x, re.IGNORECASE)]
    count = rf"(?<![\d.]){len(xet_files)}(?![\d.])"
    assert any(re.search(count, x) for x in summary), text.stdout
    assert hub.counters.bridge_hits() == 0  # a dry run downloads nothing


def test_bridge_answering_200_to_a_gzip_range_request_corrupts_nothing(hub: HubReplica, tmp_path: Path):
    hub.gzip_range_quirk = True
    result = hubget_cli(hub, tmp_path / "home", "org/big")
    assert result.returncode == 0, result.stderr[-3000:]
    blob = snapshot_dir(hub, tmp_path / "home", "org/big") / BIG_NAME
    assert sha(blob.read_bytes()) == sha(BIG[BIG_NAME])
    c = hub.counters
    assert c.ranges(BIG_NAME) >= 2 and c.range_ignored[("org/big", BIG_NAME)] == 0
    bridge = c.requests(BRIDGE)
    assert bridge and all(r.headers.get("accept-encoding") == "identity" for r in bridge)
