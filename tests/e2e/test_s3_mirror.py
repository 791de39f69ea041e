"""`hubget serve --upstream URL --store s3://bucket/root`: the pull-through mirror with a bucket (a real
SeaweedFS on 127.0.0.1) as its store, in front of the hub replica (tests/support/hubreplica.py).

Two mirror processes on one store, cold, with huggingface_hub clients spread over both downloading the
same repo at once: every client gets byte-identical files, the files' bytes come from the object store
(presigned redirects; the mirrors send none), and upstream is asked for each file once and sends each
LFS byte about once between the two mirrors. A third mirror started later on the same store serves
from it without fetching any blob. A fill lock whose owner died is taken over."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocol.test_serve_s3 import s3_hub, written_bytes
from tests.support.hubreplica import BRIDGE, HubReplica, make_repo
from tests.support.mirrorserver import finish_client, start_client
from tests.support.repos import hashes, llm_repo_files
from tests.support.seaweed import SeaweedS3, seaweed_s3

MiB = 1024 * 1024
BUCKET = "models"
STORE = f"s3://{BUCKET}/hub"  # what s3_hub serves
FILES = llm_repo_files(n_shards=2, shard_size=3 * MiB, seed=21)
FILES["model-big.safetensors"] = os.urandom(13 * MiB + 5)

SNAPSHOT = """
from huggingface_hub import snapshot_download
path = snapshot_download("org/llm")
emit({"files": tree_hashes(path), "commit": Path(path).name})
"""


@contextlib.contextmanager
def bucket_mirror(s3: SeaweedS3, upstream: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`hubget serve --store STORE --upstream URL` (no ROOT) and its process."""
    with s3_hub(s3, "--upstream", upstream) as served:
        yield served


@pytest.fixture
def s3(tmp_path: Path):
    with seaweed_s3(tmp_path / "seaweed", buckets=[BUCKET]) as store:
        yield store


@pytest.fixture
def hub():
    with HubReplica([make_repo("org/llm", FILES)], rate_per_conn=16e6) as replica:
        yield replica


def test_two_cold_mirrors_on_one_bucket_fetch_each_blob_once(s3: SeaweedS3, hub: HubReplica, tmp_path: Path):
    repo = hub.repos[("model", "org/llm")]
    lfs = sum(f.size for f in repo.files.values() if f.lfs)
    with bucket_mirror(s3, hub.hub_url) as (url_a, proc_a), bucket_mirror(s3, hub.hub_url) as (url_b, proc_b):
        before = written_bytes(proc_a) + written_bytes(proc_b)
        procs = [
            start_client(SNAPSHOT, endpoint=(url_a, url_b)[i % 2], hf_home=tmp_path / f"c{i}")
            for i in range(6)
        ]
        results = [finish_client(p) for p in procs]
        sent_by_mirrors = written_bytes(proc_a) + written_bytes(proc_b) - before
    for out in results:
        assert out["files"] == hashes(FILES)
        assert out["commit"] == repo.commit
    c = hub.counters
    for path in FILES:
        assert c.resolves(path) == 1, path  # one upstream resolve per blob, for both mirrors
    assert c.bytes_sent[BRIDGE] <= 1.1 * lfs, (c.bytes_sent[BRIDGE], lfs)
    total = sum(map(len, FILES.values()))
    assert sent_by_mirrors < total / 4, sent_by_mirrors  # the bytes came from the object store

    # The bucket holds each blob once, by its hash, plain bytes; no fill lock or upload is left.
    objects = s3.objects(BUCKET, "hub/.hubget-mirror")
    blobs = {k.split("/", 1)[1]: v for k, v in objects.items() if k.startswith("blobs/")}
    assert sorted(blobs.values()) == sorted(FILES.values())
    assert not [k for k in objects if k.startswith("fills/")]
    assert not s3.uploads(BUCKET, "hub/")

    # A mirror started later on the same store fetches no blob: every file is served from the bucket.
    resolves = {path: c.resolves(path) for path in FILES}
    bridge = c.bytes_sent[BRIDGE]
    with bucket_mirror(s3, hub.hub_url) as (url_c, _):
        out = finish_client(start_client(SNAPSHOT, endpoint=url_c, hf_home=tmp_path / "warm"))
    assert out["files"] == hashes(FILES)
    assert {path: c.resolves(path) for path in FILES} == resolves
    assert c.bytes_sent[BRIDGE] == bridge


def test_a_fill_lock_left_by_a_dead_process_is_taken_over(s3: SeaweedS3, hub: HubReplica, tmp_path: Path):
    from hubget.api import mirror_s3
    from hubget.api.mirror_s3 import BucketMirror
    from hubget.objectstore.s3 import S3Bucket, parse_s3_url

    os.environ.update(s3.env)  # (boto3 reads the store's address and keys from the environment)
    try:
        bucket = S3Bucket(BUCKET)
        mirror = BucketMirror(parse_s3_url(STORE), hub.hub_url, bucket=bucket, owner="alive")
        snap = mirror.snapshot("model", "org/llm", "main")
        file = next(f for f in snap.files if f.path == "model-big.safetensors")
        lock_key = mirror._lock_key(file)
        # A lock a crashed replica left: still valid for a moment, then expired.
        dead = json.dumps({"owner": "dead", "expires": time.time() + 1.5}).encode()
        assert bucket.put_if(lock_key, dead, absent=True) is not None
        assert bucket.put_if(lock_key, dead, absent=True) is None  # the store honours If-None-Match: *
        started = time.monotonic()
        url = mirror.blob_url(snap, file)
        assert time.monotonic() - started >= 1.0  # it waited for the lock to expire
        import urllib.request

        with urllib.request.urlopen(url) as resp:
            assert resp.read() == FILES["model-big.safetensors"]
        assert bucket.get_bytes(lock_key) is None
        assert hub.counters.resolves("model-big.safetensors") == 1
        assert mirror_s3.LEASE > 1.5
        mirror.close()
    finally:
        for k in s3.env:
            os.environ.pop(k, None)


def test_a_size_budget_is_refused_for_a_mirror_on_a_bucket():
    cmd = [sys.executable, "-m", "hubget", "serve", "--store", STORE, "--upstream", "http://127.0.0.1:9"]
    proc = subprocess.run([*cmd, "--max-size", "1G"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--max-size" in proc.stderr and "Traceback" not in proc.stderr
