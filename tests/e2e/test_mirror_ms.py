"""`hubget serve ROOT --upstream-modelscope URL`: the ModelScope API through the pull-through mirror, judged
by the official modelscope SDK (each client in its own process, MODELSCOPE_ENDPOINT at the mirror).

The upstream is `hubget serve` of a folder (it speaks the ModelScope API) behind a proxy capping each
connection, so that clients arrive while fills are under way; it writes down every request, so the
test can prove what the mirror asked for: one listing for the branch, each file's bytes once (the
engine's ranges partition the file) however many clients at once, nothing at all for a warm round.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote_plus

from tests.support.countinghub import CountingHub, counting_hub
from tests.support.mirrorserver import MirrorServer, finish_client, start_client
from tests.support.proxy import counting_proxy
from tests.support.repos import hashes, llm_repo_files, write_folder_repo

MiB = 1024 * 1024
FILES = llm_repo_files(n_shards=2, shard_size=3 * MiB, seed=11)
FILES["model-big.safetensors"] = os.urandom(16 * MiB + 3)
FILES["sub/dir/notes.txt"] = b"nested\n"
CLIENTS = 4

SNAPSHOT = """
os.environ.pop("MODELSCOPE_DOMAIN", None)
from modelscope import snapshot_download
path = snapshot_download("org/llm", cache_dir=os.environ["MODELSCOPE_CACHE"])
emit({"files": tree_hashes(path)})
"""


def body_bytes(hub: CountingHub) -> dict[str, int]:
    """Bytes of each file's body the upstream was asked for (from the Range of every file request)."""
    got: dict[str, int] = {}
    with hub.lock:
        requests = list(hub.requests)
    for r in requests:
        if r.method != "GET" or not r.path.endswith("/repo"):
            continue
        query = dict(p.partition("=")[::2] for p in r.query.split("&"))
        if "FilePath" not in query:
            continue
        path = unquote_plus(query["FilePath"])
        size = len(FILES[path])
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", r.range or "")
        n = size if m is None else min(size, int(m.group(2) or size - 1) + 1) - int(m.group(1))
        got[path] = got.get(path, 0) + n
    return got


def listings(hub: CountingHub) -> int:
    with hub.lock:
        return sum(1 for r in hub.requests if r.path.endswith(("/repo/files", "/repo/tree")))


def sdk_round(mirror: MirrorServer, tmp_path: Path, name: str, n: int = CLIENTS) -> list[dict]:
    procs = [
        start_client(
            SNAPSHOT,
            endpoint=mirror.url,
            hf_home=tmp_path / f"{name}{i}-hf",
            env={"MODELSCOPE_ENDPOINT": mirror.url, "MODELSCOPE_CACHE": str(tmp_path / f"{name}{i}")},
        )
        for i in range(n)
    ]
    return [finish_client(p) for p in procs]


def test_modelscope_sdk_clients_at_once_through_a_cold_mirror(tmp_path: Path):
    up = tmp_path / "upstream"
    write_folder_repo(up / "models" / "org" / "llm", FILES)
    with counting_hub(up) as hub, counting_proxy(hub.url, rate_per_conn=4e6) as capped:
        root = tmp_path / "root"
        args = ("--upstream-connections", "2")
        with MirrorServer(root, capped.url, *args, flag="--upstream-modelscope") as mirror:
            results = sdk_round(mirror, tmp_path, "cold")
            for out in results:
                assert out["files"] == hashes(FILES)
            fetched = body_bytes(hub)
            print(f"cold round: upstream asked for {sum(fetched.values())} body bytes of {len(FILES)} files")
            assert fetched == {path: len(data) for path, data in FILES.items()}  # each byte once
            assert listings(hub) == 1  # the branch, listed once: it names the commit too
            assert "fetching org/llm/model-big.safetensors" in mirror.log()
            blobs = root / ".hubget-mirror" / "ms" / "hub" / "models--org--llm" / "blobs"
            assert {p.name for p in blobs.iterdir()} == set(hashes(FILES).values())

            hub.clear()
            results = sdk_round(mirror, tmp_path, "warm", 2)
            assert all(out["files"] == hashes(FILES) for out in results)
            assert hub.requests == []  # a warm round asks upstream nothing

            with urllib.request.urlopen(f"{mirror.url}/metrics") as resp:
                text = resp.read().decode()
            assert 'hubget_mirror_fills_total{api="modelscope",result="done"} ' + str(len(FILES)) in text
            # The Hugging Face API has no upstream here: the repo is not found there.
            try:
                urllib.request.urlopen(f"{mirror.url}/api/models/org/llm/revision/main")
                raise AssertionError("the HF API served a ModelScope-only repo")
            except urllib.error.HTTPError as err:
                assert err.code == 404


def test_branch_moves_show_after_the_ttl_and_a_dead_upstream_keeps_the_last_commit(tmp_path: Path):
    up = tmp_path / "upstream"
    small = {"config.json": b'{"a": 1}\n', "w.bin": os.urandom(MiB)}
    write_folder_repo(up / "models" / "org" / "m", small)
    url = "/api/v1/models/org/m/repo?Revision=master&FilePath=config.json"
    with counting_hub(up) as hub, counting_proxy(hub.url) as proxy:
        with MirrorServer(
            tmp_path / "root", proxy.url, "--revision-ttl", "2", flag="--upstream-modelscope"
        ) as mirror:

            def get() -> bytes:
                with urllib.request.urlopen(mirror.url + url) as resp:
                    return resp.read()

            assert get() == small["config.json"]
            write_folder_repo(up / "models" / "org" / "m", {**small, "config.json": b'{"a": 2}\n'})
            assert get() == small["config.json"]  # within the TTL: the commit listed before
            time.sleep(2.2)
            assert get() == b'{"a": 2}\n'
            assert listings(hub) == 2
            proxy.close()  # upstream gone: the branch keeps its last known commit
            time.sleep(2.2)
            assert get() == b'{"a": 2}\n'
            assert "last known commit" in mirror.log()
