"""Xet downloads from the hub + CAS replicas: hubget's native path against hf_xet (Rust) and against
huggingface_hub with Xet on. Decides whether hf_xet is worth keeping as a backend beside the native path.

    python bench/xet_vs_hf_xet.py [--size-mib 256] [--rounds 3] [--cap-mbps 0]

The replicas (tests/support/hubreplica.py, casreplica.py) run in their own process, filled by hf_xet
uploading a weights-like file (BG4+LZ4 chunks) and a random one (stored chunks). Each client runs in
its own process (peak RSS from wait4) into a fresh folder. hubget's time includes the sha256
verification and fsync of every file; hf_xet's does not (it checks chunk lengths only), and
huggingface_hub verifies nothing after hf_xet either. ``--cap-mbps`` caps every transfer connection
(as CDNs do). Prints seconds and MB/s per run, medians, ratios and the load average. Never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.procs import compile_hubget  # noqa: E402

MiB = 1024 * 1024

SERVER = """
import json, os, sys
sys.path.insert(0, {root!r})
from tests.support.casreplica import CasReplica, publish, weights_like
from tests.support.hubreplica import HubReplica, make_repo
size = {size}
files = {{"weights.safetensors": weights_like(size, seed=1), "random.bin": os.urandom(size // 2),
          "config.json": b"{{}}"}}
hub, cas = HubReplica(limits=None).start(), CasReplica(rate_per_conn={cap} or None).start()
repo = publish(hub, cas, make_repo("bench/xet", files))
xorb_bytes = sum(len(x.data) for x in cas.xorbs.values())
listed = {{p: [f.xet_hash, f.size, f.sha256] for p, f in repo.files.items() if f.xet_hash}}
print(json.dumps({{"hub": hub.hub_url, "cas": cas.cas_url, "xorb_bytes": xorb_bytes, "files": listed}}),
      flush=True)
sys.stdin.read()
"""

HUBGET = """
import json, sys, time
import hubget
t0 = time.perf_counter()
hubget.snapshot_download("bench/xet", endpoint=sys.argv[1], cache_dir=sys.argv[2], token=False)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

HF_XET = """
import json, sys, time, urllib.request
import hf_xet
hub, dest, files = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
with urllib.request.urlopen(f"{hub}/api/models/bench/xet/xet-read-token/main") as r:
    tok = json.load(r)
session = hf_xet.XetSession(hf_xet.XetConfig().with_config({"telemetry.enabled": False}))
with session.new_file_download_group(endpoint=tok["casUrl"], token=tok["accessToken"],
                                     token_expiry_unix_secs=tok["exp"]) as group:
    for name, (xet_hash, size, _) in files.items():
        group.start_download_file(hf_xet.XetFileInfo(xet_hash, size), f"{dest}/{name}")
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

HF_HUB = """
import json, sys, time
from huggingface_hub import snapshot_download
t0 = time.perf_counter()
snapshot_download("bench/xet", cache_dir=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

CLIENTS = {"hubget": HUBGET, "hf_xet": HF_XET, "huggingface_hub+xet": HF_HUB}


def run_client(name: str, code: str, hub: str, files: dict, dest: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub, HF_HUB_DISABLE_TELEMETRY="1", HF_XET_CACHE=str(dest / "xet-cache"))
    env.update(HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1")
    before = os.getloadavg()[0]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, hub, str(dest), json.dumps(files)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if status != 0:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(rss_mib=usage.ru_maxrss / 1024, cpu_s=usage.ru_utime + usage.ru_stime, load=before)
    return result


def check(dest: Path, files: dict) -> None:
    import hashlib

    for name, (_, _size, sha) in files.items():
        found = [p for p in dest.rglob(name) if p.is_file()]
        assert found, f"{name} missing under {dest}"
        h = hashlib.sha256()
        with open(found[0], "rb") as f:
            while block := f.read(8 * MiB):
                h.update(block)
        assert h.hexdigest() == sha, f"{name}: wrong bytes"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cap-mbps", type=float, default=0.0, help="per-connection cap, MB/s (0: none)")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    args = ap.parse_args()
    compile_hubget()
    size = args.size_mib * MiB
    cap = int(args.cap_mbps * 1e6)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(root=str(ROOT), size=size, cap=cap)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    info = json.loads(server.stdout.readline())  # type: ignore[union-attr]
    total = sum(v[1] for v in info["files"].values())
    print(
        f"files: {total / 1e6:.0f} MB, xorbs: {info['xorb_bytes'] / 1e6:.0f} MB; "
        f"cap {args.cap_mbps} MB/s per connection"
    )
    print(f"cpus: {os.cpu_count()}, load before: {os.getloadavg()}")
    runs: dict[str, list[dict]] = {c: [] for c in args.clients.split(",")}
    try:
        for rnd in range(args.rounds):
            for name in runs:
                dest = Path(tempfile.mkdtemp(prefix=f"xetbench-{name}-"))
                try:
                    r = run_client(name, CLIENTS[name], info["hub"], info["files"], dest)
                    check(dest, info["files"])
                finally:
                    shutil.rmtree(dest, ignore_errors=True)
                r["mbps"] = total / r["seconds"] / 1e6
                runs[name].append(r)
                print(
                    f"round {rnd} {name:22} {r['seconds']:6.2f} s {r['mbps']:7.0f} MB/s "
                    f"cpu {r['cpu_s']:5.1f} s rss {r['rss_mib']:6.0f} MiB load {r['load']:.2f}"
                )
                time.sleep(1)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    medians = {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()}
    base = medians.get("hubget")
    for n, m in medians.items():
        ratio = f"  x{m / base:.2f} of hubget's time" if base else ""
        print(f"median {n:22} {m:6.2f} s {total / m / 1e6:7.0f} MB/s{ratio}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
