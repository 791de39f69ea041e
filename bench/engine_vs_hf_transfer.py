"""One large file from a local nginx: hubget's engine (verifying sha256) against hf_transfer.

    python bench/engine_vs_hf_transfer.py [--size-mib 1024] [--rounds 2] [--connections 8]

Each client runs in its own process so its peak RSS is its own (from wait4). nginx serves the
file with sendfile from the page cache; the destination is a fresh folder on the same disk.
hf_transfer does not verify anything; hubget's time includes sha256 verification and fsync.
Prints MB/s per run, the median per client and the ratio. Never used as a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NGINX_CONF = """
daemon off;
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""

HUBGET_CHILD = """
import json, sys, time
from pathlib import Path
from hubget.transfer.engine import Engine
from hubget.transfer.jobs import FileJob
url, dest, digest = sys.argv[1], Path(sys.argv[2]), sys.argv[4]
size, connections = int(sys.argv[3]), int(sys.argv[5])
t0 = time.perf_counter()
(r,) = Engine(connections=connections, max_workers=1).run([FileJob(url, dest, size, digest)])
print(json.dumps({"seconds": time.perf_counter() - t0, "fetched": r.bytes_fetched}))
"""

HF_TRANSFER_CHILD = """
import json, sys, time
import hf_transfer
url, dest = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
hf_transfer.download(url, dest, max_files=100, chunk_size=10485760, parallel_failures=3, max_retries=5)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_file(path: Path, size: int) -> str:
    """Random-looking content written once (kept between benchmark runs), and its sha256."""
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB
    h = hashlib.sha256()
    if path.exists() and path.stat().st_size == size:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        return h.hexdigest()
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            chunk = hashlib.sha256(i.to_bytes(8, "little")).digest() + block[32:]
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def run_child(argv: list[str]) -> tuple[dict, int]:
    """Run a client process; returns its JSON report and its peak RSS in bytes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed with {proc.returncode}")
    return json.loads(out), usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workdir", default="/tmp/hubget-bench-engine")
    args = ap.parse_args()

    root = Path(args.workdir)
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    size = args.size_mib * 1024 * 1024
    src = root / "www" / "big.bin"
    digest = make_file(src, size)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)])
    url = f"http://127.0.0.1:{port}/big.bin"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        results: dict[str, list[float]] = {"hubget": [], "hf_transfer": []}
        rss: dict[str, int] = {"hubget": 0, "hf_transfer": 0}
        with open(src, "rb") as f:  # warm the page cache so neither client pays for the first read
            while f.read(1 << 24):
                pass
        for rnd in range(args.rounds):
            for name in ("hubget", "hf_transfer") if rnd % 2 == 0 else ("hf_transfer", "hubget"):
                out = Path(tempfile.mkdtemp(dir=root))
                dest = out / "big.bin"
                if name == "hubget":
                    argv = [
                        sys.executable,
                        "-c",
                        HUBGET_CHILD,
                        url,
                        str(dest),
                        str(size),
                        digest,
                        str(args.connections),
                    ]
                else:
                    argv = [sys.executable, "-c", HF_TRANSFER_CHILD, url, str(dest)]
                report, peak = run_child(argv)
                if dest.stat().st_size != size:
                    raise SystemExit(f"{name}: wrong size {dest.stat().st_size}")
                mbps = size / report["seconds"] / 1e6
                results[name].append(mbps)
                rss[name] = max(rss[name], peak)
                print(
                    f"round {rnd + 1} {name:12s} {mbps:8.0f} MB/s  peak RSS {peak / 1e6:6.0f} MB", flush=True
                )
                shutil.rmtree(out)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(
            json.dumps(
                {
                    "size_bytes": size,
                    "median_MBps": med,
                    "peak_rss_bytes": rss,
                    "ratio_hubget_over_hf_transfer": med["hubget"] / med["hf_transfer"],
                    "loadavg": os.getloadavg(),
                },
                indent=1,
            )
        )
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()


if __name__ == "__main__":
    main()
