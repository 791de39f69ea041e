"""First listing of a plain-folder repo of many small files: the time `hubget serve` takes to hash
them (git blob sha1 for the Hugging Face tree, sha256 for ModelScope) and remember the hashes.

    python bench/bench_listing.py [--files 2000] [--size 1024] [--rounds 3]

Each round builds a fresh root (empty hash cache), then times, in-process: the HF listing
(``FolderRepo.list_files``), the ModelScope listing of the same files (adds sha256 of each), and a
second listing after a new Store is opened on the same root (hashes read back from SQLite).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from hubget.server.ms_routes import MsApi  # noqa: E402
from hubget.server.store import Store  # noqa: E402


def build(root: Path, files: int, size: int) -> None:
    repo = root / "models" / "org" / "many"
    for i in range(files):
        path = repo / f"shard{i % 20:02d}" / f"file{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def one_round(files: int, size: int, base: Path | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-listing-", dir=base) as tmp:
        root = Path(tmp)
        build(root, files, size)
        store = Store(root)
        repo = store.find("model", "org/many")
        t0 = time.perf_counter()
        commit = repo.resolve(None)
        entries = repo.list_files(commit)
        hf = time.perf_counter() - t0
        assert len(entries) == files
        t0 = time.perf_counter()
        _, listed = MsApi(store).listing(repo, None, "", True)
        ms = time.perf_counter() - t0
        assert sum(1 for e in listed if e["Type"] == "blob") == files
        store.close()
        again = Store(root)
        t0 = time.perf_counter()
        repo2 = again.find("model", "org/many")
        MsApi(again).listing(repo2, None, "", True)
        warm = time.perf_counter() - t0
        again.close()
        return {"hf_first_s": hf, "ms_first_s": ms, "reopened_ms_s": warm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where the roots are built (default: temp)")
    args = ap.parse_args()
    rounds = [one_round(args.files, args.size, args.dir) for _ in range(args.rounds)]
    result = {
        "files": args.files,
        "file_bytes": args.size,
        **{key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]},
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
