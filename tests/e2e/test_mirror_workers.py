"""`hubget serve --upstream URL --workers 2`: two processes share the port and the store, and a blob is
still fetched upstream once. A fill takes the blob's lock (``.locks/{repo}/X.fill.lock``); the other
worker's fill of the same blob follows it: its clients stream what the first one writes, as the resume
state on disk tells, and it asks upstream nothing for that blob.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support.hubreplica import BRIDGE, HUB, HubReplica, make_repo
from tests.support.mirrorserver import MirrorServer, finish_client, start_client
from tests.support.repos import hashes, llm_repo_files

MiB = 1024 * 1024
FILES = llm_repo_files(n_shards=3, shard_size=4 * MiB, seed=17)
FILES["model-big.safetensors"] = os.urandom(24 * MiB + 11)
CLIENTS = 6
SNAPSHOT = """
from huggingface_hub import snapshot_download
path = snapshot_download("org/llm")
emit({"files": tree_hashes(path)})
"""


def test_two_workers_fetch_each_blob_once(tmp_path: Path):
    with HubReplica([make_repo("org/llm", FILES)], rate_per_conn=8e6) as hub:
        lfs = sum(f.size for f in hub.repos[("model", "org/llm")].files.values() if f.lfs)
        args = ("--workers", "2", "--max-size", "1G")
        with MirrorServer(tmp_path / "root", hub.hub_url, *args) as mirror:
            procs = [
                start_client(SNAPSHOT, endpoint=mirror.url, hf_home=tmp_path / f"c{i}")
                for i in range(CLIENTS)
            ]
            for proc in procs:
                assert finish_client(proc)["files"] == hashes(FILES)
            c = hub.counters
            followed = len(re.findall(r"being fetched by another worker", mirror.log()))
            print(
                f"2 workers: bridge sent {c.bytes_sent[BRIDGE]} of {lfs} LFS bytes; {followed} fills followed"
            )
            assert followed >= 1  # (the kernel spread the clients' connections over both workers)
            assert c.bytes_sent[BRIDGE] <= 1.1 * lfs
            for path in FILES:
                assert c.resolves(path) == 1, path  # one resolve per blob, across both processes
            assert c.api_calls["revision"] <= 2 and c.api_calls["tree"] <= 2  # (at most once per worker)
            assert len(c.requests(HUB)) <= 3 * len(FILES)
            hub.reset()
            for i in range(2):
                out = finish_client(start_client(SNAPSHOT, endpoint=mirror.url, hf_home=tmp_path / f"w{i}"))
                assert out["files"] == hashes(FILES)
            assert [r for r in hub.counters.requests() if "/resolve/" in r.path] == []
