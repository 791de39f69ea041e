"""HTTP rules of `hubget serve` checked on the wire: RFC 9110 ranges and conditionals, the hub's
headers and errors, path escapes, limits, token protection and clients that go away mid-body."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.protocol.conftest import HubRepos
from tests.support.hubserver import hub_server_thread
from tests.support.repos import git_blob_sha1, write_folder_repo

LFS_FILE = "model-00001-of-00002.safetensors"  # LFS in the git repo (pattern *.safetensors)
SMALL_FILE = "config.json"  # a plain git blob, streamed from git


def request(
    url: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def raw_request(url: str, raw: bytes) -> bytes:
    """Send bytes exactly as given (no client-side path normalisation) and read the whole answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def git_main(hub_repos: HubRepos) -> dict[str, bytes]:
    return hub_repos.git_files[hub_repos.git_commits["main"]]


def resolve_path(name: str, revision: str = "main") -> str:
    return f"/org/git/resolve/{revision}/{name}"


# -- Range -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [LFS_FILE, SMALL_FILE])
@pytest.mark.parametrize(
    "spec,expect",
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, None)),
        ("bytes=-7", ("suffix", 7)),
        ("bytes=5-999999999", (5, None)),  # end past the end is clamped
        ("BYTES = 3-4", None),  # odd spacing/case of the unit: ignored or honoured, never wrong
    ],
)
def test_single_ranges(hub_url: str, git_main: dict[str, bytes], name: str, spec: str, expect: tuple | None):
    data = git_main[name]
    size = len(data)
    status, headers, body = request(hub_url, "GET", resolve_path(name), {"Range": spec})
    if expect is None:
        assert status in (200, 206)
        if status == 200:
            assert body == data
        else:
            start, end = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/\d+", headers["content-range"]).groups())
            assert body == data[start : end + 1]
        return
    if expect[0] == "suffix":
        start, end = size - expect[1], size - 1
    else:
        start, end = expect[0], size - 1 if expect[1] is None else expect[1]
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert int(headers["content-length"]) == end - start + 1
    assert body == data[start : end + 1]


@pytest.mark.parametrize("spec", ["bytes=999999999-", "bytes=-0"])
def test_unsatisfiable_range_is_416(hub_url: str, git_main: dict[str, bytes], spec: str):
    status, headers, body = request(hub_url, "GET", resolve_path(LFS_FILE), {"Range": spec})
    assert status == 416
    assert headers["content-range"] == f"bytes */{len(git_main[LFS_FILE])}"
    assert body == b""


@pytest.mark.parametrize(
    "spec", ["bytes=9-3", "bytes=abc", "bytes=", "items=0-5", "bytes=1-2-3", "0-5", "bytes=--5"]
)
def test_malformed_range_is_ignored(hub_url: str, git_main: dict[str, bytes], spec: str):
    status, headers, body = request(hub_url, "GET", resolve_path(LFS_FILE), {"Range": spec})
    assert status == 200
    assert "content-range" not in headers
    assert body == git_main[LFS_FILE]


@pytest.mark.parametrize("name", [LFS_FILE, SMALL_FILE])
def test_multiple_ranges_multipart(hub_url: str, git_main: dict[str, bytes], name: str):
    data = git_main[name]
    status, headers, body = request(hub_url, "GET", resolve_path(name), {"Range": "bytes=0-3, 20-29, -5"})
    assert status == 206
    ctype = headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    assert int(headers["content-length"]) == len(body)
    boundary = ctype.split("boundary=", 1)[1].encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        m = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head)
        assert m, head
        start, end, total = map(int, m.groups())
        payload = payload[: end - start + 1]
        assert total == len(data)
        assert payload == data[start : end + 1]
        parts.append((start, end))
    size = len(data)
    assert parts == [(0, 3), (20, 29), (size - 5, size - 1)]


