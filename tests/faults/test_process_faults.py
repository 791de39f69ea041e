"""Faults of the machine hubget runs on: killed or interrupted processes, two processes on one
cache (with and without working file locks), a full disk, and memory while a large file flows."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.faults.harness import (
    assert_cache_verified,
    assert_clean_failure,
    assert_files,
    assert_ok,
    cli_args,
    final_files,
    partials,
    popen_cli,
    run_cli,
)
from tests.support.fakehub import FakeHfRepo
from tests.support.proxy import counting_proxy
from tests.support.rangeserver import RangeServer, wait_until

pytestmark = pytest.mark.timeout(180)

REPO = "org/proc"
WEIGHTS = os.urandom(3 * 1024 * 1024 + 5)
FILES = {"config.json": b'{"b": 2}\n', "model.safetensors": WEIGHTS, "extra.bin": os.urandom(200_000)}
W = "model.safetensors"
RATE = 128 * 1024  # bytes/s per connection through the proxy: slow enough to stop mid-file


@pytest.fixture
def slow_hub() -> Iterator[tuple[RangeServer, FakeHfRepo, str]]:
    """A hub behind a per-connection rate cap, so a download is still running when we hit it."""
    with RangeServer() as server:
        repo = FakeHfRepo(server, REPO, FILES).publish()
        with counting_proxy(server.base, rate_per_conn=RATE) as proxy:
            yield server, repo, proxy.url


def _partial_bytes(cache: Path, name: str = "") -> int:
    """Bytes the resume states of the partial files (of blob ``name`` if given) say are on disk."""
    total = 0
    for state in cache.rglob(f"{name}*.hubget-partial.json"):
        with contextlib.suppress(OSError, ValueError):
            total += sum(e - s for s, e in json.loads(state.read_text())["done"])
    return total


def _weights_blob(cache: Path, repo: FakeHfRepo) -> Path:
    return cache / "models--org--proc" / "blobs" / repo.etags[W]


def assert_ok_json(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(json.loads(result.stdout.strip().splitlines()[-1])["path"])


def fetched(result: subprocess.CompletedProcess[str], name: str) -> int:
    """Bytes of ``name`` the run received over the network (from ``--json``)."""
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return next(f["bytes_fetched"] for f in report["files"] if f["path"] == name)


def _stop_mid_file(proc: subprocess.Popen[str], cache: Path, sig: int) -> None:
    assert wait_until(lambda: _partial_bytes(cache) > 256 * 1024 or proc.poll() is not None, 60)
    assert proc.poll() is None, f"finished before it could be stopped: {proc.communicate()}"
    proc.send_signal(sig)


def test_sigkill_mid_download_then_rerun_resumes(slow_hub, tmp_path):
    server, repo, url = slow_hub
    proc = popen_cli(cli_args(REPO, url, tmp_path))
    _stop_mid_file(proc, tmp_path, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not _weights_blob(tmp_path, repo).exists()
    assert_cache_verified(tmp_path)
    kept = _partial_bytes(tmp_path, repo.etags[W])
    assert kept > 0

    result = run_cli(cli_args(REPO, server.base, tmp_path, "--json"))
    assert_files(assert_ok_json(result), FILES)
    assert_cache_verified(tmp_path)
    assert fetched(result, W) <= len(WEIGHTS) - kept  # the bytes on disk were not fetched again
    assert not partials(tmp_path)


def test_sigint_exits_130_keeps_the_partial_and_rerun_resumes(slow_hub, tmp_path):
    server, repo, url = slow_hub
    proc = popen_cli(cli_args(REPO, url, tmp_path))
    _stop_mid_file(proc, tmp_path, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, _out, err)
    assert_clean_failure(result, 130, "interrupted")
    assert not _weights_blob(tmp_path, repo).exists()
    assert partials(tmp_path)
    kept = _partial_bytes(tmp_path, repo.etags[W])
    assert kept > 0
    assert_cache_verified(tmp_path)

    result = run_cli(cli_args(REPO, server.base, tmp_path, "--json"))
    assert_files(assert_ok_json(result), FILES)
    assert fetched(result, W) <= len(WEIGHTS) - kept
    assert_cache_verified(tmp_path)


@pytest.mark.parametrize("flock", ["working", "no-op"])
def test_two_processes_same_repo_same_cache(slow_hub, tmp_path, flock):
    """Both finish with verified files; with working locks the bytes are fetched once. With
    ``flock`` a no-op (a filesystem whose locks do not work) both download, and the result must
    still be only verified files."""
    server, repo, url = slow_hub
    env = {"HUBGET_FAULT_NO_FLOCK": "1"} if flock == "no-op" else {}
    procs = [popen_cli(cli_args(REPO, url, tmp_path), env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert_cache_verified(tmp_path)  # first of all: nothing unverified at a final path
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        assert_files(Path(out.strip().splitlines()[-1]), FILES)
    assert_cache_verified(tmp_path)
    assert not partials(tmp_path)
    if flock == "working":
        assert server.bytes_sent[repo.resolve_path(W)] < 2 * len(WEIGHTS)


# -- disk full ---------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_mid_write_then_rerun_after_freeing_space(tmp_path):
    """A real ENOSPC on a small tmpfs when it can be mounted (root); else RLIMIT_FSIZE, which makes
    writes past a size fail with EFBIG. Either way: exit 7, one line, nothing at a final path."""
    with RangeServer() as server:
        repo = FakeHfRepo(server, REPO, FILES).publish()
        with small_tmpfs(tmp_path / "fs", "4m") as mounted:
            cache = tmp_path / "fs" / "cache"
            if mounted:
                ballast = tmp_path / "fs" / "ballast"
                ballast.write_bytes(b"\0" * (3 * 1024 * 1024 // 2))  # leaves too little for the weights
                result = run_cli(cli_args(REPO, server.base, cache))
            else:
                ballast = None
                result = _run_with_fsize_limit(cli_args(REPO, server.base, cache), 1024 * 1024)
            assert_clean_failure(result, 7, "space" if mounted else "large")
            assert not (cache / "models--org--proc" / "blobs" / repo.etags[W]).exists()
            assert_cache_verified(cache)
            if ballast is not None:
                ballast.unlink()
            assert_files(assert_ok(run_cli(cli_args(REPO, server.base, cache))), FILES)
            assert_cache_verified(cache)


def test_write_error_after_preallocation_is_a_disk_error(tmp_path):
    """Writes that fail mid-file (EFBIG from RLIMIT_FSIZE, as a quota would) after the space
    check passed: exit 7, one line, nothing at a final path, and the rerun converges."""
    with RangeServer() as server:
        repo = FakeHfRepo(server, REPO, FILES).publish()
        cache = tmp_path / "cache"
        result = _run_with_fsize_limit(cli_args(REPO, server.base, cache), 1024 * 1024)
        assert_clean_failure(result, 7)
        assert not (cache / "models--org--proc" / "blobs" / repo.etags[W]).exists()
        assert_cache_verified(cache)
        assert_files(assert_ok(run_cli(cli_args(REPO, server.base, cache))), FILES)


def _run_with_fsize_limit(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    import resource

    from tests.faults.harness import RUNNER, env_for

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    import sys

    return subprocess.run(
        [sys.executable, RUNNER, *args],
        capture_output=True,
        text=True,
        env=env_for(),
        timeout=60,
        preexec_fn=limit_file_size,
    )


# -- memory ------------------------------------------------------------------------------------

BIG = 512 * 1024 * 1024
RSS_LIMIT = 200 * 1024 * 1024


def test_peak_rss_stays_flat_on_a_file_larger_than_the_limit(tmp_path):
    """A 512 MB file with the default engine settings; the process never holds more than 200 MB."""
    blob = tmp_path / "big.bin"
    with open(blob, "wb") as f:
        f.truncate(BIG)  # sparse zeros: cheap to serve and to hash
    sha = hashlib.sha256()
    zeros = bytes(8 * 1024 * 1024)
    for _ in range(BIG // len(zeros)):
        sha.update(zeros)
    commit = "b" * 40
    with RangeServer() as server:
        api = "/api/models/org/big"
        info = {"id": "org/big", "sha": commit, "siblings": [{"rfilename": "big.safetensors"}]}
        server.add(f"{api}/revision/main", json.dumps(info).encode())
        entry = {
            "type": "file",
            "path": "big.safetensors",
            "size": BIG,
            "oid": "0" * 40,
            "lfs": {"oid": sha.hexdigest(), "size": BIG, "pointerSize": 130},
        }
        server.add(f"{api}/tree/{commit}", json.dumps([entry]).encode())
        server.add(f"/org/big/resolve/{commit}/big.safetensors", blob)
        cache = tmp_path / "cache"
        proc = popen_cli(
            ["download", "org/big", "--endpoint", server.base, "--cache-dir", str(cache), "-q"], knobs={}
        )
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, ps.memory_info().rss)
            time.sleep(0.05)
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        path = Path(out.strip().splitlines()[-1]) / "big.safetensors"
        assert path.stat().st_size == BIG
        assert_cache_verified(cache)
        print(f"peak RSS while downloading {BIG >> 20} MiB: {peak / 2**20:.0f} MiB")
        assert 0 < peak < RSS_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
        assert final_files(cache)
