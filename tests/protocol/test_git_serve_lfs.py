"""The LFS batch API and object endpoint of `hubget serve`, spoken to directly (git-lfs's requests)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import urllib3

from tests.support.gitserver import setup_git_home
from tests.support.hubserver import hub_server
from tests.support.repos import GitRepoBuilder

WEIGHTS = bytes(range(256)) * 4000
OID = hashlib.sha256(WEIGHTS).hexdigest()
MEDIA = "application/vnd.git-lfs+json"
ENV_KEYS = ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("gitserve")
    env = setup_git_home(base / "home")
    with pytest.MonkeyPatch.context() as mp:
        for key in ENV_KEYS:
            mp.setenv(key, env[key])
        GitRepoBuilder(base / "root" / "models" / "org" / "m").commit({"w.bin": WEIGHTS, "a.txt": b"a"})
        with hub_server(base / "root") as server_url:
            yield server_url


def batch(
    url: str, body: object, path: str = "/org/m.git/info/lfs/objects/batch"
) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "POST", url + path, body=json.dumps(body).encode(), headers={"Accept": MEDIA, "Content-Type": MEDIA}
    )


def test_batch_download_points_at_the_servers_own_bytes(url: str):
    missing = "0" * 64
    resp = batch(
        url,
        {
            "operation": "download",
            "transfers": ["basic"],
            "objects": [
                {"oid": OID, "size": len(WEIGHTS)},
                {"oid": missing, "size": 3},
                {"oid": OID, "size": 5},
            ],
        },
    )
    assert resp.status == 200 and resp.headers["Content-Type"].startswith(MEDIA)
    answer = json.loads(resp.data)
    assert answer["transfer"] == "basic"
    found, gone, wrong_size = answer["objects"]
    href = found["actions"]["download"]["href"]
    assert href == f"{url}/org/m.git/info/lfs/objects/{OID}"
    assert gone["error"]["code"] == 404
    assert wrong_size["error"]["code"] == 422

    whole = urllib3.request("GET", href)
    assert whole.status == 200 and whole.data == WEIGHTS
    part = urllib3.request("GET", href, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.data == WEIGHTS[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(WEIGHTS)}"
    assert urllib3.request("GET", f"{url}/org/m.git/info/lfs/objects/{missing}").status == 404


def test_batch_refuses_uploads_and_bad_requests(url: str):
    up = batch(url, {"operation": "upload", "objects": [{"oid": OID, "size": len(WEIGHTS)}]})
    assert up.status == 403 and "read-only" in json.loads(up.data)["message"]
    assert batch(url, {"operation": "download"}).status == 422
    assert (
        batch(url, {"operation": "download", "objects": []}, "/org/nope.git/info/lfs/objects/batch").status
        == 404
    )
    refs = urllib3.request("GET", f"{url}/org/m.git/info/refs?service=git-receive-pack")
    assert refs.status == 403


def test_smart_http_advertises_the_served_refs(url: str, tmp_path: Path):
    out = subprocess.run(["git", "ls-remote", f"{url}/org/m"], capture_output=True, text=True, check=True)
    assert "refs/heads/main" in out.stdout
    resp = urllib3.request("GET", f"{url}/org/m/info/refs?service=git-upload-pack")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
