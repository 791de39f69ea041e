"""`hubget demo`: the main job end to end with no internet — a local hub, a generated model,
a verified parallel download into the Hugging Face cache, and huggingface_hub reading it offline."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from hubget.errors import HubgetError
from hubget.progress import human_bytes, make_progress

REPO_ID = "demo-org/demo-chat-7b"


def _start_server(root: Path) -> tuple[str, subprocess.Popen[str]]:
    """`hubget serve` in its own process (so the hub and the downloader don't share one GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubget", "serve", str(root), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints its URL once it listens, or exits
    marker = "listening on "
    if marker not in line:
        proc.kill()
        raise HubgetError(f"the demo hub did not start (exit code {proc.wait()})")
    return line.split(marker, 1)[1].strip(), proc


def _warm_up(url: str) -> None:
    """The hub hashes a new repo's files on the first listing; do it before the clock starts."""
    from hubget.transfer.http import HttpClient

    HttpClient().request("GET", f"{url}/api/models/{REPO_ID}/tree/main?recursive=true")


def _stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def demo(
    size_mb: Annotated[
        int, typer.Option(min=1, max=65536, help="Total size of the generated weights.")
    ] = 256,
    shards: Annotated[int, typer.Option(min=1, max=64, help="Number of safetensors shards.")] = 4,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the hub and cache here (default: a temp folder, removed).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Offline demo: start a local hub with a generated sharded model and download it.

    Shows the whole main job without the internet: `hubget serve` publishes a repo shaped like
    internlm2-chat-7b (scaled down), hubget downloads it with many connections into a
    Hugging Face cache, verifies every sha256, and huggingface_hub then finds it offline.
    """
    from hubget.api import snapshot_download
    from hubget.demo_repo import make_llm_like_repo

    tmp = None if workdir else tempfile.TemporaryDirectory(prefix="hubget-demo-")
    base = workdir or Path(tmp.name)  # type: ignore[union-attr]
    try:
        hub_root = base / "hub"
        repo = hub_root / "models" / REPO_ID
        if not repo.exists():
            print(f"generating {REPO_ID}: {shards} shard(s), {size_mb} MB in {repo}")
            make_llm_like_repo(repo, shards=shards, shard_bytes=max(1, size_mb * 1024 * 1024 // shards))
        url, server = _start_server(hub_root)
        cache = base / "hf-cache"
        progress = make_progress(quiet)
        try:
            print(f"local hub (hubget serve) at {url}; indexing (hashing) the repo once", flush=True)
            _warm_up(url)
            started = time.monotonic()
            path = snapshot_download(REPO_ID, endpoint=url, cache_dir=cache, token=False, progress=progress)
        finally:
            progress.end()
            _stop_server(server)
        elapsed = max(time.monotonic() - started, 1e-6)
        files = [p for p in Path(path).rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        print(
            f"downloaded and verified {len(files)} files, {human_bytes(total)} "
            f"in {elapsed:.1f} s ({human_bytes(total / elapsed)}/s)"
        )
        _check_with_huggingface_hub(cache, path)
        if tmp is None:
            print(path)
        else:
            print("the demo's files are removed now; pass --workdir DIR to keep them")
    finally:
        if tmp is not None:
            tmp.cleanup()


def _check_with_huggingface_hub(cache: Path, path: str) -> None:
    try:
        import huggingface_hub
    except ImportError:
        print("(huggingface_hub is not installed: skipping the offline read-back)")
        return
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    found = huggingface_hub.snapshot_download(REPO_ID, cache_dir=cache, local_files_only=True)
    same = Path(found).resolve() == Path(path).resolve()
    print(
        f"huggingface_hub {huggingface_hub.__version__} finds it offline: {'yes' if same else 'NO'} ({found})"
    )
    if not same:
        raise HubgetError("huggingface_hub did not find the snapshot hubget wrote")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
