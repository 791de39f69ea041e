"""`hubget serve --tls-cert --tls-key`: HTTPS, checked by the clients against a self-signed certificate
made for the test (the certificate is its own CA).

A hub over HTTPS, and a mirror over HTTPS in front of it (its fills reach upstream over HTTPS too):
huggingface_hub 2.4 (httpx: trusts SSL_CERT_FILE) and hubget's own client (urllib3: SSL_CERT_FILE
through OpenSSL, or REQUESTS_CA_BUNDLE / HUBGET_CA_BUNDLE) download byte-identical files; without
the CA the certificate is refused. Half a TLS configuration, or files that cannot be read, are usage
errors before anything listens.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hubserver import hub_server
from tests.support.mirrorserver import MirrorServer, finish_client, start_client
from tests.support.rangeserver import make_self_signed
from tests.support.repos import hashes, llm_repo_files, write_folder_repo

MiB = 1024 * 1024
FILES = llm_repo_files(n_shards=2, shard_size=2 * MiB, seed=13)
SNAPSHOT = """
from huggingface_hub import snapshot_download
emit({"files": tree_hashes(snapshot_download("org/tls"))})
"""


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("HF_", "HUGGING", "HUBGET_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra}


def hubget_download(endpoint: str, dest: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubget", "download", "org/tls", "--local-dir", str(dest), "--quiet"],
        capture_output=True,
        text=True,
        env=clean_env(HF_ENDPOINT=endpoint, HF_HOME=str(dest.parent / f"{dest.name}-home"), **env),
        timeout=240,
    )


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(".cache/")
    }


@dataclass(frozen=True)
class Tls:
    cert: str  # --tls-cert, and what clients trust (SSL_CERT_FILE, REQUESTS_CA_BUNDLE)
    key: str

    @property
    def ca(self) -> str:
        return self.cert


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(*make_self_signed(tmp_path))


def test_https_hub_and_mirror_for_huggingface_hub_and_hubget(
    tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = tmp_path / "hub"
    write_folder_repo(root / "models" / "org" / "tls", FILES)
    args = ["--tls-cert", tls.cert, "--tls-key", tls.key]
    with hub_server(root, extra_args=args, env=clean_env()) as hub_url:
        assert hub_url.startswith("https://127.0.0.1:")
        ok = hubget_download(hub_url, tmp_path / "direct", SSL_CERT_FILE=tls.ca)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert tree(tmp_path / "direct") == hashes(FILES)
        refused = hubget_download(hub_url, tmp_path / "untrusted")
        assert refused.returncode != 0
        assert "certificate" in refused.stderr.lower(), refused.stderr[-3000:]

        # The mirror trusts the CA for its own fills upstream (SSL_CERT_FILE in its environment).
        monkeypatch.setenv("SSL_CERT_FILE", tls.ca)
        with MirrorServer(tmp_path / "mirror", hub_url, *args) as mirror:
            assert mirror.url.startswith("https://")
            out = finish_client(
                start_client(
                    SNAPSHOT, endpoint=mirror.url, hf_home=tmp_path / "hf", env={"SSL_CERT_FILE": tls.ca}
                )
            )
            assert out["files"] == hashes(FILES)
            got = hubget_download(mirror.url, tmp_path / "via-mirror", REQUESTS_CA_BUNDLE=tls.ca)
            assert got.returncode == 0, got.stderr[-3000:]
            assert tree(tmp_path / "via-mirror") == hashes(FILES)
            assert "fetching org/tls/model-00001-of-00002.safetensors" in mirror.log()


def serve_fails(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "hubget", "serve", *args, "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stderr


def test_half_a_tls_configuration_or_unreadable_files_are_usage_errors(tls: Tls, tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    for flags in (["--tls-cert", tls.cert], ["--tls-key", tls.key]):
        assert "--tls-cert and --tls-key go together" in serve_fails(str(root), *flags)
    missing = tmp_path / "absent.pem"
    err = serve_fails(str(root), "--tls-cert", str(missing), "--tls-key", tls.key)
    assert f"cannot read --tls-cert {missing}" in err
    err = serve_fails(str(root), "--tls-cert", tls.cert, "--tls-key", tls.ca)  # not its key
    assert "not a certificate and its key" in err