def test_overlapping_ranges_coalesced(hub_url: str, git_main: dict[str, bytes]):
    data = git_main[LFS_FILE]
    status, headers, body = request(
        hub_url, "GET", resolve_path(LFS_FILE), {"Range": "bytes=0-10,5-20,21-30"}
    )
    assert status == 206
    assert headers["content-range"] == f"bytes 0-30/{len(data)}"
    assert body == data[:31]


# -- conditionals ------------------------------------------------------------------------------------
def test_if_range_strong_etag_rules(hub_url: str, git_main: dict[str, bytes]):
    data = git_main[LFS_FILE]
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    cases = {
        etag: 206,  # same strong validator: the range applies
        '"0000"': 200,  # changed representation: the whole file
        f"W/{etag}": 200,  # weak validators never satisfy If-Range
        "Wed, 21 Oct 2015 07:28:00 GMT": 200,  # no Last-Modified is sent, so a date never matches
    }
    for if_range, expected in cases.items():
        status, _, body = request(
            hub_url, "GET", resolve_path(LFS_FILE), {"Range": "bytes=100-199", "If-Range": if_range}
        )
        assert status == expected, if_range
        assert body == (data[100:200] if expected == 206 else data)


def test_if_none_match(hub_url: str, git_main: dict[str, bytes]):
    etag = f'"{git_blob_sha1(git_main[SMALL_FILE])}"'
    status, headers, body = request(hub_url, "GET", resolve_path(SMALL_FILE), {"If-None-Match": etag})
    assert (status, body, headers["etag"]) == (304, b"", etag)
    status, _, body = request(hub_url, "GET", resolve_path(SMALL_FILE), {"If-None-Match": '"other"'})
    assert status == 200 and body == git_main[SMALL_FILE]


# -- the hub's headers -------------------------------------------------------------------------------
def test_resolve_headers_lfs_and_plain(hub_url: str, hub_repos: HubRepos, git_main: dict[str, bytes]):
    commit = hub_repos.git_commits["main"]
    lfs = git_main[LFS_FILE]
    status, h, _ = request(hub_url, "HEAD", resolve_path(LFS_FILE), {"Accept-Encoding": "gzip, br"})
    assert status == 200
    assert h["x-repo-commit"] == commit
    assert h["etag"] == h["x-linked-etag"] == f'"{hashlib.sha256(lfs).hexdigest()}"'
    assert h["x-linked-size"] == h["content-length"] == str(len(lfs))
    assert h["accept-ranges"] == "bytes"
    assert "content-encoding" not in h
    assert not [k for k in h if k.startswith("x-xet")]

    small = git_main[SMALL_FILE]
    status, h, body = request(hub_url, "GET", resolve_path(SMALL_FILE), {"Accept-Encoding": "gzip"})
    assert status == 200 and body == small
    assert h["etag"] == f'"{git_blob_sha1(small)}"'
    assert "x-linked-etag" not in h and "content-encoding" not in h


@pytest.mark.parametrize("name", [LFS_FILE, SMALL_FILE])
def test_head_equals_get(hub_url: str, name: str):
    for extra in ({}, {"Range": "bytes=0-3"}):
        _, get_h, _ = request(hub_url, "GET", resolve_path(name))
        status, head_h, body = request(hub_url, "HEAD", resolve_path(name), extra)
        assert status == 200 and body == b""  # HEAD ignores Range (RFC 9110 §14.2)
        get_h.pop("date"), head_h.pop("date")
        assert head_h == get_h


def test_error_codes(hub_url: str):
    cases = {
        "/org/missing/resolve/main/config.json": "RepoNotFound",
        "/org/git/resolve/nope/config.json": "RevisionNotFound",
        "/org/git/resolve/main/nope.json": "EntryNotFound",
        "/api/models/org/missing": "RepoNotFound",
        "/api/models/org/git/revision/nope": "RevisionNotFound",
        "/datasets/org/plain/resolve/main/config.json": "RepoNotFound",  # a model is not a dataset
    }
    for path, code in cases.items():
        status, headers, body = request(hub_url, "GET", path)
        assert status == 404, path
        assert headers["x-error-code"] == code, path
        assert headers["x-error-message"]
        assert "error" in json.loads(body)


