"""The official huggingface_hub (installed, and 0.26.x from its own venv) downloads from `hubget serve`
and gets byte-identical files, in the cache layout and in local_dir, by branch, tag, sha and refs/pr.

huggingface_hub 0.26 runs from the interpreter named by HUBGET_TEST_HF026_PYTHON, e.g.
    python -m venv /opt/hf026 && /opt/hf026/bin/pip install 'huggingface_hub==0.26.5'
    export HUBGET_TEST_HF026_PYTHON=/opt/hf026/bin/python
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.protocol.clientrun import run_client
from tests.protocol.conftest import HubRepos
from tests.support.hubserver import hub_server
from tests.support.repos import hashes


def _client_python(which: str) -> str:
    if which == "current":
        return sys.executable
    python = os.environ.get("HUBGET_TEST_HF026_PYTHON")
    if not python:
        pytest.skip("HUBGET_TEST_HF026_PYTHON is not set (a venv with huggingface_hub==0.26.5)")
    return python


@pytest.fixture(params=["current", "0.26"])
def client(request: pytest.FixtureRequest, hub_url: str, tmp_path: Path):
    python = _client_python(request.param)
    hf_home = tmp_path / "hf_home"

    def run(code: str, **kw):
        return run_client(code, endpoint=hub_url, hf_home=hf_home, python=python, **kw)

    run.hf_home = hf_home  # type: ignore[attr-defined]
    run.version = request.param  # type: ignore[attr-defined]
    return run


def server_commit(url: str, kind: str, repo_id: str, revision: str = "main") -> str:
    with urllib.request.urlopen(f"{url}/api/{kind}/{repo_id}/revision/{revision}") as resp:
        return json.load(resp)["sha"]


def test_snapshot_download_plain_folder_into_cache(client, hub_repos: HubRepos, hub_url: str):
    out = client(
        """
        from huggingface_hub import snapshot_download
        path = snapshot_download("org/plain")
        cache = Path(os.environ["HF_HOME"]) / "hub" / "models--org--plain"
        emit({"path": path, "files": tree_hashes(path), "ref": (cache / "refs" / "main").read_text(),
              "links": sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*")
                              if p.is_symlink())})
        """
    )
    assert out["files"] == hashes(hub_repos.plain)
    commit = server_commit(hub_url, "models", "org/plain")
    assert out["ref"] == commit
    assert Path(out["path"]).name == commit
    assert out["links"] == sorted(hub_repos.plain)  # every snapshot file is a link into blobs/


def test_snapshot_download_git_revisions(client, hub_repos: HubRepos):
    """Branch, tag, full sha and an unquoted-looking refs/pr/1 each give that commit's exact files."""
    commits = hub_repos.git_commits
    out = client(
        f"""
        from huggingface_hub import snapshot_download
        res = {{}}
        for rev in ["main", "v1.0", "dev", {commits["v1.0"]!r}, "refs/pr/1"]:
            path = snapshot_download("org/git", revision=rev)
            res[rev] = {{"commit": Path(path).name, "files": tree_hashes(path)}}
        emit(res)
        """
    )
    expected = {
        "main": commits["main"],
        "v1.0": commits["v1.0"],
        "dev": commits["dev"],
        commits["v1.0"]: commits["v1.0"],
        "refs/pr/1": commits["dev"],
    }
    for rev, commit in expected.items():
        assert out[rev]["commit"] == commit, rev
        assert out[rev]["files"] == hashes(hub_repos.git_files[commit]), rev


def test_snapshot_download_bare_repo_to_local_dir(client, hub_repos: HubRepos, tmp_path: Path):
    out = client(
        f"""
        from huggingface_hub import snapshot_download
        path = snapshot_download("org/bare", local_dir={str(tmp_path / "bare")!r})
        emit({{"files": tree_hashes(path),
               "meta": sorted(p.name for p in
                              (Path(path) / ".cache/huggingface/download").glob("*.metadata"))}})
        """
    )
    main = hub_repos.git_commits["main"]
    assert out["files"] == hashes(hub_repos.git_files[main])
    assert "config.json.metadata" in out["meta"]


def test_allow_patterns_and_local_dir(client, hub_repos: HubRepos, tmp_path: Path):
    out = client(
        f"""
        from huggingface_hub import snapshot_download
        path = snapshot_download("org/plain", allow_patterns=["*.json", "*.safetensors"],
                                 local_dir={str(tmp_path / "sel")!r})
        emit({{"files": tree_hashes(path)}})
        """
    )
    wanted = {k: v for k, v in hub_repos.plain.items() if k.endswith((".json", ".safetensors"))}
    assert len(wanted) >= 6
    assert out["files"] == hashes(wanted)


