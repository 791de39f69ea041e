"""Shared pieces of the fault tests: small timeouts, the CLI in a subprocess, and the invariants
every test asserts (one clear line on failure, only verified files at final paths)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hubget.hashing import hash_file

RUNNER = str(Path(__file__).with_name("run_hubget.py"))
ROOT = str(Path(__file__).resolve().parents[2])

# Give up fast: every wait in these tests is bounded by these numbers. The knobs a user has too
# are set through the environment (see hubget.config); the rest as HttpClient / Engine defaults.
ENV_KNOBS: dict[str, str] = {
    "HUBGET_CONNECT_TIMEOUT": "2",
    "HUBGET_READ_TIMEOUT": "2",
    "HUBGET_RETRIES": "2",
    "HUBGET_RETRY_AFTER_CAP": "1",
    "HUBGET_STALL_TIMEOUT": "1",
    "HUBGET_MIN_SPEED": str(16 * 1024),
}
HTTP_KNOBS: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_max": 0.05,
}
# Ranges even for small files, so range faults are exercised with a few hundred KB.
ENGINE_KNOBS: dict[str, Any] = {
    "split_threshold": 256 * 1024,
    "min_chunk": 128 * 1024,
    "max_chunk": 256 * 1024,
    "steal_min": 64 * 1024,
    "range_retries": 3,
    "save_interval": 0.1,
}
KNOBS = {"http": HTTP_KNOBS, "engine": ENGINE_KNOBS}
BASE_ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def env_for(extra: dict[str, str] | None = None, knobs: dict[str, Any] | None = None) -> dict[str, str]:
    env = {**os.environ, **BASE_ENV, **(extra or {})}
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "HUBGET_CA_BUNDLE",  # wins over SSL_CERT_FILE, which the TLS tests set
        "REQUESTS_CA_BUNDLE",  # trusted beside it: not wanted there either
    ):
        if name not in (extra or {}):
            env.pop(name, None)
    for name in ENV_KNOBS:  # knobs=... (e.g. {}) means exactly those: no small timeouts either
        env.pop(name, None)
    if knobs is None:
        env.update(ENV_KNOBS)
    env["HUBGET_FAULT_KNOBS"] = json.dumps(KNOBS if knobs is None else knobs)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HOME"] = env.get("HF_HOME_FOR_TESTS", "/nonexistent-hf-home")
    return env


def cli_args(repo: str, endpoint: str, cache: Path | None = None, *more: str) -> list[str]:
    args = ["download", repo, "--endpoint", endpoint, "-q"]
    if cache is not None:
        args += ["--cache-dir", str(cache)]
    return [*args, *more]


def run_cli(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    knobs: dict[str, Any] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, RUNNER, *args],
        capture_output=True,
        text=True,
        env=env_for(env, knobs),
        timeout=timeout,
    )


def popen_cli(
    args: list[str], *, env: dict[str, str] | None = None, knobs: dict[str, Any] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, RUNNER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(env, knobs),
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Exit ``code``, exactly one line on stderr (``hubget: error: ...``), no traceback."""
    err = result.stderr.strip()
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got: {err[-2000:]}"
    assert err.startswith("hubget: error: "), err
    for word in words:
        assert word.lower() in err.lower(), f"{word!r} not in {err!r}"
    return err


def assert_ok(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def _blob_ok(path: Path) -> bool:
    name = path.name
    if len(name) == 64:
        return hash_file(path, "sha256") == name
    if len(name) == 40:
        return hash_file(path, "git-sha1") == name
    return False


def assert_cache_verified(cache: Path) -> None:
    """Every blob at a final path holds exactly the bytes its name (hash) says; every snapshot
    link resolves to such a blob inside the cache; temp files are never larger than announced."""
    if not cache.exists():
        return
    cache_real = cache.resolve()
    for repo in cache.iterdir():
        blobs = repo / "blobs"
        if blobs.is_dir():
            for p in blobs.iterdir():
                if ".hubget-partial" in p.name:
                    continue
                assert p.is_file() and not p.is_symlink(), f"unexpected entry {p}"
                assert _blob_ok(p), f"unverified bytes at final path {p}"
        snaps = repo / "snapshots"
        if snaps.is_dir():
            for link in snaps.rglob("*"):
                if link.is_symlink():
                    target = link.resolve()
                    assert target.exists(), f"dangling link {link}"
                    assert cache_real in target.parents, f"{link} leads outside the cache"
                    assert _blob_ok(target), f"{link} -> unverified {target}"


def assert_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        got = (folder / name).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), f"{name}: wrong bytes"


def final_files(cache: Path) -> list[Path]:
    """Files at final paths (blobs), not temp files."""
    return [p for p in cache.rglob("blobs/*") if ".hubget-partial" not in p.name]


def partials(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.hubget-partial")]
