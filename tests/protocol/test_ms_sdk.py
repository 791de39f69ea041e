"""The official modelscope SDK downloads from `hubget serve` (a real subprocess) byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.support.hubserver import hub_server
from tests.support.repos import GitRepoBuilder, llm_repo_files, sha256_hex, write_folder_repo

Served = tuple[str, Path, dict[str, bytes]]
BIG = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MiB, ranged by the SDK when its threshold is 1 MiB


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("msserve")
    files = llm_repo_files()
    files["big/blob.bin"] = BIG
    files["with space/ü+%.txt"] = b"odd name"
    write_folder_repo(root / "models" / "org" / "plain", files)
    write_folder_repo(root / "datasets" / "org" / "ds", {f"d/{i}.jsonl": b"{}\n" * i for i in range(1, 5)})
    git = GitRepoBuilder(root / "models" / "org" / "git")
    git.commit({"model.safetensors": b"old" * 5000, "config.json": b"{}"}, "one")
    git.tag("v1.0")
    git.commit({"model.safetensors": b"new" * 5000}, "two")
    with hub_server(root) as url:
        yield url, root, files


@pytest.fixture
def sdk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Served) -> Path:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", served[0])
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    return tmp_path / "cache"


def read_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_snapshot_download(sdk_env: Path, served: Served) -> None:
    from modelscope import snapshot_download

    path = Path(snapshot_download("org/plain", cache_dir=str(sdk_env)))
    assert path == sdk_env / "models" / "org--plain" / "snapshots" / "master"
    assert read_tree(path) == served[2]


def test_model_file_download_and_patterns(sdk_env: Path, served: Served) -> None:
    from modelscope import model_file_download, snapshot_download

    path = Path(model_file_download("org/plain", "with space/ü+%.txt", cache_dir=str(sdk_env)))
    assert path.read_bytes() == b"odd name"
    folder = Path(snapshot_download("org/plain", allow_patterns=["*.json"], local_dir=str(sdk_env / "out")))
    want = {k: v for k, v in served[2].items() if k.endswith(".json") and "/" not in k}
    got = read_tree(folder)
    assert {k: v for k, v in got.items() if "/" not in k} == want


def test_revisions_tag_and_git_main_as_master(sdk_env: Path) -> None:
    from modelscope import snapshot_download

    head = Path(snapshot_download("org/git", cache_dir=str(sdk_env)))
    assert (head / "model.safetensors").read_bytes() == b"new" * 5000
    old = Path(snapshot_download("org/git", revision="v1.0", cache_dir=str(sdk_env)))
    assert old.name == "v1.0" and (old / "model.safetensors").read_bytes() == b"old" * 5000


def test_dataset_snapshot_download(sdk_env: Path) -> None:
    from modelscope.hub.snapshot_download import dataset_snapshot_download

    path = Path(dataset_snapshot_download("org/ds", cache_dir=str(sdk_env)))
    assert path == sdk_env / "datasets" / "org--ds" / "snapshots" / "master"
    assert read_tree(path) == {f"d/{i}.jsonl": b"{}\n" * i for i in range(1, 5)}


def test_missing_repo_is_an_sdk_not_found(sdk_env: Path) -> None:
    import requests
    from modelscope import snapshot_download

    with pytest.raises(requests.exceptions.HTTPError) as info:
        snapshot_download("org/absent", cache_dir=str(sdk_env))
    assert info.value.response is not None and info.value.response.status_code == 404


def test_sdk_parallel_ranges(tmp_path: Path, served: Served) -> None:
    """With its parallel switches on, the SDK fetches the big file in byte ranges from the server."""
    script = (
        "import json, sys\nfrom modelscope import model_file_download\n"
        "print(json.dumps(model_file_download('org/plain', 'big/blob.bin')))\n"
    )
    env = {
        **os.environ,
        "MODELSCOPE_ENDPOINT": served[0],
        "MODELSCOPE_CACHE": str(tmp_path / "c"),
        "MODELSCOPE_DOWNLOAD_PARALLEL_THRESHOLD_MB": "1",
        "MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS": "4",
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path = Path(json.loads(out.stdout.strip().splitlines()[-1]))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256_hex(BIG)


def test_file_route_ranges_and_linked_etag(served: Served) -> None:
    url = f"{served[0]}/api/v1/models/org/plain/repo?Revision=master&FilePath=big%2Fblob.bin"
    http = urllib3.PoolManager()
    whole = http.request("GET", url)
    assert whole.status == 200 and whole.data == BIG
    assert whole.headers["X-Linked-ETag"] == f'"{sha256_hex(BIG)}"'
    part = http.request("GET", url, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.data == BIG[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(BIG)}"
    past = http.request("GET", url, headers={"Range": f"bytes={len(BIG)}-"})
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{len(BIG)}"
    head = http.request("HEAD", url)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(BIG)


def test_json_envelopes(served: Served) -> None:
    base = f"{served[0]}/api/v1"
    http = urllib3.PoolManager()
    revs = json.loads(http.request("GET", f"{base}/models/org/git/revisions").data)
    assert revs["Code"] == 200 and revs["Success"] is True
    names = [b["Revision"] for b in revs["Data"]["RevisionMap"]["Branches"]]
    assert "master" in names
    assert [t["Revision"] for t in revs["Data"]["RevisionMap"]["Tags"]] == ["v1.0"]
    plain = json.loads(http.request("GET", f"{base}/models/org/plain/revisions").data)
    assert "master" in [b["Revision"] for b in plain["Data"]["RevisionMap"]["Branches"]]
    info = json.loads(http.request("GET", f"{base}/models/org/plain").data)
    assert (info["Data"]["Path"], info["Data"]["Name"]) == ("org", "plain")
    top = json.loads(
        http.request("GET", f"{base}/models/org/plain/repo/files?Revision=master&Recursive=False").data
    )
    kinds = {e["Path"]: e["Type"] for e in top["Data"]["Files"]}
    assert kinds["big"] == "tree" and kinds["config.json"] == "blob" and "big/blob.bin" not in kinds
    missing = http.request("GET", f"{base}/models/org/nothing/repo/files?Revision=master")
    assert missing.status == 404 and json.loads(missing.data)["Code"] == 404
    probe = http.request("GET", f"{base}/repos/internalAccelerationInfo")
    assert probe.status == 404
