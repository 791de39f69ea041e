"""Throughput of `hubget serve` against nginx serving the same file in the same run, and the server's
memory while it serves.

    python bench/bench_serve.py [--size-mb 2048] [--readers 8] [--rounds 3] [--workers 2]

Each round, ``--readers`` curl processes each fetch one contiguous byte range (1/readers of the file)
from the server, all at once; the time until the last one finishes gives MB/s. hubget and nginx
alternate rounds so both see the same machine state; the file is read once first so both serve from
the page cache. hubget runs with ``--workers`` processes (default: one per core, as nginx's
``worker_processes auto``); its RSS (summed over the processes) is sampled every 50 ms while it serves.
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
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.hubserver import hub_server  # noqa: E402

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ default_type application/octet-stream; }}
    }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, tries: int = 50) -> None:
    """Until ``url`` answers (at most ``tries`` tenths of a second)."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


def make_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def parallel_ranges(url: str, size: int, readers: int) -> float:
    """Seconds for ``readers`` curls to fetch the file in ``readers`` ranges at once (bytes checked)."""
    step = size // readers
    ranges = [(i * step, size - 1 if i == readers - 1 else (i + 1) * step - 1) for i in range(readers)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}", "-r", f"{a}-{b}", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for a, b in ranges
    ]
    got = [int(p.communicate()[0] or 0) for p in procs]
    elapsed = time.perf_counter() - start
    if got != [b - a + 1 for a, b in ranges]:
        raise RuntimeError(f"short ranges from {url}: {got}")
    return elapsed


class RssSampler:
    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(sum(p.memory_info().rss for p in self.procs))
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def server_procs(port: int) -> list[psutil.Process]:
    """The processes of the server listening on ``port``: the first one found and its children
    (``--workers`` forks processes that share the listening socket)."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            main = psutil.Process(conn.pid)
            while main.parent() is not None and port in _listening_ports(main.parent()):
                main = main.parent()  # a worker was found first: start from the process that forked it
            return [main, *main.children()]
    raise RuntimeError(f"no process listens on {port}")


def _listening_ports(proc: psutil.Process) -> set[int]:
    try:
        return {c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        return set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=2048)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nginx-workers", default="auto")
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="hubget serve --workers (default: cores)"
    )
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        sys.exit("nginx is not installed")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=args.dir) as tmp_s:
        tmp = Path(tmp_s)
        tmp.chmod(0o755)  # nginx workers run as an unprivileged user when started by root
        root = tmp / "root"
        data = root / "models" / "bench" / "big"
        make_file(data / "big.bin", size)
        for folder in (root, root / "models", root / "models" / "bench", data):
            folder.chmod(0o755)
        port = free_port()
        (tmp / "nginx.conf").write_text(
            NGINX_CONF.format(workers=args.nginx_workers, tmp=tmp, port=port, root=data)
        )
        nginx_proc = subprocess.Popen([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        try:
            with hub_server(root, extra_args=["--workers", str(args.workers)]) as hub:
                hub_url = f"{hub}/bench/big/resolve/main/big.bin"
                nginx_url = f"http://127.0.0.1:{port}/big.bin"
                wait_for_http(nginx_url)
                t0 = time.perf_counter()
                urllib.request.urlopen(urllib.request.Request(hub_url, method="HEAD"), timeout=600).close()
                first_hash = time.perf_counter() - t0
                procs = server_procs(int(hub.rsplit(":", 1)[1]))
                baseline = sum(p.memory_info().rss for p in procs)
                parallel_ranges(nginx_url, size, args.readers)  # warm the page cache
                hub_times, nginx_times, peaks = [], [], []
                hub_cpu = nginx_cpu = 0.0
                nginx_procs = [psutil.Process(nginx_proc.pid), *psutil.Process(nginx_proc.pid).children()]
                for _ in range(args.rounds):
                    before = cpu_seconds(procs)
                    with RssSampler(procs) as rss:
                        hub_times.append(parallel_ranges(hub_url, size, args.readers))
                    hub_cpu += cpu_seconds(procs) - before
                    peaks.append(max(rss.samples, default=baseline))
                    before = cpu_seconds(nginx_procs)
                    nginx_times.append(parallel_ranges(nginx_url, size, args.readers))
                    nginx_cpu += cpu_seconds(nginx_procs) - before
        finally:
            nginx_proc.terminate()
            nginx_proc.wait(timeout=10)
    mb = size / 1e6
    hub_mbps = mb / statistics.median(hub_times)
    nginx_mbps = mb / statistics.median(nginx_times)
    result = {
        "file_mb": round(mb),
        "readers": args.readers,
        "hubget_workers": args.workers,
        "hubget_mb_s_rounds": [round(mb / t) for t in hub_times],
        "nginx_mb_s_rounds": [round(mb / t) for t in nginx_times],
        "rounds": args.rounds,
        "hubget_mb_s": round(hub_mbps),
        "nginx_mb_s": round(nginx_mbps),
        "ratio_hubget_to_nginx": round(hub_mbps / nginx_mbps, 3),
        "hubget_rss_baseline_mb": round(baseline / 1e6, 1),
        "hubget_rss_peak_mb": round(max(peaks) / 1e6, 1),
        "hubget_cpu_s_per_gb": round(hub_cpu / (args.rounds * size / 1e9), 3),
        "nginx_cpu_s_per_gb": round(nginx_cpu / (args.rounds * size / 1e9), 3),
        "first_request_hashing_s": round(first_hash, 2),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
