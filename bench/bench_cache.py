"""`hubget cache verify` against huggingface_hub's `hf cache verify`, and `hubget cache ls` on 200 repos.

    python bench/bench_cache.py [--gb 3] [--repos 4] [--ls-repos 200] [--rounds 3] [--work DIR]

1. verify: a generated Hugging Face cache of ``--repos`` repos holding ``--gb`` GB in all (sharded
   ``.safetensors`` blobs named by sha256, small files by git blob sha1), served by `hubget serve
   --hf-cache` on 127.0.0.1 because `hf cache verify` checks against the hub's listing. Timed, warm
   page cache, in alternation, median of ``--rounds``:
   - the whole cache: one `hubget cache verify` against one `hf cache verify REPO` per repo (it
     verifies one repo revision per call);
   - one repo (the first): `hubget cache verify REPO` against `hf cache verify REPO`.
2. ls: a generated cache of ``--ls-repos`` repos (2 revisions, 8 files each): `hubget cache ls --json`
   (a whole process) and `hubget.cache.scan()` in-process, with `hf cache ls` and
   `scan_cache_dir()` beside them.

Every command is checked to have verified / listed everything (exit code, counts). The machine, its
load average before and after, and every time go to stdout as JSON (and ``--out`` if given).
A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "src"))

from tests.support.hfcache import commit_id, write_hf_revision  # noqa: E402
from tests.support.hubserver import hub_server  # noqa: E402

from bench.machine import describe  # noqa: E402

MB = 1024 * 1024
HF_CLI = "import sys; from huggingface_hub.cli.hf import main; sys.argv[0] = 'hf'; sys.exit(main())"


def write_blob_repo(cache: Path, name: str, shards: int, shard_bytes: int, seed: int) -> str:
    """One repo of ``shards`` safetensors-named blobs (streamed, sha256 computed on the way) plus
    small git-sha1 files; returns its commit."""
    commit = commit_id(f"bench-{name}")
    repo = cache / f"models--bench--{name}"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    block = os.urandom(8 * MB)
    for i in range(shards):
        digest = hashlib.sha256()
        tmp = blobs / f"shard{i}.tmp"
        with open(tmp, "wb") as f:
            header = f"{name}/{i}/{seed}".encode().ljust(64, b"\0")
            f.write(header)
            digest.update(header)
            left = shard_bytes - len(header)
            while left > 0:
                piece = memoryview(block)[: min(left, len(block))]
                f.write(piece)
                digest.update(piece)
                left -= len(piece)
        etag = digest.hexdigest()
        tmp.rename(blobs / etag)
        link = snapshot / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        os.symlink(os.path.relpath(blobs / etag, snapshot), link)
    small = {"config.json": b'{"model_type": "bench"}\n', "tokenizer.json": os.urandom(200_000)}
    write_hf_revision(cache, f"bench/{name}", commit, small, refs=("main",))
    return commit


def write_ls_cache(cache: Path, repos: int) -> None:
    for i in range(repos):
        files = {f"f{j}.json": b"%d-%d" % (i, j) for j in range(6)}
        files["model.safetensors"] = b"w" * (1000 + i)
        files["sub/tokenizer.json"] = b"t%d" % i
        write_hf_revision(cache, f"org/m{i:03d}", commit_id(f"{i}-a"), files, refs=("v1",))
        write_hf_revision(
            cache, f"org/m{i:03d}", commit_id(f"{i}-b"), {**files, "f0.json": b"new"}, refs=("main",)
        )


def timed(cmd: list[str], env: dict[str, str], ok_codes: tuple[int, ...] = (0,)) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok_codes:
        raise SystemExit(
            f"{' '.join(cmd[:6])}... exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return elapsed, proc.stdout


def warm(cache: Path) -> None:
    """Read every blob once so both tools hash from the page cache, not the disk."""
    for blob in cache.glob("*/blobs/*"):
        with open(blob, "rb") as f:
            while f.read(16 * MB):
                pass


def bench_verify(work: Path, gb: float, repos: int, rounds: int, env: dict[str, str]) -> dict[str, object]:
    cache = work / "verify-cache"
    shards = 4
    shard_bytes = int(gb * 1e9 / repos / shards)
    names = [f"r{i}" for i in range(repos)]
    if not cache.exists():
        for i, name in enumerate(names):
            write_blob_repo(cache, name, shards, shard_bytes, i)
    total = sum(p.stat().st_size for p in cache.glob("*/blobs/*"))
    warm(cache)
    empty = work / "empty-root"
    empty.mkdir(exist_ok=True)
    hubget = [
        sys.executable,
        "-m",
        "hubget",
        "cache",
        "verify",
        "--cache",
        "hf",
        "--hf-cache-dir",
        str(cache),
    ]
    hf = [sys.executable, "-c", HF_CLI, "cache", "verify", "--cache-dir", str(cache)]
    times: dict[str, list[float]] = {"hubget_all": [], "hf_all": [], "hubget_one": [], "hf_one": []}
    with hub_server(empty, hf_cache=cache) as url:
        run_env = {**env, "HF_ENDPOINT": url}
        for _ in range(rounds):
            elapsed, out = timed([*hubget, "--json"], run_env)
            report = json.loads(out.strip().splitlines()[-1])
            assert report["ok"] == report["files"] == repos * (shards + 2), report
            times["hubget_all"].append(elapsed)
            elapsed = 0.0
            for name in names:
                t, out = timed([*hf, f"bench/{name}"], run_env)
                assert "All checksums match" in out, out
                elapsed += t
            times["hf_all"].append(elapsed)
            t, _ = timed([*hubget, f"bench/{names[0]}"], run_env)
            times["hubget_one"].append(t)
            t, _ = timed([*hf, f"bench/{names[0]}"], run_env)
            times["hf_one"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    one_repo = total / repos
    return {
        "bytes": total,
        "repos": repos,
        "files": repos * (shards + 2),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "mb_per_s": {
            "hubget_all": round(total / 1e6 / med["hubget_all"], 1),
            "hf_all": round(total / 1e6 / med["hf_all"], 1),
            "hubget_one": round(one_repo / 1e6 / med["hubget_one"], 1),
            "hf_one": round(one_repo / 1e6 / med["hf_one"], 1),
        },
        "ratio_all": round(med["hf_all"] / med["hubget_all"], 2),
        "ratio_one_repo": round(med["hf_one"] / med["hubget_one"], 2),
    }


def bench_ls(work: Path, repos: int, rounds: int, env: dict[str, str]) -> dict[str, object]:
    from huggingface_hub import scan_cache_dir

    import hubget.cache

    cache = work / "ls-cache"
    if not cache.exists():
        write_ls_cache(cache, repos)
    times: dict[str, list[float]] = {
        "hubget_ls_process": [],
        "hubget_scan": [],
        "hf_ls_process": [],
        "scan_cache_dir": [],
    }
    hubget_cmd = [
        sys.executable,
        "-m",
        "hubget",
        "cache",
        "ls",
        "--cache",
        "hf",
        "--json",
        "--hf-cache-dir",
        str(cache),
    ]
    hf_cmd = [sys.executable, "-c", HF_CLI, "cache", "ls", "--cache-dir", str(cache), "--format", "json"]
    for _ in range(rounds):
        elapsed, out = timed(hubget_cmd, env)
        listed = json.loads(out.strip().splitlines()[-1])
        assert len(listed["repos"]) == repos
        times["hubget_ls_process"].append(elapsed)
        started = time.perf_counter()
        assert len(hubget.cache.scan(hf_cache_dir=cache, caches="hf").repos) == repos
        times["hubget_scan"].append(time.perf_counter() - started)
        elapsed, _ = timed(hf_cmd, env)
        times["hf_ls_process"].append(elapsed)
        started = time.perf_counter()
        assert len(scan_cache_dir(cache).repos) == repos
        times["scan_cache_dir"].append(time.perf_counter() - started)
    startup, _ = timed([sys.executable, "-c", "import hubget.cli.main"], env)
    return {
        "repos": repos,
        "revisions": 2 * repos,
        "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "python_startup_and_cli_import_s": round(startup, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=3.0, help="bytes of the verify cache, in GB")
    parser.add_argument("--repos", type=int, default=4, help="repos of the verify cache")
    parser.add_argument("--ls-repos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="keep the generated caches here (reused)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.mkdtemp(prefix="bench-cache-")
        work = Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    env["HF_HOME"] = str(work / "hf-home")
    load_before = os.getloadavg()
    try:
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": describe(),
            "load_before": [round(x, 2) for x in load_before],
            "verify": bench_verify(work, args.gb, args.repos, args.rounds, env),
            "ls": bench_ls(work, args.ls_repos, args.rounds, env),
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
