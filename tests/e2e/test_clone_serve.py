"""Git + LFS through `hubget serve`: the real `git clone` (with git-lfs) and `hubget clone` both get
the served repo's exact files; pushing is refused; token protection applies; a killed `hubget clone`
resumes mid-object (hubget serve answers Range)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.gitserver import assert_git_clean, du, git, hubget, random_bytes, setup_git_home, tree
from tests.support.hubserver import hub_server
from tests.support.proxy import counting_proxy
from tests.support.repos import GitRepoBuilder, write_folder_repo

pytestmark = pytest.mark.timeout(240)

ENV_KEYS = ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_TERMINAL_PROMPT")


MODEL = {
    "model-00001-of-00002.safetensors": random_bytes(5_000_000, 1),
    "model-00002-of-00002.safetensors": random_bytes(2_000_000, 2),
    "sub/adapter.bin": random_bytes(300_000, 3),
    "config.json": b'{"model_type": "llama"}\n',
    "README.md": b"# served\n",
}
DATA = {"data/train.bin": random_bytes(400_000, 4), "README.md": b"# data\n"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("serve")
    env = setup_git_home(base / "home")
    with pytest.MonkeyPatch.context() as mp:
        for key in ENV_KEYS:
            mp.setenv(key, env[key])
        root = base / "root"
        model = GitRepoBuilder(root / "models" / "org" / "llm")
        model.commit(MODEL, "weights")
        data = GitRepoBuilder(root / "datasets" / "org" / "data")
        data.commit(DATA, "data")
        write_folder_repo(root / "models" / "org" / "plain", {"a.bin": b"plain"})
        with hub_server(root) as url:
            yield url, root, env


@pytest.fixture
def env(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = setup_git_home(tmp_path / "home")
    for key in ENV_KEYS:
        monkeypatch.setenv(key, env[key])
    return env


def source_files(root: Path, rel: str) -> dict[str, bytes]:
    return tree(root / rel)


def test_real_git_clone_from_hubget_serve(served, env, tmp_path: Path):
    url, root, _ = served
    git(["clone", "-q", f"{url}/org/llm", str(tmp_path / "m")], env=env)
    assert tree(tmp_path / "m") == source_files(root, "models/org/llm")
    assert (tmp_path / "m" / "model-00001-of-00002.safetensors").read_bytes() == MODEL[
        "model-00001-of-00002.safetensors"
    ]
    assert_git_clean(tmp_path / "m", env)
    git(["clone", "-q", f"{url}/org/llm.git", str(tmp_path / "m2")], env=env)
    assert tree(tmp_path / "m2") == tree(tmp_path / "m")
    git(["clone", "-q", f"{url}/datasets/org/data", str(tmp_path / "d")], env=env)
    assert tree(tmp_path / "d") == source_files(root, "datasets/org/data")
    assert (tmp_path / "d" / "data" / "train.bin").read_bytes() == DATA["data/train.bin"]
    assert_git_clean(tmp_path / "d", env)


def test_hubget_clone_from_hubget_serve(served, env, tmp_path: Path):
    url, root, _ = served
    proc = hubget(["clone", f"{url}/org/llm", str(tmp_path / "h")], env)
    assert proc.returncode == 0, proc.stderr
    git(["clone", "-q", f"{url}/org/llm", str(tmp_path / "g")], env=env)
    assert tree(tmp_path / "h") == tree(tmp_path / "g") == source_files(root, "models/org/llm")
    assert_git_clean(tmp_path / "h", env)
    assert du(tmp_path / "h") < 0.65 * du(tmp_path / "g"), (du(tmp_path / "h"), du(tmp_path / "g"))
    proc = hubget(["clone", f"{url}/datasets/org/data.git", str(tmp_path / "hd")], env)
    assert proc.returncode == 0, proc.stderr
    assert tree(tmp_path / "hd") == source_files(root, "datasets/org/data")


def test_push_is_refused_and_plain_folders_have_no_git(served, env, tmp_path: Path):
    url, _, _ = served
    clone = tmp_path / "c"
    git(["clone", "-q", f"{url}/org/llm", str(clone)], env=env)
    (clone / "new.txt").write_text("x")
    git(["add", "new.txt"], env=env, cwd=clone)
    git(["commit", "-qm", "try"], env=env, cwd=clone)
    push = subprocess.run(
        ["git", "push", "origin", "HEAD"], cwd=clone, env=env, capture_output=True, text=True
    )
    assert push.returncode != 0
    assert "403" in push.stderr or "read-only" in push.stderr

    plain = subprocess.run(
        ["git", "clone", f"{url}/org/plain", str(tmp_path / "p")], env=env, capture_output=True, text=True
    )
    assert plain.returncode != 0 and "not found" in plain.stderr.lower()
    proc = hubget(["clone", f"{url}/org/plain", str(tmp_path / "p2")], env)
    assert proc.returncode == 3, proc.stderr


def test_token_protected_server(served, env, tmp_path: Path):
    _, root, _ = served
    with hub_server(root, tokens=["s3cret"]) as url:
        denied = hubget(["clone", f"{url}/org/llm", str(tmp_path / "no")], env)
        assert denied.returncode == 4, denied.stderr
        ok = hubget(["clone", f"{url}/org/llm", str(tmp_path / "yes"), "--token", "s3cret"], env)
        assert ok.returncode == 0, ok.stderr
        assert tree(tmp_path / "yes") == source_files(root, "models/org/llm")
        # The token is not stored in the clone's config.
        assert "s3cret" not in (tmp_path / "yes" / ".git" / "config").read_text()
        # git's way: the token as the password in the URL (git-lfs reuses it for the batch API).
        host = url.split("://", 1)[1]
        git(["clone", "-q", f"http://user:s3cret@{host}/org/llm", str(tmp_path / "g")], env=env)
        assert tree(tmp_path / "g") == tree(tmp_path / "yes")


def _recorded_bytes(state_file: Path) -> int:
    """Bytes the engine's resume state says are on disk (0 while there is no state yet)."""
    try:
        return sum(end - start for start, end in json.loads(state_file.read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_clone_resumes_mid_object(served, env, tmp_path: Path):
    url, root, _ = served
    big = "model-00001-of-00002.safetensors"
    size = len(MODEL[big])
    clone = tmp_path / "r"
    with counting_proxy(url, rate_per_conn=600_000) as proxy:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubget",
                "clone",
                f"{proxy.url}/org/llm",
                str(clone),
                "-q",
                "--connections",
                "1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        oid = hashlib.sha256(MODEL[big]).hexdigest()
        partial = clone / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / f"{oid}.hubget-partial.json"
        deadline = time.monotonic() + 120
        # Wait until the engine has saved resume state for a good part of the big object.
        while not (_recorded_bytes(partial) > 0 and proxy.down > size // 2):
            assert proc.poll() is None, "clone ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (clone / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).exists()
        proxy.rate = None
        proxy.reset_counters()
        rerun = hubget(["clone", f"{proxy.url}/org/llm", str(clone), "--json"], env)
        assert rerun.returncode == 0, rerun.stderr
        second_run_bytes = proxy.down
    report = json.loads(rerun.stdout)
    assert report["bytes_resumed"] > 0
    total_lfs = sum(len(v) for k, v in MODEL.items() if k.endswith((".safetensors", ".bin")))
    # The second run fetched what was missing, not the whole repo again.
    assert report["bytes_fetched"] + report["bytes_resumed"] <= total_lfs
    assert second_run_bytes < total_lfs - report["bytes_resumed"] + 200_000
    assert tree(clone) == source_files(root, "models/org/llm")
    assert_git_clean(clone, env)