def test_hf_hub_download_cache_and_local_dir(client, hub_repos: HubRepos, tmp_path: Path):
    dev = hub_repos.git_commits["dev"]
    out = client(
        f"""
        from huggingface_hub import hf_hub_download
        res = {{}}
        p = hf_hub_download("org/git", "model-00001-of-00002.safetensors")
        res["lfs"] = [p, hashlib.sha256(Path(p).read_bytes()).hexdigest(), os.path.realpath(p)]
        p = hf_hub_download("org/git", "weights/dev.safetensors", revision="refs/pr/1",
                            local_dir={str(tmp_path / "ld")!r})
        res["nested_local_dir"] = [p, hashlib.sha256(Path(p).read_bytes()).hexdigest()]
        p = hf_hub_download("org/git", "config.json", revision={dev!r})
        res["by_sha"] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        p = hf_hub_download("solo", "model.safetensors")
        res["solo"] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        emit(res)
        """
    )
    main_files = hashes(hub_repos.git_files[hub_repos.git_commits["main"]])
    dev_files = hashes(hub_repos.git_files[dev])
    sha = main_files["model-00001-of-00002.safetensors"]
    assert out["lfs"][1] == sha
    assert out["lfs"][2].endswith(f"/blobs/{sha}")  # blob named by the sha256 ETag
    assert out["nested_local_dir"] == [
        str(tmp_path / "ld" / "weights/dev.safetensors"),
        dev_files["weights/dev.safetensors"],
    ]
    assert out["by_sha"] == dev_files["config.json"]
    assert out["solo"] == hashes(hub_repos.solo)["model.safetensors"]


def test_dataset_repo(client, hub_repos: HubRepos, tmp_path: Path):
    out = client(
        f"""
        from huggingface_hub import snapshot_download, hf_hub_download
        a = snapshot_download("org/ds", repo_type="dataset")
        b = snapshot_download("org/ds", repo_type="dataset", local_dir={str(tmp_path / "ds")!r})
        c = hf_hub_download("org/ds", "data/test.jsonl", repo_type="dataset")
        emit({{"cache": tree_hashes(a), "local": tree_hashes(b),
               "one": hashlib.sha256(Path(c).read_bytes()).hexdigest(),
               "in_datasets_cache": "datasets--org--ds" in a}})
        """
    )
    assert out["cache"] == hashes(hub_repos.dataset)
    assert out["local"] == hashes(hub_repos.dataset)
    assert out["one"] == hashes(hub_repos.dataset)["data/test.jsonl"]
    assert out["in_datasets_cache"]


def test_errors_map_to_the_clients_exceptions(client):
    out = client(
        """
        from huggingface_hub import hf_hub_download, snapshot_download
        res = {}
        for name, call in [
            ("repo", lambda: snapshot_download("org/missing")),
            ("revision", lambda: snapshot_download("org/git", revision="no-such-branch")),
            ("entry", lambda: hf_hub_download("org/git", "no/such/file.bin")),
            ("dataset_as_model", lambda: snapshot_download("org/ds")),
        ]:
            try:
                call()
                res[name] = None
            except Exception as exc:
                res[name] = [c.__name__ for c in type(exc).__mro__]
        emit(res)
        """
    )
    assert "RepositoryNotFoundError" in out["repo"]
    assert "RevisionNotFoundError" in out["revision"]
    assert "EntryNotFoundError" in out["entry"]
    assert "RepositoryNotFoundError" in out["dataset_as_model"]


def test_paginated_tree(hub_repos: HubRepos, tmp_path: Path):
    """With 3 entries per page the client follows Link: rel="next" and still gets every file."""
    with hub_server(hub_repos.root, page_size=3) as url:
        out = run_client(
            """
            from huggingface_hub import HfApi, snapshot_download
            api = HfApi()
            entries = list(api.list_repo_tree("org/plain", recursive=True))
            listed = sorted(f.path for f in entries if not hasattr(f, "tree_id"))
            path = snapshot_download("org/plain")
            emit({"listed": listed, "files": tree_hashes(path)})
            """,
            endpoint=url,
            hf_home=tmp_path / "hf",
        )
    assert out["listed"] == sorted(hub_repos.plain)
    assert out["files"] == hashes(hub_repos.plain)


def test_token_protection(hub_repos: HubRepos, tmp_path: Path):
    with hub_server(hub_repos.root, tokens=["hf_secret_one", "hf_secret_two"]) as url:
        code = """
            from huggingface_hub import snapshot_download
            try:
                path = snapshot_download("org/plain")
                emit({"files": tree_hashes(path)})
            except Exception as exc:
                emit({"error": [c.__name__ for c in type(exc).__mro__], "text": str(exc)[:300]})
            """
        anonymous = run_client(code, endpoint=url, hf_home=tmp_path / "a")
        wrong = run_client(code, endpoint=url, hf_home=tmp_path / "b", env={"HF_TOKEN": "hf_wrong"})
        right = run_client(code, endpoint=url, hf_home=tmp_path / "c", env={"HF_TOKEN": "hf_secret_two"})
    assert "HfHubHTTPError" in anonymous["error"] or "RepositoryNotFoundError" in anonymous["error"]
    assert "401" in anonymous["text"]
    assert "HfHubHTTPError" in wrong["error"] and "401" in wrong["text"]
    assert right["files"] == hashes(hub_repos.plain)