def test_quoted_pr_revision_and_dataset_prefix(hub_url: str, hub_repos: HubRepos):
    dev = hub_repos.git_files[hub_repos.git_commits["dev"]]
    status, h, body = request(hub_url, "GET", "/org/git/resolve/refs%2Fpr%2F1/dev-only.txt")
    assert status == 200 and body == dev["dev-only.txt"]
    assert h["x-repo-commit"] == hub_repos.git_commits["dev"]
    status, _, body = request(hub_url, "GET", "/datasets/org/ds/resolve/main/data/test.jsonl")
    assert status == 200 and body == hub_repos.dataset["data/test.jsonl"]


def test_tree_and_info_json(hub_url: str, hub_repos: HubRepos, git_main: dict[str, bytes]):
    commit = hub_repos.git_commits["main"]
    status, _, body = request(hub_url, "GET", f"/api/models/org/git/tree/{commit}?recursive=true&expand=true")
    assert status == 200
    items = {item["path"]: item for item in json.loads(body)}
    lfs = items[LFS_FILE]
    data = git_main[LFS_FILE]
    assert lfs["type"] == "file" and lfs["size"] == len(data)
    assert lfs["lfs"]["oid"] == hashlib.sha256(data).hexdigest() and lfs["lfs"]["size"] == len(data)
    pointer = (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{lfs['lfs']['oid']}\nsize {len(data)}\n"
    )
    assert lfs["oid"] == git_blob_sha1(pointer.encode())  # the hub reports the pointer's git blob id
    assert items[SMALL_FILE]["oid"] == git_blob_sha1(git_main[SMALL_FILE]) and "lfs" not in items[SMALL_FILE]
    assert items["extra"]["type"] == "directory"
    assert items[SMALL_FILE]["lastCommit"]["id"] == commit  # changed by the second commit
    assert items[LFS_FILE]["lastCommit"]["id"] == hub_repos.git_commits["v1.0"]
    assert {p for p, i in items.items() if i["type"] == "file"} == set(git_main)

    status, _, body = request(hub_url, "GET", "/api/models/org/git/tree/main/extra")
    assert [i["path"] for i in json.loads(body)] == ["extra/notes.txt"]
    status, _, body = request(hub_url, "GET", "/api/datasets/org/ds")
    info = json.loads(body)
    assert info["id"] == "org/ds" and len(info["sha"]) == 40
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(hub_repos.dataset)
    status, _, body = request(hub_url, "GET", "/api/models/org/git/refs")
    refs = json.loads(body)
    assert {b["name"]: b["targetCommit"] for b in refs["branches"]} == {
        "main": commit,
        "dev": hub_repos.git_commits["dev"],
    }
    assert [t["name"] for t in refs["tags"]] == ["v1.0"]


# -- paths that try to leave ROOT ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def escape_hub(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("escape")
    secret = base / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-" + os.urandom(8).hex().encode())
    root = base / "root"
    repo = write_folder_repo(root / "models/org/links", {"config.json": b"{}", "sub/inner.txt": b"inner"})
    (repo / "leak.txt").symlink_to(secret)  # a symlink out of ROOT
    (repo / "leakdir").symlink_to(base)  # a folder symlink out of ROOT
    (repo / "alias.txt").symlink_to(repo / "sub/inner.txt")  # inside: fine
    with hub_server_thread(root) as url:
        yield url, secret.read_bytes()


