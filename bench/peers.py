"""The downloaders compared, each as the command line a user would run (or the library call, in a child
process), with the settings their own documentation or code use by default or for speed."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.data import GIT_LFS_ENV, BenchRepo

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Invocation:
    cmd: list[str]
    env: dict[str, str]
    # Given the run's stdout and destination folder: the folder holding the repo's files by their paths.
    files_root: Callable[[str, Path], Path]


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    protocol: str  # "hf" or "ms": which API it speaks, and so which hubget run it is compared with
    describe: str
    build: Callable[[str, BenchRepo, Path], Invocation]
    available: Callable[[], bool] = lambda: True


def _last_line_path(stdout: str, dest: Path) -> Path:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("no path on stdout")
    return Path(lines[-1].strip())


def _child_json_path(stdout: str, dest: Path) -> Path:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return Path(json.loads(line)["path"])
    raise RuntimeError("no result line on stdout")


def _dest_itself(stdout: str, dest: Path) -> Path:
    return dest


def _hubget(source: str) -> Callable[[str, BenchRepo, Path], Invocation]:
    def build(endpoint: str, repo: BenchRepo, dest: Path) -> Invocation:
        cmd = [sys.executable, "-m", "hubget", "download", repo.repo_id, "--repo-type", repo.repo_type]
        cmd += ["--source", source, "--endpoint", endpoint, "--cache-dir", str(dest), "-q"]
        return Invocation(cmd, {}, _last_line_path)

    return build


def _child(  # type: ignore[no-untyped-def]
    peer: str,
    extra_env: dict[str, str] | None = None,
    max_workers: int = 0,
    python: Callable[[], str] = lambda: sys.executable,
):
    def build(endpoint: str, repo: BenchRepo, dest: Path) -> Invocation:
        cmd = [python(), "-m", "bench.child", peer, "--endpoint", endpoint, "--repo-id", repo.repo_id]
        cmd += ["--repo-type", repo.repo_type, "--dest", str(dest)]
        if max_workers:
            cmd += ["--max-workers", str(max_workers)]
        return Invocation(
            cmd, dict(extra_env or {}), _child_json_path if peer != "hf_transfer" else _dest_itself
        )

    return build


def hf_resolve_url(endpoint: str, repo: BenchRepo, path: str) -> str:
    prefix = "datasets/" if repo.repo_type == "dataset" else ""
    return f"{endpoint}/{prefix}{repo.repo_id}/resolve/main/{quote(path)}"


def _aria2c(endpoint: str, repo: BenchRepo, dest: Path) -> Invocation:
    """hf-mirror's hfd.sh: it lists the repo, writes an aria2 input file of resolve URLs and runs
    ``aria2c --console-log-level=error --file-allocation=none -x T -j C -s T -k 1M -c -i LIST``."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for f in repo.files:
        folder, _, name = f.path.rpartition("/")
        lines += [hf_resolve_url(endpoint, repo, f.path), f"  dir={dest / folder}", f"  out={name}"]
    listing = dest.parent / (dest.name + ".aria2-input")
    listing.write_text("\n".join(lines) + "\n")
    cmd = ["aria2c", "--console-log-level=error", "--file-allocation=none", "-x", "16", "-j", "5", "-s", "16"]
    cmd += ["-k", "1M", "-c", "-i", str(listing), "--summary-interval=0"]
    return Invocation(cmd, {}, _dest_itself)


