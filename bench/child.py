"""One peer's download, run as its own process so its CPU time and memory are its own.

    python -m bench.child PEER --endpoint URL --repo-id ID --repo-type model|dataset --dest DIR

Prints one JSON line ``{"path": folder with the files, "seconds": time after imports}`` last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

# huggingface_hub 0.26's constants for its hf_transfer path (file_download.http_get):
HF026_CHUNK_SIZE = 10 * 1024 * 1024  # constants.DOWNLOAD_CHUNK_SIZE
HF026_TRANSFER_CONCURRENCY = 100  # constants.HF_TRANSFER_CONCURRENCY, passed as max_files
HF026_MAX_WORKERS = 8  # snapshot_download's default max_workers


def run_huggingface_hub(args: argparse.Namespace) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(
        args.repo_id, repo_type=args.repo_type, endpoint=args.endpoint, cache_dir=args.dest
    )


def _hf_prefix(repo_type: str) -> str:
    return "datasets/" if repo_type == "dataset" else ""


def run_hf_transfer(args: argparse.Namespace) -> str:
    """What huggingface_hub 0.26 does with HF_HUB_ENABLE_HF_TRANSFER=1: list the repo, then 8 files at
    a time, each HEAD then (above 5 x 10 MB) one ``hf_transfer.download`` with 0.26's exact arguments,
    else one streamed GET. Size checked, no hash (as 0.26)."""
    import hf_transfer
    import requests

    session = requests.Session()
    kind = "datasets" if args.repo_type == "dataset" else "models"
    info = session.get(f"{args.endpoint}/api/{kind}/{args.repo_id}/revision/main", timeout=60)
    info.raise_for_status()
    files = [s["rfilename"] for s in info.json()["siblings"]]
    dest = Path(args.dest)

    def one(path: str) -> None:
        url = f"{args.endpoint}/{_hf_prefix(args.repo_type)}{args.repo_id}/resolve/main/{quote(path)}"
        head = session.head(url, headers={"Accept-Encoding": "identity"}, allow_redirects=False, timeout=10)
        head.raise_for_status()
        size = int(head.headers.get("X-Linked-Size") or head.headers["Content-Length"])
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".incomplete")
        if size > 5 * HF026_CHUNK_SIZE:
            hf_transfer.download(
                url=url,
                filename=str(tmp),
                max_files=HF026_TRANSFER_CONCURRENCY,
                chunk_size=HF026_CHUNK_SIZE,
                headers={},
                parallel_failures=3,
                max_retries=5,
            )
        else:
            with session.get(url, stream=True, timeout=10) as r, open(tmp, "wb") as f:
                r.raise_for_status()
                for chunk in r.iter_content(chunk_size=HF026_CHUNK_SIZE):
                    f.write(chunk)
        if tmp.stat().st_size != size:
            raise OSError(f"{path}: size {tmp.stat().st_size} != {size}")
        os.replace(tmp, target)

    with ThreadPoolExecutor(HF026_MAX_WORKERS) as pool:
        for _ in pool.map(one, files):
            pass
    return str(dest)


def run_modelscope(args: argparse.Namespace) -> str:
    """``modelscope.snapshot_download`` as a user calls it; ``--max-workers`` only in the parallel variant
    (its parallel range switches come in through the environment, set by the harness)."""
    os.environ["MODELSCOPE_ENDPOINT"] = args.endpoint
    extra = {"max_workers": args.max_workers} if args.max_workers else {}
    if args.repo_type == "dataset":
        from modelscope.hub.snapshot_download import dataset_snapshot_download

        return dataset_snapshot_download(args.repo_id, cache_dir=args.dest, **extra)
    from modelscope import snapshot_download

    return snapshot_download(args.repo_id, cache_dir=args.dest, **extra)


RUNNERS = {
    "huggingface_hub": run_huggingface_hub,
    "hf_transfer": run_hf_transfer,
    "modelscope": run_modelscope,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("peer", choices=sorted(RUNNERS))
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--repo-type", default="model")
    parser.add_argument("--dest", required=True)
    parser.add_argument("--max-workers", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    path = RUNNERS[args.peer](args)
    print(json.dumps({"path": str(path), "seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
