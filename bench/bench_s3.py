"""Staging into an object store, measured: `hubget download --to s3://` against `hubget download
--local-dir` of the same repo from the same `hubget serve`, and the S3 clients side by side.

    python bench/bench_s3.py [--size-mb 1024] [--rounds 2]

SeaweedFS (`weed mini`) runs on 127.0.0.1 on the same cores, so absolute numbers say little; the
ratios between rows of one run are the point. Each hubget run is a fresh process whose RSS is
sampled every 50 ms. The client rows upload ``--size-mb`` from memory in 16 MiB parts, 8 at once:
boto3's low-level multipart calls (what hubget uses) and obstore's ``put`` (its own multipart),
each in a child process whose CPU time is read from ``resource.getrusage``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.hubserver import hub_server  # noqa: E402
from tests.support.seaweed import seaweed_s3  # noqa: E402

from bench.bench_serve import RssSampler, make_file  # noqa: E402

BUCKET = "models"
CLIENT_SCRIPT = r"""
import json, os, resource, sys, time
size, which, endpoint = int(sys.argv[1]), sys.argv[2], sys.argv[3]
PART, WORKERS = 16 * 1024 * 1024, 8
block = os.urandom(PART)
key = f"clients/{which}-{time.time_ns()}"
start = time.perf_counter()
if which == "boto3":
    from concurrent.futures import ThreadPoolExecutor
    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path",
                      "payload_signing_enabled": False},
                      max_pool_connections=WORKERS + 2))
    uid = s3.create_multipart_upload(Bucket="models", Key=key)["UploadId"]
    n = -(-size // PART)
    def part(i):
        body = block[: min(PART, size - i * PART)]
        return s3.upload_part(Bucket="models", Key=key, UploadId=uid, PartNumber=i + 1, Body=body)["ETag"]
    with ThreadPoolExecutor(WORKERS) as pool:
        etags = list(pool.map(part, range(n)))
    s3.complete_multipart_upload(Bucket="models", Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
else:
    import obstore
    from obstore.store import S3Store
    store = S3Store("models", endpoint=endpoint, region=os.environ["AWS_REGION"], allow_http=True,
                    virtual_hosted_style_request=False)
    def chunks():
        left = size
        while left > 0:
            yield block[: min(PART, left)]
            left -= PART
    obstore.put(store, key, chunks(), chunk_size=PART, max_concurrency=WORKERS)
elapsed = time.perf_counter() - start
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": elapsed, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}))
"""


def run_hubget(args: list[str], env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-m", "hubget", *args], env=env, stdout=subprocess.DEVNULL)
    with RssSampler([proc]) as rss:
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"hubget {' '.join(args)} exited with {code}")
    return {"seconds": time.perf_counter() - start, "rss_mb": max(rss.samples or [0]) / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    size = args.size_mb * 1024 * 1024
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hubget-bench-s3-") as tmp_name:
        tmp = Path(tmp_name)
        make_file(tmp / "root/models/org/big/model.safetensors", size)
        for i in range(20):
            (tmp / f"root/models/org/big/small-{i}.json").write_bytes(os.urandom(20_000))
        with seaweed_s3(tmp / "seaweed", buckets=[BUCKET]) as s3, hub_server(tmp / "root") as hub:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_", "HUBGET_"))}
            env.update(s3.env, HF_ENDPOINT=hub, HF_HOME=str(tmp / "hf"))
            for r in range(args.rounds):
                rows.setdefault("hubget --to s3:// (8 MiB parts, 8 in flight)", []).append(
                    run_hubget(
                        ["download", "org/big", "--to", f"s3://{BUCKET}/r{r}/models/org/big", "-q"], env
                    )
                )
                rows.setdefault("hubget --to s3:// --max-connections 16", []).append(
                    run_hubget(
                        ["download", "org/big", "--to", f"s3://{BUCKET}/c{r}/models/org/big", "-q"]
                        + ["--max-connections", "16"],
                        env,
                    )
                )
                rows.setdefault("hubget --local-dir (same repo, same hub)", []).append(
                    run_hubget(["download", "org/big", "--local-dir", str(tmp / f"out{r}"), "-q"], env)
                )
                rows.setdefault("hubget --to s3:// rerun (all present)", []).append(
                    run_hubget(
                        ["download", "org/big", "--to", f"s3://{BUCKET}/r{r}/models/org/big", "-q"], env
                    )
                )
                for which in ("boto3", "obstore"):
                    out = subprocess.run(
                        [sys.executable, "-c", CLIENT_SCRIPT, str(size), which, s3.url],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    rows.setdefault(f"client {which}: {args.size_mb} MiB from memory", []).append(
                        json.loads(out.stdout.strip().splitlines()[-1])
                    )
    total = size + 20 * 20_000
    print(f"| run | MB/s (median of {args.rounds}) | seconds | peak RSS MB | CPU s |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        secs = statistics.median(r["seconds"] for r in runs)
        moved = size if name.startswith("client") else total
        rate = f"{moved / secs / 1e6:.0f}" if "rerun" not in name else "-"
        cpu = f"{statistics.median(r['cpu'] for r in runs):.1f}" if "cpu" in runs[0] else ""
        print(f"| {name} | {rate} | {secs:.2f} | {max(r['rss_mb'] for r in runs):.0f} | {cpu} |")


if __name__ == "__main__":
    main()
