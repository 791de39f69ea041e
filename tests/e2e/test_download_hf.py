"""hubget downloads from `hubget serve`; the official clients read what it wrote, offline."""

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

import hubget
from tests.support.hubserver import hub_server
from tests.support.proxy import counting_proxy
from tests.support.repos import llm_repo_files, write_folder_repo
from tests.support.tiny_model import build_tiny_causal_lm, reference_logits

REPO = "org/llm"
FILES = llm_repo_files(n_shards=3, shard_size=256 * 1024)
ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    write_folder_repo(root / "models" / REPO, FILES)
    build_tiny_causal_lm(root / "models" / "org" / "tiny")
    big = os.urandom(48 * 1024 * 1024 + 123)
    write_folder_repo(root / "models" / "org" / "big", {"weights.safetensors": big, "config.json": b"{}"})
    with hub_server(root) as url:
        yield url, root, big


def _offline_python(code: str, env: dict[str, str]) -> str:
    full_env = {**os.environ, **ENV, "HF_HUB_OFFLINE": "1", **env}
    full_env.pop("HF_ENDPOINT", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def _cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hubget", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        **kw,
    )


def test_snapshot_into_hf_cache_is_read_offline_by_huggingface_hub(hub, tmp_path):
    url, _, _ = hub
    path = Path(hubget.snapshot_download(REPO, endpoint=url, cache_dir=tmp_path, token=False))
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data, name
        blob = (path / name).resolve()
        expected = hashlib.sha256(data).hexdigest()
        if name.endswith((".safetensors", ".bin")):
            assert blob.name == expected  # LFS files: blobs named by sha256
    code = (
        "import huggingface_hub as h, json;"
        f"p = h.snapshot_download({REPO!r}, cache_dir={str(tmp_path)!r}, local_files_only=True);"
        f"f = h.hf_hub_download({REPO!r}, 'original/params.json', cache_dir={str(tmp_path)!r});"
        "print(json.dumps([p, open(f).read()]))"
    )
    found, params = json.loads(_offline_python(code, {}))
    assert Path(found) == path
    assert params.encode() == FILES["original/params.json"]


def test_transformers_loads_offline_from_the_cache_hubget_wrote(hub, tmp_path):
    url, _, _ = hub
    hubget.snapshot_download("org/tiny", endpoint=url, cache_dir=tmp_path, token=False)
    code = (
        "import torch, transformers as t;"
        "from tests.support.tiny_model import model_logits;"
        "m = t.AutoModelForCausalLM.from_pretrained('org/tiny');"
        "tok = t.AutoTokenizer.from_pretrained('org/tiny');"
        f"torch.save(model_logits(m), {str(tmp_path / 'logits.pt')!r}); print(len(tok))"
    )
    _offline_python(code, {"HF_HUB_CACHE": str(tmp_path), "PYTHONPATH": os.getcwd()})
    import torch

    assert torch.equal(torch.load(tmp_path / "logits.pt"), reference_logits())


def test_local_dir_mode_with_huggingface_hub_metadata(hub, tmp_path):
    url, _, _ = hub
    local = tmp_path / "llm"
    path = hubget.snapshot_download(REPO, endpoint=url, local_dir=local, token=False)
    assert Path(path) == local
    for name, data in FILES.items():
        target = local / name
        assert not target.is_symlink() and target.read_bytes() == data
    assert (local / ".cache" / "huggingface" / ".gitignore").read_text() == "*"
    code = (
        "from pathlib import Path; import json;"
        "from huggingface_hub._local_folder import read_download_metadata as r;"
        f"m = r(Path({str(local)!r}), 'model-00001-of-00003.safetensors');"
        "print(json.dumps([m.etag, m.commit_hash]))"
    )
    etag, commit = json.loads(_offline_python(code, {}))
    assert etag == hashlib.sha256(FILES["model-00001-of-00003.safetensors"]).hexdigest()
    assert len(commit) == 40
    assert not list(local.rglob("*.hubget-partial*"))