def _aria2c_hfd(endpoint: str, repo: BenchRepo, dest: Path) -> Invocation:
    """hfd.sh with its defaults (THREADS=4, CONCURRENT=5): the repo's files as an aria2 input file of
    resolve URLs, then exactly its command line:
    ``aria2c --console-log-level=error --file-allocation=none -x 4 -j 5 -s 4 -k 1M -c -i LIST
    --save-session=LIST``."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for f in repo.files:
        folder, _, name = f.path.rpartition("/")
        lines += [hf_resolve_url(endpoint, repo, f.path), f" dir={dest / folder}", f" out={name}", ""]
    listing = dest.parent / (dest.name + ".aria2c_urls.txt")
    listing.write_text("\n".join(lines) + "\n")
    cmd = ["aria2c", "--console-log-level=error", "--file-allocation=none", "-x", "4", "-j", "5", "-s", "4"]
    cmd += ["-k", "1M", "-c", "-i", str(listing), f"--save-session={listing}"]
    return Invocation(cmd, {}, _dest_itself)


def _git_clone(hubget: bool) -> Callable[[str, BenchRepo, Path], Invocation]:
    """`git clone URL` (git-lfs's smudge filter fetches every LFS file) or `hubget clone URL`."""

    def build(endpoint: str, repo: BenchRepo, dest: Path) -> Invocation:
        url = f"{endpoint}/{repo.repo_id}"
        target = dest / "clone"
        if hubget:
            cmd = [sys.executable, "-m", "hubget", "clone", url, str(target), "-q"]
        else:
            cmd = ["git", "clone", "-q", url, str(target)]
        return Invocation(cmd, dict(GIT_LFS_ENV), lambda stdout, d: target)

    return build


def _has(module: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return check


def hf026_python() -> str:
    """The interpreter of a venv with huggingface_hub 0.26 and hf_transfer (the last huggingface_hub whose
    fast path is hf_transfer): HUBGET_BENCH_HF026_PYTHON, else HUBGET_TEST_HF026_PYTHON (the protocol
    tests' venv), else /tmp/hubget-hf026/bin/python."""
    for var in ("HUBGET_BENCH_HF026_PYTHON", "HUBGET_TEST_HF026_PYTHON"):
        if os.environ.get(var):
            return os.environ[var]
    return "/tmp/hubget-hf026/bin/python"


@functools.cache
def _hf026_ready() -> bool:
    python = hf026_python()
    if not Path(python).is_file():
        return False
    probe = "import hf_transfer, huggingface_hub; assert huggingface_hub.__version__.startswith('0.26')"
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0


# modelscope 1.40 (modelscope_hub 0.5) splits a file into ranges only above
# MODELSCOPE_DOWNLOAD_PARALLEL_THRESHOLD_MB (default 500) and with MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS > 1
# (default 1, capped at 16); files at once are snapshot_download's max_workers (default 4).
MS_PARALLEL_ENV = {
    "MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS": "16",
    "MODELSCOPE_DOWNLOAD_PARALLEL_THRESHOLD_MB": "50",
}

PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer(
            "hubget",
            "hubget",
            "hf",
            "hubget download REPO -q (8 files, 8 ranges per large file, sha256)",
            _hubget("hf"),
        ),
        Peer(
            "huggingface_hub",
            "huggingface_hub",
            "hf",
            "snapshot_download(), default 8 workers, HF_HUB_DISABLE_XET=1 (plain HTTP, Xet bridge too)",
            _child("huggingface_hub", {"HF_HUB_DISABLE_XET": "1"}),
            _has("huggingface_hub"),
        ),
        Peer(
            "hf_transfer",
            "hf_transfer",
            "hf",
            "hf_transfer.download per file, as huggingface_hub 0.26 (8 files, max_files=100, 10 MB)",
            _child("hf_transfer"),
            _has("hf_transfer"),
        ),
        Peer(
            "aria2c",
            "aria2c (hfd.sh)",
            "hf",
            "aria2c -x16 -s16 -j5 -k1M on an input file of resolve URLs",
            _aria2c,
            lambda: shutil.which("aria2c") is not None,
        ),
        Peer(
            "hf_transfer-0.26",
            "hf_transfer (huggingface_hub 0.26)",
            "hf",
            "huggingface_hub 0.26.5 snapshot_download(), default 8 workers, HF_HUB_ENABLE_HF_TRANSFER=1",
            _child("huggingface_hub", {"HF_HUB_ENABLE_HF_TRANSFER": "1"}, python=hf026_python),
            _hf026_ready,
        ),
        Peer(
            "aria2c-hfd",
            "aria2c (hfd.sh defaults)",
            "hf",
            "hfd.sh's aria2c -x 4 -j 5 -s 4 -k 1M -c on an input file of resolve URLs",
            _aria2c_hfd,
            lambda: shutil.which("aria2c") is not None,
        ),
        Peer(
            "hubget-ms",
            "hubget (ModelScope)",
            "ms",
            "hubget download --source modelscope -q",
            _hubget("modelscope"),
        ),
        Peer(
            "modelscope",
            "modelscope",
            "ms",
            "snapshot_download(), defaults (4 files at once, 1 stream each)",
            _child("modelscope"),
            _has("modelscope"),
        ),
        Peer(
            "modelscope-parallel",
            "modelscope (parallel)",
            "ms",
            "snapshot_download(max_workers=8), PARALLEL_WORKERS=16, PARALLEL_THRESHOLD_MB=50",
            _child("modelscope", MS_PARALLEL_ENV, max_workers=8),
            _has("modelscope"),
        ),
        Peer(
            "hubget-clone",
            "hubget clone",
            "git",
            "hubget clone URL (git for history, hubget for LFS files)",
            _git_clone(True),
        ),
        Peer(
            "git",
            "git clone + git-lfs",
            "git",
            "git clone URL with git-lfs's smudge filter (git-lfs defaults)",
            _git_clone(False),
            lambda: shutil.which("git-lfs") is not None,
        ),
    )
}

BASELINE = {"hf": "hubget", "ms": "hubget-ms", "git": "hubget-clone"}
