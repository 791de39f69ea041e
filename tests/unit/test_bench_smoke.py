"""The benchmark runs end to end on tiny repos: every peer's files verified, a table with numbers, a chart.
Never a time asserted: speed is the benchmark's business, not the test's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = ("hubget", "huggingface_hub", "aria2c")
SCENARIOS = ("large", "small-files", "capped", "small-files-rtt")  # the last: nginx origin, 50 ms RTT


@pytest.mark.timeout(240)
@pytest.mark.skipif(
    shutil.which("aria2c") is None or shutil.which("nginx") is None, reason="needs aria2 and nginx"
)
def test_bench_small_scale_runs_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench", "--scale", "small", "--repeat", "1"]
    cmd += ["--scenarios", ",".join(SCENARIOS), "--peers", ",".join(PEERS)]
    cmd += ["--out", str(out), "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout + done.stderr

    data = json.loads((out / "benchmarks.json").read_text())
    runs = data["runs"]
    assert {(r["scenario"], r["peer"]) for r in runs} == {(s, p) for s in SCENARIOS for p in PEERS}
    for r in runs:
        # Every file on disk with the generated sha256; the server sent at least that many bytes.
        assert r["ok"], r
        assert r["verified"] == r["files"] > 0, r
        assert r["problems"] == []
        assert r["bytes_fetched"] >= r["total_bytes"] > 0, r
        assert r["wall"] > 0 and r["peak_rss"] > 0
    assert data["meta"]["machine"]["python"] == ".".join(map(str, sys.version_info[:3]))

    md = (out / "benchmarks.md").read_text()
    for label in ("hubget", "huggingface_hub", "aria2c (hfd.sh)"):
        rows = [line for line in md.splitlines() if line.startswith(f"| {label} |") and line.count("|") == 9]
        assert len(rows) == len(SCENARIOS), (label, rows)
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[1] == "1/1"
            assert all(re.fullmatch(r"[\d,]+(\.\d+)?", c) for c in cells[2:7]), row
            assert re.fullmatch(r"\d+\.\d\dx|baseline", cells[7]), row
    assert (out / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


REALHUB_PEERS = ("hubget", "huggingface_hub", "aria2c-hfd")


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("aria2c") is None, reason="needs aria2")
def test_bench_realhub_small_scale_counts_what_each_peer_asked(tmp_path: Path) -> None:
    """The replica scenario: hub -> 302 -> Xet bridge, capped, with RTT; files verified, counters kept."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench", "--scale", "small", "--repeat", "1", "--scenarios", "realhub"]
    cmd += ["--peers", ",".join(REALHUB_PEERS), "--out", str(out), "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr

    runs = json.loads((out / "benchmarks.json").read_text())["runs"]
    assert sorted(r["peer"] for r in runs) == sorted(REALHUB_PEERS)
    for r in runs:
        assert r["ok"] and r["verified"] == r["files"] > 0, r
        hub = r["hub"]
        assert set(hub["resolves"]) and len(hub["resolves"]) == r["files"], hub  # every file resolved
        assert sum(hub["too_many"].values()) == 0
        assert sum(hub["bridge_requests"].values()) > 0  # LFS files came from the bridge
        assert r["bytes_fetched"] == hub["bytes"]["hub"] + hub["bytes"]["bridge"] > 0
        assert r["loadavg"] > 0 or r["loadavg_end"] >= 0
    hubget = next(r for r in runs if r["peer"] == "hubget")
    assert set(hubget["hub"]["resolves"].values()) == {1}  # one resolver call per file (README)

    md = (out / "benchmarks.md").read_text()
    assert "What the replica counted (realhub" in md
    assert "| hubget vs huggingface_hub, replica of the real hub | >= 4.0x |" in md
    rows = [line for line in md.splitlines() if line.startswith("| aria2c (hfd.sh defaults) |")]
    assert len(rows) == 3, rows  # timings, counters, how it is run


def test_verification_flags_a_wrong_or_missing_file(tmp_path: Path) -> None:
    from bench.data import ensure_repo
    from bench.verify import verify_tree

    repo = ensure_repo(tmp_path / "root", "chat-7b-scaled", "small")
    copy = tmp_path / "copy"
    shutil.copytree(repo.folder, copy)
    assert verify_tree(copy, repo).all_ok

    shard = copy / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit off
    shard.write_bytes(bytes(data))
    (copy / "tokenizer.json").unlink()
    verdict = verify_tree(copy, repo)
    assert not verdict.all_ok
    assert verdict.ok == len(repo.files) - 2
    assert sorted(verdict.problems) == [
        "missing tokenizer.json",
        "model-00002-of-00002.safetensors: sha256 mismatch",
    ]


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")
def test_mirror_bench_small_counts_upstream_and_verifies(tmp_path: Path) -> None:
    """bench/mirror_vs_olah.py on the small repo with hubget's mirror only (olah is no test dependency):
    two clients at once, every file verified, the replica's counters and the load recorded."""
    out = tmp_path / "out.json"
    cmd = [sys.executable, "bench/mirror_vs_olah.py", "--small", "--clients", "2", "--mirrors", "hubget"]
    cmd += ["--warm-rounds", "1", "--work", str(tmp_path / "work"), "--data-dir", str(tmp_path / "data")]
    cmd += ["--json", str(out), "--md", str(tmp_path / "out.md")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr

    data = json.loads(out.read_text())
    (run,) = data["runs"]
    assert run["ok"] and run["verified_clients"] == run["clients"] == 2, run
    assert 1.0 <= run["bytes_per_repo"] <= 1.1, run  # each byte fetched upstream about once
    assert run["resolver_calls"] == data["repo"]["files"]  # one resolve per file for both clients
    assert run["bridge_calls"] > 0 and len(run["loadavg_start"]) == 3
    warm = data["warm"]
    assert warm["upstream_requests"] == 0 and warm["mirror_mb_s"] > 0 and warm["nginx_mb_s"] > 0
    assert "| hubget serve --upstream | 2 |" in (tmp_path / "out.md").read_text()
