"""`hubget serve --store s3://bucket/root` in front of a real S3 store (SeaweedFS on 127.0.0.1): the
official clients (huggingface_hub current and 0.26, modelscope) and hubget download repos staged by
`hubget download --to s3://`, byte-identical, with every file's bytes coming from the object store
through a presigned redirect (the hub process sends none); two hub processes on one store answer
alike, and one keeps serving when the other is killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3

from tests.protocol.clientrun import run_client
from tests.support.hubserver import _wait_for_url, hub_server
from tests.support.repos import (
    GitRepoBuilder,
    git_blob_sha1,
    hashes,
    llm_repo_files,
    sha256_hex,
    write_folder_repo,
)
from tests.support.seaweed import SeaweedS3, seaweed_s3

MiB = 1024 * 1024
BUCKET = "models"
STORE = f"s3://{BUCKET}/hub"


@dataclass
class Staged:
    s3: SeaweedS3
    llm: dict[str, bytes]
    dataset: dict[str, bytes]
    commit: str
    source_root: Path


def _stage(s3: SeaweedS3, endpoint: str, repo_id: str, target: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "HUBGET_", "AWS_"))}
    env.update(s3.env, HF_ENDPOINT=endpoint)
    cmd = [sys.executable, "-m", "hubget", "download", repo_id, "--to", target, "-q", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    tmp = tmp_path_factory.mktemp("s3serve")
    llm = llm_repo_files(seed=7)
    llm["model-big.safetensors"] = os.urandom(12 * MiB)
    commit = GitRepoBuilder(tmp / "root/models/org/llm").commit(llm, "weights")
    dataset = {"data/train.jsonl": b'{"text": "a"}\n' * 500, "README.md": b"# data\n"}
    write_folder_repo(tmp / "root/datasets/org/data", dataset)
    with seaweed_s3(tmp / "seaweed", buckets=[BUCKET]) as s3, hub_server(tmp / "root") as source:
        _stage(s3, source, "org/llm", f"{STORE}/models/org/llm", "--part-size", "5")
        _stage(s3, source, "org/data", f"{STORE}/datasets/org/data", "--repo-type", "dataset")
        yield Staged(s3, llm, dataset, commit, tmp / "root")


@contextlib.contextmanager
def s3_hub(s3: SeaweedS3, *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`hubget serve --store STORE` (no local repos at all) and its process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_"))}
    env.update(s3.env)
    with tempfile.TemporaryDirectory(prefix="hubget-s3-serve-") as tmp:
        stderr_path = Path(tmp) / "stderr"
        cmd = [
            sys.executable,
            "-m",
            "hubget",
            "serve",
            "--store",
            STORE,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [*cmd, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=tmp
            )
        try:
            yield _wait_for_url(proc, stderr_path), proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def written_bytes(proc: subprocess.Popen[str]) -> int:
    """Bytes the process has handed to write/send/sendfile so far (its sockets included)."""
    for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/PID/io")


@pytest.fixture(scope="module")
def hub(staged: Staged) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with s3_hub(staged.s3) as served:
        yield served


@pytest.mark.parametrize("which", ["current", "0.26"])
def test_huggingface_hub_downloads_from_the_object_store(staged: Staged, hub, tmp_path: Path, which: str):
    url, proc = hub
    python = sys.executable
    if which == "0.26":
        python = os.environ.get("HUBGET_TEST_HF026_PYTHON", "")
        if not python:
            pytest.skip("HUBGET_TEST_HF026_PYTHON is not set (a venv with huggingface_hub==0.26.5)")
    before = written_bytes(proc)
    out = run_client(
        """
        from huggingface_hub import hf_hub_download, snapshot_download
        path = snapshot_download("org/llm")
        one = hf_hub_download("org/llm", "model-big.safetensors", revision=os.environ["COMMIT"])
        ds = Path(os.environ["HF_HOME"]) / "ds"
        data = snapshot_download("org/data", repo_type="dataset", local_dir=str(ds))
        emit({"files": tree_hashes(path), "one": hashlib.sha256(open(one, "rb").read()).hexdigest(),
              "data": tree_hashes(data), "commit": Path(path).name})
        """,
        endpoint=url,
        hf_home=tmp_path / "hf",
        python=python,
        env={"COMMIT": staged.commit},
    )
    sent = written_bytes(proc) - before
    assert out["files"] == hashes(staged.llm)
    assert out["one"] == sha256_hex(staged.llm["model-big.safetensors"])
    assert out["data"] == hashes(staged.dataset)
    assert out["commit"] == staged.commit
    total = sum(map(len, staged.llm.values()))
    # The clients received every byte, the hub process wrote only API answers and redirects.
    assert total > 12 * MiB and sent < 512 * 1024, sent


def test_resolve_is_a_presigned_redirect_that_honours_range(staged: Staged, hub):
    url, _ = hub
    http = urllib3.PoolManager()
    big = staged.llm["model-big.safetensors"]
    for method in ("HEAD", "GET"):
        resp = http.request(method, f"{url}/org/llm/resolve/main/model-big.safetensors", redirect=False)
        assert resp.status == 302
        assert resp.headers["Location"].startswith(f"{staged.s3.url}/{BUCKET}/hub/models/org/llm/model-big")
        assert "X-Amz-Expires=" in resp.headers["Location"] and "X-Amz-Signature=" in resp.headers["Location"]
        assert resp.headers["X-Repo-Commit"] == staged.commit
        assert resp.headers["ETag"] == resp.headers["X-Linked-Etag"] == f'"{sha256_hex(big)}"'
        assert resp.headers["X-Linked-Size"] == str(len(big))
    location = resp.headers["Location"]
    part = http.request("GET", location, headers={"Range": "bytes=5242870-5242899"})
    assert part.status == 206 and part.data == big[5242870:5242900]
    small = http.request("GET", f"{url}/org/llm/resolve/main/config.json", redirect=False)
    assert small.status == 302 and small.headers["ETag"] == f'"{git_blob_sha1(staged.llm["config.json"])}"'
    assert http.request("GET", small.headers["Location"]).data == staged.llm["config.json"]


def test_listings_come_from_the_manifest(staged: Staged, hub):
    url, _ = hub
    http = urllib3.PoolManager()
    info = json.loads(http.request("GET", f"{url}/api/models/org/llm").data)
    assert info["sha"] == staged.commit
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(staged.llm)
    tree = json.loads(http.request("GET", f"{url}/api/models/org/llm/tree/main?recursive=true").data)
    files = {t["path"]: t for t in tree if t["type"] == "file"}
    assert set(files) == set(staged.llm)
    assert files["model-big.safetensors"]["lfs"]["oid"] == sha256_hex(staged.llm["model-big.safetensors"])
    assert "lfs" not in files["config.json"]
    missing = http.request("GET", f"{url}/api/models/org/absent")
    assert missing.status == 404 and missing.headers["X-Error-Code"] == "RepoNotFound"
    rev = http.request("GET", f"{url}/api/models/org/llm/revision/v9")
    assert rev.status == 404 and rev.headers["X-Error-Code"] == "RevisionNotFound"


def test_modelscope_sdk_downloads_from_the_object_store(staged: Staged, hub, tmp_path: Path):
    url, proc = hub
    code = (
        "import json, hashlib, pathlib\nfrom modelscope import snapshot_download\n"
        "p = pathlib.Path(snapshot_download('org/llm'))\n"
        "print(json.dumps({str(f.relative_to(p)): hashlib.sha256(f.read_bytes()).hexdigest() "
        "for f in p.rglob('*') if f.is_file() and not f.name.startswith('.mv')}))\n"
    )
    env = {**os.environ, "MODELSCOPE_ENDPOINT": url, "MODELSCOPE_CACHE": str(tmp_path / "ms")}
    before = written_bytes(proc)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in got.items() if k in staged.llm} == hashes(staged.llm)
    assert written_bytes(proc) - before < 512 * 1024


def test_hubget_downloads_from_the_object_store(staged: Staged, hub, tmp_path: Path):
    url, _ = hub
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBGET_"))}
    env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"))
    cmd = [sys.executable, "-m", "hubget", "download", "org/llm", "--local-dir", str(tmp_path / "out"), "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert {p: (tmp_path / "out" / p).read_bytes() for p in staged.llm} == staged.llm


def test_two_hubs_on_one_store_answer_alike_and_one_survives_the_other(staged: Staged, tmp_path: Path):
    with s3_hub(staged.s3) as (url_a, proc_a), s3_hub(staged.s3) as (url_b, _):
        http = urllib3.PoolManager()
        for path in ("/api/models/org/llm", "/api/models/org/llm/tree/main?recursive=true"):
            a, b = (json.loads(http.request("GET", u + path).data) for u in (url_a, url_b))
            assert a == b
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait()
        # A repo staged while the hubs run is served by the survivor, no restart: nothing is local.
        files = {"weights.safetensors": os.urandom(300_000), "config.json": b"{}\n"}
        write_folder_repo(staged.source_root / "models/org/late", files)
        with hub_server(staged.source_root) as source:
            _stage(staged.s3, source, "org/late", f"{STORE}/models/org/late")
        out = run_client(
            """
            from huggingface_hub import snapshot_download
            llm, late = snapshot_download("org/llm"), snapshot_download("org/late")
            emit({"llm": tree_hashes(llm), "late": tree_hashes(late)})
            """,
            endpoint=url_b,
            hf_home=tmp_path / "hf",
        )
        assert out == {"llm": hashes(staged.llm), "late": hashes(files)}
