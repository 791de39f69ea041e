"""git through `hubget serve ROOT --upstream URL`: a repo under ROOT clones as from any `hubget serve`
(history, LFS objects); a repo only upstream is not proxied over git: `git clone` fails with a 404 that
says so (and what to use instead), and the LFS batch API answers the same, never a crash or a hang."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.gitserver import git, random_bytes, setup_git_home, tree
from tests.support.hubreplica import HubReplica, make_repo
from tests.support.mirrorserver import MirrorServer
from tests.support.repos import GitRepoBuilder

pytestmark = pytest.mark.timeout(240)

LOCAL = {"model.safetensors": random_bytes(300_000, 7), "config.json": b'{"model_type": "llama"}\n'}
UPSTREAM = {"model.safetensors": random_bytes(200_000, 8), "config.json": b"{}\n"}


def test_git_clone_through_a_mirror(tmp_path: Path):
    env = setup_git_home(tmp_path / "home")
    root = tmp_path / "root"
    GitRepoBuilder(root / "models" / "org" / "local").commit(LOCAL, "weights")
    with HubReplica([make_repo("org/remote", UPSTREAM)]) as hub:
        with MirrorServer(root, hub.hub_url) as mirror:
            git(["clone", "-q", f"{mirror.url}/org/local", str(tmp_path / "local")], env=env)
            assert tree(tmp_path / "local") == tree(root / "models" / "org" / "local")
            assert (tmp_path / "local" / "model.safetensors").read_bytes() == LOCAL["model.safetensors"]
            proc = subprocess.run(
                ["git", "clone", "-q", f"{mirror.url}/org/remote", str(tmp_path / "remote")],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 128, proc.stderr
            assert "only for the repos under its ROOT" in proc.stderr
            assert "not found" in proc.stderr
            batch = urllib.request.Request(
                f"{mirror.url}/org/remote.git/info/lfs/objects/batch",
                data=json.dumps({"operation": "download", "objects": []}).encode(),
                headers={"Content-Type": "application/vnd.git-lfs+json"},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(batch)
            assert err.value.code == 404
            assert "only for the repos under its ROOT" in json.loads(err.value.read())["message"]
            # The same repo through the hub API comes from upstream as usual.
            url = f"{mirror.url}/org/remote/resolve/main/config.json"
            with urllib.request.urlopen(url) as resp:
                assert resp.read() == UPSTREAM["config.json"]
