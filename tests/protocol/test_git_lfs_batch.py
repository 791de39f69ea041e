"""The Git LFS batch API as hubget speaks it, against a scripted LFS server: 413 splitting, per-object
errors, credentials only to the LFS origin, expired download URLs refreshed by a new batch call;
plus pointer parsing and endpoint derivation as git-lfs does them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hubget.errors import AuthError, NotFoundError
from hubget.gitclone.pointers import path_matches, selected
from hubget.sources.gitlfs import (
    LfsAction,
    LfsBatchClient,
    LfsObjectError,
    LfsPointer,
    format_pointer,
    lfs_endpoint,
    parse_pointer,
    strip_userinfo,
)
from hubget.transfer.http import HttpClient
from tests.support.gitserver import git, setup_git_home

OID_A = hashlib.sha256(b"a").hexdigest()


class Script:
    """What the scripted server does; tests set ``batch`` and ``objects``."""

    def __init__(self) -> None:
        self.batch: Callable[[dict[str, Any], dict[str, str]], tuple[int, Any]] = lambda body, h: (500, {})
        self.objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.bad_paths: set[str] = set()  # object URLs that answer 403 (expired signatures)


@contextmanager
def lfs_server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes, ctype: str = "application/vnd.git-lfs+json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.requests.append(("POST", self.path, dict(self.headers)))
            status, answer = script.batch(json.loads(data), dict(self.headers))
            self._reply(status, json.dumps(answer).encode())

        def do_GET(self) -> None:
            script.requests.append(("GET", self.path, dict(self.headers)))
            if self.path in script.bad_paths:
                return self._reply(403, b"expired", "text/plain")
            oid = self.path.split("?")[0].rsplit("/", 1)[-1]
            if oid not in script.objects:
                return self._reply(404, b"no", "text/plain")
            self._reply(200, script.objects[oid], "application/octet-stream")

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", script
    finally:
        server.shutdown()
        server.server_close()


def ok_answer(base: str, body: dict[str, Any], *, header: dict[str, str] | None = None) -> dict[str, Any]:
    objs = []
    for o in body["objects"]:
        action: dict[str, Any] = {"href": f"{base}/obj/{o['oid']}", "expires_in": 3600}
        if header is not None:
            action["header"] = header
        objs.append({"oid": o["oid"], "size": o["size"], "actions": {"download": action}})
    return {"transfer": "basic", "objects": objs}


def pointers(n: int) -> list[LfsPointer]:
    return [LfsPointer(hashlib.sha256(str(i).encode()).hexdigest(), i + 1) for i in range(n)]


# -- the batch client --------------------------------------------------------------------------------
def test_413_splits_the_batch_until_the_server_accepts():
    with lfs_server() as (base, script):
        sizes: list[int] = []

        def batch(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
            sizes.append(len(body["objects"]))
            if len(body["objects"]) > 2:
                return 413, {"message": "too many"}
            return 200, ok_answer(base, body)

        script.batch = batch
        client = LfsBatchClient(f"{base}/org/repo.git/info/lfs", client=HttpClient(retries=0))
        answers = client.download_actions(pointers(7))
        assert sorted(answers) == sorted(p.oid for p in pointers(7))
        assert all(isinstance(a, LfsAction) for a in answers.values())
        assert sizes[0] == 7
        accepted = [s for s in sizes if s <= 2]
        assert sum(accepted) == 7  # every object asked for exactly once in an accepted batch
        # The request is the spec's: download, basic transfer, the media type both ways.
        method, path, headers = script.requests[0]
        assert (method, path) == ("POST", "/org/repo.git/info/lfs/objects/batch")
        assert headers["Accept"] == headers["Content-Type"] == "application/vnd.git-lfs+json"


def test_per_object_errors_and_missing_actions():
    with lfs_server() as (base, script):
        ps = pointers(3)

        def batch(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
            return 200, {
                "objects": [
                    {"oid": ps[0].oid, "size": 1, "error": {"code": 404, "message": "Object does not exist"}},
                    {"oid": ps[1].oid, "size": 2},  # no actions
                    {"oid": ps[2].oid, "size": 3, "actions": {"download": {"href": f"{base}/obj/x"}}},
                    {
                        "oid": OID_A,
                        "size": 9,
                        "actions": {"download": {"href": f"{base}/obj/y"}},
                    },  # not asked
                ]
            }

        script.batch = batch
        answers = LfsBatchClient(f"{base}/r.git/info/lfs", client=HttpClient(retries=0)).download_actions(ps)
        assert isinstance(answers[ps[0].oid], LfsObjectError)
        assert isinstance(answers[ps[0].oid].to_exception("w.bin"), NotFoundError)
        assert "Object does not exist" in str(answers[ps[0].oid].to_exception("w.bin"))
        assert isinstance(answers[ps[1].oid], LfsObjectError)
        assert isinstance(answers[ps[2].oid], LfsAction)
        assert OID_A not in answers


def test_credentials_go_only_to_the_lfs_origin():
    with lfs_server() as (base, script), lfs_server() as (other, _):
        ps = pointers(2)

        def batch(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
            return 200, {
                "objects": [
                    {
                        "oid": ps[0].oid,
                        "size": 1,
                        "actions": {"download": {"href": f"{base}/obj/{ps[0].oid}"}},
                    },
                    {
                        "oid": ps[1].oid,
                        "size": 2,
                        "actions": {"download": {"href": f"{other}/obj/1", "header": {"X-Sig": "abc"}}},
                    },
                ]
            }

        script.batch = batch
        client = LfsBatchClient(
            f"http://u:tok@{base.split('://')[1]}/r.git/info/lfs", client=HttpClient(retries=0)
        )
        answers = client.download_actions(ps)
        assert script.requests[0][2]["Authorization"].startswith("Basic ")
        same, cross = answers[ps[0].oid], answers[ps[1].oid]
        assert isinstance(same, LfsAction) and isinstance(cross, LfsAction)
        assert same.header["Authorization"].startswith("Basic ")
        assert cross.header == {"X-Sig": "abc"}  # the action's own header, never our credentials
        assert same.expires_at is None


def test_batch_http_errors_are_clear():
    with lfs_server() as (base, script):
        script.batch = lambda body, h: (401, {"message": "Credentials needed"})
        client = LfsBatchClient(f"{base}/r.git/info/lfs", client=HttpClient(retries=0))
        with pytest.raises(AuthError, match="Credentials needed"):
            client.download_actions(pointers(1))


# -- end to end: `hubget pull` with a scripted LFS server ---------------------------------------------
def make_pointer_repo(tmp_path: Path, env: dict[str, str], lfs_url: str, contents: dict[str, bytes]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(["init", "-q"], env=env, cwd=repo)
    (repo / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    for name, data in contents.items():
        (repo / name).write_bytes(format_pointer(LfsPointer(hashlib.sha256(data).hexdigest(), len(data))))
    git(["add", "-A"], env=env, cwd=repo)
    git(["commit", "-qm", "pointers"], env=env, cwd=repo)
    git(["remote", "add", "origin", "http://127.0.0.1:9/unused.git"], env=env, cwd=repo)
    git(["config", "lfs.url", lfs_url], env=env, cwd=repo)
    return repo


def test_pull_refreshes_expired_urls_and_reports_missing_objects(tmp_path: Path):
    env = setup_git_home(tmp_path / "home")
    contents = {"good.bin": b"G" * 5000, "expired.bin": b"E" * 7000, "gone.bin": b"X" * 10}
    oids = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    with lfs_server() as (base, script):
        script.objects = {
            oids["good.bin"]: contents["good.bin"],
            oids["expired.bin"]: contents["expired.bin"],
        }
        script.bad_paths = {f"/obj/{oids['expired.bin']}?sig=old"}
        calls: list[list[str]] = []

        def batch(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
            calls.append([o["oid"] for o in body["objects"]])
            sig = "old" if len(calls) == 1 else "new"
            out = []
            for o in body["objects"]:
                if o["oid"] == oids["gone.bin"]:
                    out.append({**o, "error": {"code": 404, "message": "Object does not exist"}})
                else:
                    href = f"{base}/obj/{o['oid']}?sig={sig}"
                    out.append({**o, "actions": {"download": {"href": href, "expires_in": 1}}})
            return 200, {"transfer": "basic", "objects": out}

        script.batch = batch
        repo = make_pointer_repo(tmp_path, env, f"{base}/lfs", contents)
        proc = subprocess.run(
            [sys.executable, "-m", "hubget", "pull", str(repo), "-q"], env=env, capture_output=True, text=True
        )
    assert proc.returncode == 3, proc.stderr  # one object does not exist on the server
    assert "gone.bin" in proc.stderr and "Object does not exist" in proc.stderr
    # The expired URL was replaced by a fresh one from a new batch call for that object alone.
    assert [oids["expired.bin"]] in calls[1:]
    assert (repo / "good.bin").read_bytes() == contents["good.bin"]
    assert (repo / "expired.bin").read_bytes() == contents["expired.bin"]
    assert parse_pointer((repo / "gone.bin").read_bytes()) is not None  # left as a pointer
    status = git(["status", "--porcelain"], env=env, cwd=repo)
    assert status == ""


# -- pointers, endpoints, patterns ----------------------------------------------------------------
def test_pointer_parsing():
    p = LfsPointer(OID_A, 12345)
    assert parse_pointer(format_pointer(p)) == p
    assert parse_pointer(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n") is None
    assert (
        parse_pointer(b"version https://git-lfs.github.com/spec/v1\noid md5:" + b"a" * 64 + b"\nsize 1\n")
        is None
    )
    assert parse_pointer(format_pointer(p).replace(b"size 12345", b"size -1")) is None
    assert parse_pointer(format_pointer(p) + b"x" * 2000) is None
    assert parse_pointer(b"\x00\x01binary") is None


def test_endpoint_derivation_like_git_lfs():
    assert lfs_endpoint("https://hf.example/org/m") == "https://hf.example/org/m.git/info/lfs"
    assert lfs_endpoint("https://hf.example/org/m.git") == "https://hf.example/org/m.git/info/lfs"
    assert lfs_endpoint("https://hf.example/org/m/") == "https://hf.example/org/m.git/info/lfs"
    assert lfs_endpoint("git@github.com:org/m.git") == "https://github.com/org/m.git/info/lfs"
    assert lfs_endpoint("ssh://git@host.example/org/m") == "https://host.example/org/m.git/info/lfs"
    clean, auth = strip_userinfo("https://user:p%40ss@host.example:8443/org/m")
    assert clean == "https://host.example:8443/org/m"
    assert auth["Authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss


def test_include_exclude_patterns():
    assert path_matches("a/b/model.safetensors", "*.safetensors")
    assert path_matches("a/b/model.safetensors", "a/")
    assert path_matches("a/b/model.safetensors", "a/b")
    assert path_matches("a/b/model.safetensors", "a/*/model.*")
    assert not path_matches("ab/model.bin", "a/")
    assert not path_matches("model.bin", "*.safetensors")
    assert selected("x.bin", [], [])
    assert not selected("x.bin", ["*.safetensors"], [])
    assert not selected("sub/x.bin", ["sub/"], ["x.bin"])