def test_symlinks_out_of_root_are_invisible(escape_hub):
    url, secret = escape_hub
    status, _, body = request(url, "GET", "/api/models/org/links/tree/main?recursive=true")
    listed = sorted(i["path"] for i in json.loads(body) if i["type"] == "file")
    assert listed == ["alias.txt", "config.json", "sub/inner.txt"]
    for path in ["leak.txt", "leakdir/secret.txt", "leakdir/root/models/org/links/config.json"]:
        status, _, body = request(url, "GET", f"/org/links/resolve/main/{path}")
        assert status == 404 and secret not in body
    status, _, body = request(url, "GET", "/org/links/resolve/main/alias.txt")
    assert status == 200 and body == b"inner"


@pytest.mark.parametrize(
    "target",
    [
        "/org/links/resolve/main/../../../../secret.txt",
        "/org/links/resolve/main/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/org/links/resolve/main/..%2f..%2f..%2f..%2f..%2fsecret.txt",
        "/org/links/resolve/main/sub%2f..%2f..%2f..%2f..%2f..%2f..%2fsecret.txt",
        "/org/links/resolve/main/%2fetc%2fpasswd",
        "/org/links/resolve/main//etc/passwd",
        "/org/links/resolve/main/..%5c..%5csecret.txt",
        "/org/links/resolve/main/sub%00.txt",
        "/org/..%2f..%2fsecret/resolve/main/secret.txt",
        "/api/models/org/links/tree/main/..%2f..%2f..",
        "/api/models/..%2f..%2f/tree/main",
        "/..%2f..%2f..%2fsecret.txt",
    ],
)
def test_path_escapes_get_4xx_and_leak_nothing(escape_hub, target: str):
    url, secret = escape_hub
    answer = raw_request(url, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:300]
    assert secret not in answer and b"root:" not in answer


def test_raw_requests_do_reach_files(escape_hub):
    """Control for the escape tests: the same raw request form serves a real file, encoded slash included."""
    url, _ = escape_hub
    answer = raw_request(
        url, b"GET /org/links/resolve/main/sub%2finner.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\ninner")


def test_oversized_headers_rejected(hub_url: str):
    answer = raw_request(
        hub_url, b"GET /api/models/org/git HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    )
    assert int(answer.split(b" ", 2)[1]) in (400, 431)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
    answer = raw_request(hub_url, b"GET /api/models/org/git HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert int(answer.split(b" ", 2)[1]) in (400, 431)


# -- tokens ---------------------------------------------------------------------------------------------
def test_token_protection_on_the_wire(hub_repos: HubRepos):
    with hub_server_thread(hub_repos.root, tokens=["tok-1", "tok-2"]) as url:
        path = "/org/plain/resolve/main/config.json"
        status, h, _ = request(url, "GET", path)
        assert status == 401 and "bearer" in h["www-authenticate"].lower()
        assert request(url, "GET", path, {"Authorization": "Bearer nope"})[0] == 401
        assert request(url, "GET", "/api/models/org/plain", {"Authorization": "Bearer tok-1"})[0] == 200
        status, _, body = request(url, "GET", path, {"Authorization": "Bearer tok-2"})
        assert status == 200 and body == hub_repos.plain["config.json"]
        basic = base64.b64encode(b"user:tok-1").decode()  # how git sends a token
        assert request(url, "GET", path, {"Authorization": f"Basic {basic}"})[0] == 200


# -- a client going away ----------------------------------------------------------------------------------
def test_client_disconnect_mid_body_hurts_nobody(tmp_path: Path):
    big = os.urandom(24 * 1024 * 1024)
    write_folder_repo(tmp_path / "models/org/big", {"big.bin": big, "small.txt": b"small"})
    with hub_server_thread(tmp_path) as url:
        parts = urlsplit(url)
        for _ in range(5):
            sock = socket.create_connection((parts.hostname, parts.port))
            sock.sendall(b"GET /org/big/resolve/main/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(65536)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # reset mid-body
        status, _, body = request(url, "GET", "/org/big/resolve/main/big.bin")
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(big).digest()
        status, _, body = request(
            url, "GET", "/org/big/resolve/main/big.bin", {"Range": "bytes=1000000-1999999"}
        )
        assert status == 206 and body == big[1000000:2000000]
