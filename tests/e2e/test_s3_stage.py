"""`hubget download REPO --to s3://bucket/prefix` against a real S3 store (SeaweedFS on 127.0.0.1):
objects identical to the repo's files, a manifest that describes them, reruns that skip what is there,
corrupt bytes never completed, a SIGKILL'd run resumed without uploading its finished parts again,
and the Run:ai model streamer (as vLLM uses it) reading a staged model's tensors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.hubreplica import HubReplica, make_repo
from tests.support.hubserver import hub_server
from tests.support.proxy import CountingProxy
from tests.support.repos import (
    LFS_PATTERNS,
    GitRepoBuilder,
    git_blob_sha1,
    llm_repo_files,
    sha256_hex,
    write_folder_repo,
)
from tests.support.seaweed import SeaweedS3, seaweed_s3

MiB = 1024 * 1024
BUCKET = "models"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with seaweed_s3(tmp_path_factory.mktemp("seaweed"), buckets=[BUCKET]) as store:
        yield store


def hubget_env(s3: SeaweedS3, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "HUBGET_", "AWS_"))}
    env.update(s3.env)
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def stage(env: dict[str, str], repo_id: str, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hubget", "download", repo_id, "--to", target, "--json", "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pointer_sha1(data: bytes) -> str:
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(data)}\nsize {len(data)}\n"
    return git_blob_sha1(pointer.encode())


def is_lfs(path: str) -> bool:
    return any(Path(path).match(p) for p in LFS_PATTERNS)


def test_stage_from_hubget_serve_is_byte_identical_and_reruns_skip(s3: SeaweedS3, tmp_path: Path):
    files = llm_repo_files(seed=3)
    files["big/model-large.safetensors"] = os.urandom(13 * MiB)  # 3 parts of 5 MiB
    files["notes/long.txt"] = os.urandom(6 * MiB)  # a git (non-LFS) file of 2 parts: git sha1 verified
    files["pkg/__init__.py"] = b""
    commit = GitRepoBuilder(tmp_path / "root/models/org/llm").commit(files, "weights")
    prefix = "serve/models/org/llm"
    with hub_server(tmp_path / "root") as url:
        env = hubget_env(s3, url)
        report = report_of(stage(env, "org/llm", f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
        objects = s3.objects(BUCKET, prefix)
        manifest = json.loads(objects.pop(".hubget/manifest.json"))
        assert objects == files  # object by object, and nothing else (no resume records left)
        assert s3.uploads(BUCKET, prefix) == []
        assert report["commit"] == commit and report["missing_bytes"] == sum(map(len, files.values()))
        by_path = {f["path"]: f for f in report["files"]}
        assert by_path["big/model-large.safetensors"]["parts"] == 3
        assert by_path["notes/long.txt"]["parts"] == 2

        assert manifest["commit"] == commit and manifest["repo_id"] == "org/llm"
        assert manifest["revisions"] == ["main"]
        listed = {f["path"]: f for f in manifest["files"]}
        assert set(listed) == set(files)
        for path, data in files.items():
            entry = listed[path]
            assert (entry["size"], entry["sha256"], entry["lfs"]) == (
                len(data),
                sha256_hex(data),
                is_lfs(path),
            )
            assert entry["git_sha1"] == (pointer_sha1(data) if is_lfs(path) else git_blob_sha1(data))

        again = report_of(stage(env, "org/llm", f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
        assert again["missing_bytes"] == 0 and again["parts_uploaded"] == 0
        assert all(f["present"] for f in again["files"])

        # A crash between an object's completion and the manifest write: the object's metadata says it is
        # complete, so it is not fetched again and the manifest is written anew. (The one exception: a
        # git file in several parts, whose sha256 was not known when its upload was created.)
        s3.client().delete_object(Bucket=BUCKET, Key=f"{prefix}/.hubget/manifest.json")
        third = report_of(stage(env, "org/llm", f"s3://{BUCKET}/{prefix}", "--part-size", "5"))
        assert [f["path"] for f in third["files"] if not f["present"]] == ["notes/long.txt"]
        assert json.loads(s3.objects(BUCKET, prefix)[".hubget/manifest.json"])["files"] == manifest["files"]


def test_stage_from_modelscope(s3: SeaweedS3, tmp_path: Path):
    files = {"model.safetensors": os.urandom(7 * MiB), "configuration.json": b'{"task": "x"}\n'}
    write_folder_repo(tmp_path / "root/models/org/ms", files)
    prefix = "ms/models/org/ms"
    with hub_server(tmp_path / "root") as url:
        env = hubget_env(s3, "http://127.0.0.1:1", MODELSCOPE_ENDPOINT=url)
        report = report_of(
            stage(env, "org/ms", f"s3://{BUCKET}/{prefix}", "--source", "modelscope", "--part-size", "5")
        )
    objects = s3.objects(BUCKET, prefix)
    manifest = json.loads(objects.pop(".hubget/manifest.json"))
    assert objects == files and report["source"] == "modelscope"
    assert manifest["revisions"] == ["master"]
    # ModelScope lists a sha256 for every file: each is kept (and served) as an LFS file.
    assert {f["path"]: (f["sha256"], f["lfs"]) for f in manifest["files"]} == {
        p: (sha256_hex(d), True) for p, d in files.items()
    }


def test_stage_from_the_real_hub_replica_resolves_each_file_once(
    s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
):
    import hubget

    files = llm_repo_files(seed=4)
    files["model-big.safetensors"] = os.urandom(40 * MiB)  # 3 parts of 16 MiB
    prefix = "replica/models/org/llm"
    with HubReplica([make_repo("org/llm", files)]) as hub:
        for k, v in hubget_env(s3, hub.hub_url).items():
            monkeypatch.setenv(k, v)
        for k in [k for k in os.environ if k.startswith(("HF_TOKEN", "HUBGET_"))]:
            monkeypatch.delenv(k)
        out = hubget.snapshot_download("org/llm", to=f"s3://{BUCKET}/{prefix}", connections=4)
        assert out == f"s3://{BUCKET}/{prefix}"
        objects = s3.objects(BUCKET, prefix)
        manifest = json.loads(objects.pop(".hubget/manifest.json"))
        assert objects == files
        assert manifest["commit"] == hub.repos[("model", "org/llm")].commit
        # Every range of a file went to the signed bridge URL its one resolve led to.
        assert {path: hub.counters.resolves(path) for path in files} == {path: 1 for path in files}
        assert hub.counters.ranges("model-big.safetensors") >= 3


def test_a_corrupt_upstream_byte_leaves_no_completed_object(s3: SeaweedS3):
    big = os.urandom(12 * MiB)
    small = os.urandom(100_000)
    files = {"big.safetensors": big, "small.bin": small, "config.json": b'{"ok": true}\n'}
    repo = make_repo("org/bad", files)
    # The hub lists the right hashes; the CDN serves one flipped byte (in the middle of part 2).
    for path, offset in (("big.safetensors", 7 * MiB + 3), ("small.bin", 500)):
        data = bytearray(files[path])
        data[offset] ^= 0x01
        repo.files[path].data = bytes(data)
    prefix = "corrupt/models/org/bad"
    with HubReplica([repo]) as hub:
        proc = stage(hubget_env(s3, hub.hub_url), "org/bad", f"s3://{BUCKET}/{prefix}", "--part-size", "5")
    assert proc.returncode == 5, proc.stderr  # integrity
    assert "sha256" in proc.stderr
    objects = s3.objects(BUCKET, prefix)
    manifest = json.loads(objects.pop(".hubget/manifest.json"))
    assert objects == {"config.json": files["config.json"]}  # no object of the corrupt files, no record
    assert [f["path"] for f in manifest["files"]] == ["config.json"]
    assert s3.uploads(BUCKET, prefix) == []  # the multipart upload was aborted, not left behind


def test_kill9_mid_stage_then_rerun_uploads_only_missing_parts(s3: SeaweedS3):
    data = os.urandom(30 * MiB)  # 6 parts of 5 MiB
    prefix = "killed/models/org/big"
    key = f"{prefix}/model.safetensors"
    client = s3.client()
    with HubReplica([make_repo("org/big", {"model.safetensors": data})], rate_per_conn=2.5e6) as hub:
        env = hubget_env(s3, hub.hub_url)
        cmd = [sys.executable, "-m", "hubget", "download", "org/big", "--to", f"s3://{BUCKET}/{prefix}"]
        cmd += ["--part-size", "5", "--max-connections", "2", "-q"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            upload_id = _wait_for_parts(s3, key, at_least=3, proc=proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        listed = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", [])
        assert 3 <= len(listed) < 6
        record_keys = [
            o["Key"]
            for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/.hubget/uploads/")["Contents"]
        ]
        record = json.loads(client.get_object(Bucket=BUCKET, Key=record_keys[0])["Body"].read())
        assert record["upload_id"] == upload_id and record["hashed"] >= 1

        # The rerun goes through a proxy that counts what is sent to the store.
        hub.rate_per_conn = None
        hub.counters.reset()
        port = int(s3.url.rsplit(":", 1)[1])
        proxy = CountingProxy("127.0.0.1", port)
        try:
            rerun = report_of(
                stage({**env, "AWS_ENDPOINT_URL": proxy.url}, "org/big", f"s3://{BUCKET}/{prefix}")
            )
            sent = proxy.up
        finally:
            proxy.close()
    (f,) = rerun["files"]
    assert f["resumed"] and f["parts"] == 6
    assert f["parts_reused"] == len(listed)  # every part the store held was kept...
    assert f["parts_uploaded"] == 6 - len(listed)  # ...and only the others were uploaded
    assert (6 - len(listed)) * 5 * MiB <= sent < (6 - len(listed)) * 5 * MiB + MiB
    # Parts covered by the saved hash state were not even fetched again; the rest were, to be hashed.
    assert f["bytes_fetched"] <= 30 * MiB - record["hashed"] * 5 * MiB
    assert hub.counters.ranges("model.safetensors") == 6 - record["hashed"]
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert s3.uploads(BUCKET, prefix) == []
    assert ".hubget/uploads" not in " ".join(s3.objects(BUCKET, prefix))


def _wait_for_parts(s3: SeaweedS3, key: str, *, at_least: int, proc: subprocess.Popen[bytes]) -> str:
    client = s3.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        for upload in s3.uploads(BUCKET, key):
            parts = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"]).get("Parts", [])
            if len(parts) >= at_least:
                time.sleep(1.2)  # let the resume record catch up (it is written once a second)
                return str(upload["UploadId"])
        time.sleep(0.1)
    raise AssertionError("the staging run uploaded too few parts in time")


def test_runai_streamer_reads_a_staged_tiny_model(s3: SeaweedS3, tmp_path: Path):
    from tests.support.tiny_model import build_tiny_causal_lm

    repo_dir = tmp_path / "root/models/org/tiny"
    build_tiny_causal_lm(repo_dir, sharded=True)
    shards = sorted(p.name for p in repo_dir.glob("*.safetensors"))
    assert len(shards) >= 2
    prefix = "runai/models/org/tiny"
    with hub_server(tmp_path / "root") as url:
        report_of(stage(hubget_env(s3, url), "org/tiny", f"s3://{BUCKET}/{prefix}"))
    code = f"""
