"""Hub -> S3, measured against the usual two steps: `hubget download REPO --to s3://` (no local copy)
against `hf download REPO --local-dir D` (huggingface_hub's CLI) followed by an `aws s3 cp --recursive`
style upload of D (boto3 ``upload_file`` with a ``TransferConfig``: 8 MiB parts, 10 in flight, the
AWS CLI's defaults), in the same run, from the same `hubget serve`, into the same SeaweedFS.

    python bench/bench_s3_vs_hf.py [--size-mb 1536] [--shards 4] [--rounds 1]

Per run: wall time, CPU seconds of the run's processes (user + system), peak local disk (the bytes
under the run's own work folder: HF_HOME, the download folder, the cwd; sampled every 0.1 s), peak
RSS of the process tree (sampled every 50 ms; for the two-step run the larger of the two steps), and
``os.getloadavg()`` before and after.
The store and the hub share the machine's cores with the client, so absolute numbers say little;
the ratio between the rows of one run is the point.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.hubserver import hub_server  # noqa: E402
from tests.support.seaweed import seaweed_s3  # noqa: E402

from bench.bench_serve import make_file  # noqa: E402
from bench.procs import compile_hubget  # noqa: E402

BUCKET = "models"
REPO = "org/big"
UPLOAD_SCRIPT = r"""
import os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
folder, prefix = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}, max_pool_connections=20))
cfg = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=10)
files = []
for root, dirs, names in os.walk(folder):
    dirs[:] = [d for d in dirs if d != ".cache"]
    files += [os.path.join(root, n) for n in names]
def one(path):
    s3.upload_file(path, "models", prefix + "/" + os.path.relpath(path, folder), Config=cfg)
# aws s3 cp --recursive: files one after another through the transfer manager's thread pool
for path in sorted(files, key=os.path.getsize, reverse=True):
    one(path)
"""


def disk_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Sampler:
    """Peak RSS of a process tree and peak disk use of a folder while it runs."""

    def __init__(self, proc: psutil.Process, folder: Path) -> None:
        self.proc, self.folder = proc, folder
        self.rss = 0
        self.disk = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss, daemon=True), threading.Thread(target=self._disk)]

    def _rss(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.rss = max(self.rss, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def _disk(self) -> None:
        while not self._stop.is_set():
            self.disk = max(self.disk, disk_bytes(self.folder))
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.disk = max(self.disk, disk_bytes(self.folder))


def run(cmd: list[str], env: dict[str, str], work: Path) -> dict[str, float]:
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with Sampler(proc, work) as s:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {err.decode()[-2000:]}")
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "seconds": time.perf_counter() - start,
        "rss_mb": s.rss / 1e6,
        "disk_mb": s.disk / 1e6,
        "cpu": cpu,
    }


def hubget_run(env: dict[str, str], work: Path, prefix: str, *extra: str) -> dict[str, float]:
    return run([sys.executable, "-m", "hubget", "download", REPO, "--to", prefix, "-q", *extra], env, work)


def hubget_wide(env: dict[str, str], work: Path, prefix: str) -> dict[str, float]:
    return hubget_run(env, work, prefix, "--part-size", "16", "--max-connections", "12")


def hf_then_boto3(env: dict[str, str], work: Path, prefix: str) -> dict[str, float]:
    hf = run(["hf", "download", REPO, "--local-dir", str(work / "dl")], env, work)
    up = run([sys.executable, "-c", UPLOAD_SCRIPT, str(work / "dl"), prefix], env, work)
    return {
        "seconds": hf["seconds"] + up["seconds"],
        "rss_mb": max(hf["rss_mb"], up["rss_mb"]),
        "disk_mb": max(hf["disk_mb"], up["disk_mb"]),
        "cpu": hf["cpu"] + up["cpu"],
        "hf_seconds": hf["seconds"],
        "upload_seconds": up["seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=1536, help="Bytes of weights in the repo (MiB).")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    compile_hubget()
    size = args.size_mb * 1024 * 1024
    runners = {"hubget": hubget_run, "hubget 16 MiB x 12": hubget_wide, "hf+boto3": hf_then_boto3}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    with tempfile.TemporaryDirectory(prefix="hubget-bench-s3hf-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "root/models" / REPO
        for i in range(args.shards):
            shard = repo / f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors"
            make_file(shard, size // args.shards)
            with open(shard, "r+b") as f:
                f.write(os.urandom(4096))  # every shard its own bytes
        for name in ("config.json", "tokenizer.json", "generation_config.json"):
            (repo / name).write_bytes(os.urandom(50_000))
        with seaweed_s3(tmp / "seaweed", buckets=[BUCKET]) as s3, hub_server(tmp / "root") as hub:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_", "HUBGET_"))}
            base.update(s3.env, HF_ENDPOINT=hub, HF_HUB_DISABLE_TELEMETRY="1")
            for r in range(args.rounds):
                for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
                    work = tmp / f"work-{list(runners).index(name)}-{r}"
                    work.mkdir()
                    env = {**base, "HF_HOME": str(work / "hf")}
                    prefix = f"s3://{BUCKET}/run-{len(rows[name])}-{list(runners).index(name)}/models/{REPO}"
                    load_before = os.getloadavg()
                    out = runners[name](env, work, prefix)
                    out["load_before"] = load_before[0]
                    out["load_after"] = os.getloadavg()[0]
                    rows[name].append(out)
                    print(name, {k: round(v, 2) for k, v in out.items()}, flush=True)
                    subprocess.run(["rm", "-rf", str(work)], check=True)
    total = size + 150_000
    print(f"\n{args.size_mb} MiB in {args.shards} shards + 3 small files, {args.rounds} round(s)\n")
    print("| run | seconds | MB/s | CPU s | peak local disk MB | peak RSS MB | load 1 min (before / after) |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        secs = statistics.median(r["seconds"] for r in runs)
        extra = ""
        if name == "hf+boto3":
            hf_s = statistics.median(r["hf_seconds"] for r in runs)
            extra = f" (download {hf_s:.1f} + upload {secs - hf_s:.1f})"
        loads = ", ".join(f"{r['load_before']:.1f} / {r['load_after']:.1f}" for r in runs)
        print(
            f"| {name} | {secs:.1f}{extra} | {total / secs / 1e6:.0f} | "
            f"{statistics.median(r['cpu'] for r in runs):.0f} | "
            f"{max(r['disk_mb'] for r in runs):.0f} | {max(r['rss_mb'] for r in runs):.0f} | {loads} |"
        )
    h = statistics.median(r["seconds"] for r in rows["hubget"])
    b = statistics.median(r["seconds"] for r in rows["hf+boto3"])
    w = statistics.median(r["seconds"] for r in rows["hubget 16 MiB x 12"])
    print(f"\nhubget is {b / h:.2f}x faster ({b / w:.2f}x with 16 MiB parts x 12)")


if __name__ == "__main__":
    main()
