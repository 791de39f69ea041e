"""`hubget upload DIR s3://bucket/prefix` against a real S3 store (SeaweedFS on 127.0.0.1): a plain
folder and a git+LFS repo become objects and a manifest that `hubget serve --store` serves to
huggingface_hub byte-identical (the folder with the commit id `hubget serve ROOT` gives it, the git
repo at HEAD's commit, whatever its work tree holds); a rerun uploads nothing; symlinks leaving the
folder and paths under .hubget/ are refused; a file that changes while it is uploaded is not stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.clientrun import run_client
from tests.protocol.test_serve_s3 import s3_hub, written_bytes
from tests.support.hubserver import hub_server
from tests.support.repos import GitRepoBuilder, hashes, llm_repo_files, write_folder_repo
from tests.support.seaweed import SeaweedS3, seaweed_s3

MiB = 1024 * 1024
BUCKET = "models"
STORE = f"s3://{BUCKET}/hub"  # what s3_hub serves


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with seaweed_s3(tmp_path_factory.mktemp("seaweed"), buckets=[BUCKET]) as store:
        yield store


def upload(s3: SeaweedS3, folder: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "HUBGET_", "AWS_"))}
    env.update(s3.env)
    cmd = [sys.executable, "-m", "hubget", "upload", str(folder), target, "--json", "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def manifest(s3: SeaweedS3, prefix: str) -> dict[str, Any]:
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/.hubget/manifest.json")["Body"].read()
    return json.loads(body)


def download_through_store(s3: SeaweedS3, repo_id: str, tmp: Path) -> dict[str, Any]:
    with s3_hub(s3) as (url, proc):
        before = written_bytes(proc)
        out = run_client(
            f"""
            from huggingface_hub import HfApi, snapshot_download
            path = snapshot_download({repo_id!r})
            emit({{"files": tree_hashes(path), "commit": Path(path).name,
                   "sha": HfApi().model_info({repo_id!r}).sha}})
            """,
            endpoint=url,
            hf_home=tmp / "hf",
        )
        out["sent"] = written_bytes(proc) - before
    return out


def test_a_folder_is_published_with_the_commit_id_hubget_serve_gives_it(s3: SeaweedS3, tmp_path: Path):
    files = llm_repo_files(seed=11)
    files["model-big.safetensors"] = os.urandom(12 * MiB)
    files["sub/dir/notes.txt"] = b"nested\n"
    folder = write_folder_repo(tmp_path / "root/models/lab/folder", files)
    (folder / "alias.txt").symlink_to("sub/dir/notes.txt")  # a link that stays inside is a file
    files["alias.txt"] = files["sub/dir/notes.txt"]
    prefix = "hub/models/lab/folder"

    first = report_of(upload(s3, folder, f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
    assert first["parts_uploaded"] >= 3 and first["missing_bytes"] == sum(map(len, files.values()))
    objects = s3.objects(BUCKET, prefix)
    assert {k: v for k, v in objects.items() if not k.startswith(".hubget/")} == files
    assert not s3.uploads(BUCKET, prefix)

    with hub_server(tmp_path / "root") as source:  # the same folder served by `hubget serve ROOT`
        served = run_client(
            'from huggingface_hub import HfApi\nemit(HfApi().model_info("lab/folder").sha)',
            endpoint=source,
            hf_home=tmp_path / "hf0",
        )
    meta = manifest(s3, prefix)
    assert meta["commit"] == served == first["commit"]
    assert meta["repo_id"] == "lab/folder" and meta["revisions"] == ["main"]
    assert {f["path"]: f["lfs"] for f in meta["files"]}["model-big.safetensors"] is True

    got = download_through_store(s3, "lab/folder", tmp_path)
    assert got["files"] == hashes(files) and got["commit"] == got["sha"] == served
    assert got["sent"] < 512 * 1024  # the bytes came from the store

    again = report_of(upload(s3, folder, f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
    assert again["parts_uploaded"] == 0 and again["missing_bytes"] == 0
    assert again["commit"] == served

    (folder / "config.json").write_bytes(b'{"changed": true}\n')
    third = report_of(upload(s3, folder, f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
    assert third["commit"] != served and third["parts_uploaded"] == 1
    assert [f["path"] for f in third["files"] if not f["present"]] == ["config.json"]


def test_a_git_repo_is_published_at_its_head_commit_with_lfs_objects(s3: SeaweedS3, tmp_path: Path):
    files = llm_repo_files(seed=12)
    files["model-big.safetensors"] = os.urandom(11 * MiB)
    repo = GitRepoBuilder(tmp_path / "repo")
    commit = repo.commit(files, "weights")
    # The work tree no longer matches HEAD: the upload publishes the commit, not the work tree.
    lfs_names = [p for p in files if p.endswith(".safetensors")]
    (repo.path / lfs_names[0]).write_bytes(b"edited, not committed")
    (repo.path / lfs_names[1]).unlink()
    (repo.path / "untracked.txt").write_bytes(b"not in the commit")
    prefix = "hub/models/lab/gitrepo"

    first = report_of(upload(s3, repo.path, f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
    assert first["commit"] == commit and first["parts_uploaded"] >= 3
    objects = s3.objects(BUCKET, prefix)
    assert {k: v for k, v in objects.items() if not k.startswith(".hubget/")} == files
    meta = manifest(s3, prefix)
    assert meta["commit"] == commit
    by_path = {f["path"]: f for f in meta["files"]}
    assert by_path["model-big.safetensors"]["lfs"] and not by_path["config.json"]["lfs"]

    got = download_through_store(s3, "lab/gitrepo", tmp_path)
    assert got["files"] == hashes(files) and got["commit"] == got["sha"] == commit

    again = report_of(upload(s3, repo.path, f"s3://{BUCKET}/{prefix}"))
    assert again["parts_uploaded"] == 0 and again["missing_bytes"] == 0


def test_a_git_repo_without_its_lfs_objects_is_refused(s3: SeaweedS3, tmp_path: Path):
    repo = GitRepoBuilder(tmp_path / "repo")
    repo.commit({"w.safetensors": os.urandom(MiB), "config.json": b"{}"}, "w")
    lfs_dir = repo.path / ".git/lfs/objects"
    for p in sorted(lfs_dir.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (repo.path / "w.safetensors").write_bytes(b"other bytes")
    proc = upload(s3, repo.path, f"s3://{BUCKET}/hub/models/lab/nolfs")
    assert proc.returncode == 3, proc.stderr
    assert "LFS object" in proc.stderr and "w.safetensors" in proc.stderr and "Traceback" not in proc.stderr
    assert s3.objects(BUCKET, "hub/models/lab/nolfs") == {}


@pytest.mark.parametrize("hostile", ["escaping-symlink", "hubget-dir", "git-hubget-path"])
def test_hostile_names_are_refused_and_nothing_is_written(s3: SeaweedS3, tmp_path: Path, hostile: str):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not to be published")
    files = {"config.json": b"{}", "weights.bin": os.urandom(4096)}
    if hostile == "git-hubget-path":
        builder = GitRepoBuilder(tmp_path / "repo")
        builder.commit({**files, ".hubget/manifest.json": b"{}"}, "x")
        folder = builder.path
    else:
        folder = write_folder_repo(tmp_path / "folder", files)
        if hostile == "escaping-symlink":
            (folder / "leak.txt").symlink_to(outside)
        else:
            (folder / ".hubget").mkdir()
            (folder / ".hubget/manifest.json").write_bytes(b'{"format": 1}')
    prefix = f"hub/models/lab/{hostile}"
    proc = upload(s3, folder, f"s3://{BUCKET}/{prefix}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    expected = "leak.txt" if hostile == "escaping-symlink" else ".hubget/"
    assert expected in proc.stderr
    assert s3.objects(BUCKET, prefix) == {}


def test_a_file_that_changes_while_it_is_uploaded_is_not_stored(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import hubget.api.upload as up
    from hubget.errors import IntegrityError

    folder = write_folder_repo(tmp_path / "f", {"a.bin": os.urandom(7 * MiB), "b.txt": b"b\n"})
    hash_local = up._hash_local

    def hash_then_change(path: Path, signature: tuple[int, int, int, int], label: str) -> Any:
        hashed = hash_local(path, signature, label)
        if label == "a.bin":  # changed after it was hashed, before its upload: same size, other bytes
            with open(path, "r+b") as f:
                f.seek(MiB)
                f.write(b"\xff" * 16)
        return hashed

    monkeypatch.setattr(up, "_hash_local", hash_then_change)
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    prefix = "hub/models/lab/changing"
    with pytest.raises(IntegrityError, match="changed while it was read"):
        up.upload(folder, f"s3://{BUCKET}/{prefix}", part_size=5 * MiB)
    objects = s3.objects(BUCKET, prefix)
    assert "a.bin" not in objects and objects["b.txt"] == b"b\n"
    assert "a.bin" not in {f["path"] for f in manifest(s3, prefix)["files"]}