import json, sys, torch
from safetensors.torch import load_file
from runai_model_streamer import SafetensorsStreamer
out = {{}}
for name in {shards!r}:
    want = load_file({str(repo_dir)!r} + "/" + name)
    with SafetensorsStreamer() as streamer:
        streamer.stream_file("s3://{BUCKET}/{prefix}/" + name)
        got = {{k: v.clone() for k, v in streamer.get_tensors()}}
    out[name] = [sorted(got) == sorted(want), all(torch.equal(got[k], want[k]) for k in want), len(want)]
print(json.dumps(out))
"""
    env = {**hubget_env(s3, "http://127.0.0.1:1"), "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == set(shards)
    for name, (same_names, same_tensors, count) in result.items():
        assert same_names and same_tensors and count > 0, name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_signed_urls_that_expire_mid_file_are_resolved_again_once_for_all_parts(s3: SeaweedS3):
    # 6 parts, 2 at a time at 2.5 MB/s: rounds start at 0, ~2.1 and ~4.2 s, while a signed URL lives
    # 1.5 s after the whole second it is dated at (so at most 2.5 s): the last round needs a new one.
    data = os.urandom(30 * MiB)
    prefix = "expiry/models/org/x"
    with HubReplica(
        [make_repo("org/x", {"w.safetensors": data})], url_expiry=1.5, rate_per_conn=2.5e6
    ) as hub:
        env = hubget_env(s3, hub.hub_url)
        report = report_of(
            stage(env, "org/x", f"s3://{BUCKET}/{prefix}", "--part-size", "5", "--max-connections", "2")
        )
        resolves = hub.counters.resolves("w.safetensors")
    assert report["files"][0]["parts_uploaded"] == 6
    assert s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/w.safetensors")["Body"].read() == data
    # Resolved again as the URLs expired, at most once per round of parts, not once per range.
    assert 2 <= resolves <= 4