def test_include_exclude_and_rerun_fetches_no_file_bytes(hub, tmp_path):
    url, _, _ = hub
    with counting_proxy(url) as proxy:
        result = _cli(
            "download",
            REPO,
            "--endpoint",
            proxy.url,
            "--cache-dir",
            str(tmp_path),
            "--include",
            "*.safetensors",
            "--include",
            "*.json",
            "--exclude",
            "generation_config.json",
            "-q",
        )
        assert result.returncode == 0, result.stderr
        path = Path(result.stdout.strip().splitlines()[-1])
        got = sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())
        want = sorted(
            n for n in FILES if n.endswith((".safetensors", ".json")) and n != "generation_config.json"
        )
        assert got == want
        first = proxy.down
        assert first > sum(len(FILES[n]) for n in want)
        proxy.reset_counters()
        again = _cli(
            "download",
            REPO,
            "--endpoint",
            proxy.url,
            "--cache-dir",
            str(tmp_path),
            "--include",
            "*.safetensors",
            "-q",
        )
        assert again.returncode == 0, again.stderr
        assert Path(again.stdout.strip().splitlines()[-1]) == path
        # only the repo-info and tree answers: no file body travels again
        assert proxy.down < 64 * 1024


def test_dry_run_lists_files_and_what_is_present(hub, tmp_path):
    url, _, _ = hub
    hubget.snapshot_download(
        REPO, endpoint=url, cache_dir=tmp_path, token=False, allow_patterns=["config.json"]
    )
    result = _cli("download", REPO, "--endpoint", url, "--cache-dir", str(tmp_path), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    files = {f["path"]: f for f in plan["files"]}
    assert set(files) == set(FILES)
    assert files["config.json"]["present"] is True
    assert files["model-00001-of-00003.safetensors"]["present"] is False
    assert files["model-00001-of-00003.safetensors"]["size"] == len(FILES["model-00001-of-00003.safetensors"])
    assert plan["missing_bytes"] == sum(len(d) for n, d in FILES.items() if n != "config.json")
    assert not (
        tmp_path / "models--org--llm" / "blobs" / hashlib.sha256(FILES["README.md"]).hexdigest()
    ).exists()


def test_sigkill_then_rerun_fetches_only_the_missing_bytes(hub, tmp_path):
    url, _, big = hub
    blob = tmp_path / "models--org--big" / "blobs" / hashlib.sha256(big).hexdigest()
    with counting_proxy(url, rate_per_conn=3 * 1024 * 1024) as proxy:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubget",
                "download",
                "org/big",
                "--endpoint",
                proxy.url,
                "--cache-dir",
                str(tmp_path),
                "--connections",
                "4",
                "--max-connections",  # 2 x 3 MB/s, no widening: the kill lands mid-file
                "2",
                "-q",
            ],
            env={**os.environ, **ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while proxy.down < len(big) // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # let a resume-state save happen after the half-way mark
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not blob.exists()
        states = list(blob.parent.glob("*.hubget-partial.json"))
        assert states, "the killed run left resume state"
        recorded = sum(end - start for start, end in json.loads(states[0].read_text())["done"])
        assert recorded > 0
    with counting_proxy(url) as proxy:
        result = _cli(
            "download", "org/big", "--endpoint", proxy.url, "--cache-dir", str(tmp_path), "--json", "-q"
        )
        assert result.returncode == 0, result.stderr
        assert blob.read_bytes() == big
        report = json.loads(result.stdout.strip().splitlines()[-1])
        fetched = {f["path"]: f["bytes_fetched"] for f in report["files"]}["weights.safetensors"]
        # The client read only what the killed run had not recorded...
        assert fetched <= len(big) - recorded, (fetched, len(big), recorded)
        # ...and on the wire (where a closed range connection may leave a few MB in flight) the
        # rerun moved well under the whole file.
        assert proxy.down < len(big) - recorded + 8 * 1024 * 1024, (proxy.down, len(big), recorded)
    assert not list(blob.parent.glob("*.hubget-partial*"))


def test_hf_hub_download_single_file(hub, tmp_path):
    url, _, _ = hub
    path = hubget.hf_hub_download(REPO, "original/params.json", endpoint=url, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == FILES["original/params.json"]
    assert Path(path).is_symlink()
    local = hubget.hf_hub_download(REPO, "config.json", endpoint=url, local_dir=tmp_path / "ld", token=False)
    assert Path(local) == tmp_path / "ld" / "config.json"
    assert Path(local).read_bytes() == FILES["config.json"]
