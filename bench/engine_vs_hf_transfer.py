"""One large file from a local nginx: `hubget download` (verifying sha256) against hf_transfer.

    python bench/engine_vs_hf_transfer.py [--size-mib 1024] [--rounds 5] [--dest tmpfs,disk]
        [--rss-size-mib 4096] [--out bench/results/large-nginx.json]

nginx (a server we did not write) serves a one-file repo as static files: the hub API answers
hubget's CLI asks for (repo info, tree) as JSON files, and the file itself with sendfile from the
page cache. Every client is its own process; a run is timed from the start of the process until
it exits (start-up included), and its CPU (user + sys) and peak RSS come from ``os.wait4``.

- ``hubget``: the real CLI, ``hubget download org/big --local-dir DEST --endpoint URL``; it verifies
  sha256 and fsyncs before the rename that puts the file in place.
- ``hf_transfer``: ``hf_transfer.download`` (as huggingface_hub calls it); verifies nothing. On
  ``disk`` it is followed by ``sync FILE`` (another process, counted in its time and CPU).
- ``hf_transfer+sha256``: the same, then ``openssl dgst -sha256`` of the file (then ``sync`` on disk).
- ``hubget --version``: start-up alone.

Destinations: ``tmpfs`` (/dev/shm) and ``disk`` (a folder beside the source, on the disk).
Clients alternate within each round (the order rotates), medians over the rounds; the
1-minute load average is recorded before every run. Prints a markdown table and writes JSON
with ratios (hf_transfer's wall time over hubget's: above 1 hubget is faster) and CPU seconds per
GiB. ``--rss-size-mib`` adds one hubget run of a file that large (peak RSS). Never used as a test.
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
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.procs import compile_hubget  # noqa: E402

GiB = 1024**3
REPO = "org/big"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TMPFS = Path("/dev/shm")

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
    default_type application/octet-stream;
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

HF_TRANSFER_CHILD = """
import sys
import hf_transfer
hf_transfer.download(sys.argv[1], sys.argv[2], max_files=100, chunk_size=10485760,
                     parallel_failures=3, max_retries=5)
"""


@dataclass
class Run:
    client: str
    dest: str
    round: int
    seconds: float
    cpu_user: float
    cpu_sys: float
    peak_rss: int
    load1: float

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def publish(www: Path, src: Path, size: int, digest: str) -> None:
    """The static hub: repo info, tree and resolve paths for a one-file repo backed by ``src``."""
    api = www / "api" / "models" / REPO
    (api / "revision").mkdir(parents=True, exist_ok=True)
    (api / "tree").mkdir(parents=True, exist_ok=True)
    info = {"id": REPO, "sha": COMMIT, "siblings": [{"rfilename": src.name}]}
    (api / "revision" / "main").write_text(json.dumps(info))
    entry = {"type": "file", "path": src.name, "size": size, "oid": "0" * 40}
    entry["lfs"] = {"oid": digest, "size": size, "pointerSize": 134}
    (api / "tree" / COMMIT).write_text(json.dumps([entry]))
    resolved = www / REPO / "resolve" / COMMIT / src.name
    resolved.parent.mkdir(parents=True, exist_ok=True)
    if not resolved.exists():
        os.link(src, resolved)


def hubget_argv() -> list[str]:
    """The `hubget` entry point beside this interpreter (what a user runs), else ``-m hubget``."""
    script = Path(sys.executable).with_name("hubget")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hubget"]


def run_chain(argvs: list[list[str]], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run processes one after another; wall time from the first start to the last exit, summed CPU."""
    user = sys_ = 0.0
    peak = 0
    t0 = time.perf_counter()
    for argv in argvs:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                sys.stderr.write(err.read().decode(errors="replace"))
                raise SystemExit(f"{argv[:4]} failed with {proc.returncode}")
        user += usage.ru_utime
        sys_ += usage.ru_stime
        peak = max(peak, usage.ru_maxrss * 1024)
    return time.perf_counter() - t0, user, sys_, peak


def client_argvs(client: str, url: str, endpoint: str, out: Path, dest_kind: str) -> list[list[str]]:
    target = out / "big.bin"
    if client == "hubget":
        return [[*hubget_argv(), "download", REPO, "--endpoint", endpoint, "--local-dir", str(out)]]
    if client == "hubget --version":
        return [[*hubget_argv(), "--version"]]
    chain = [[sys.executable, "-c", HF_TRANSFER_CHILD, url, str(target)]]
    if client == "hf_transfer+sha256":
        chain.append(["openssl", "dgst", "-sha256", str(target)])
    if dest_kind == "disk":
        chain.append(["sync", str(target), str(out)])
    return chain


def one_run(
    client: str, dest_kind: str, rnd: int, base: Path, url: str, endpoint: str, size: int, env: dict[str, str]
) -> Run:
    out = Path(tempfile.mkdtemp(dir=base, prefix="run-"))
    try:
        load1 = os.getloadavg()[0]
        seconds, user, sys_, peak = run_chain(client_argvs(client, url, endpoint, out, dest_kind), env)
        if client != "hubget --version":
            got = (out / "big.bin").stat().st_size
            if got != size:
                raise SystemExit(f"{client}: wrong size {got}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return Run(client, dest_kind, rnd, seconds, user, sys_, peak, load1)


def summarize(runs: list[Run], size: int) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in runs:
        table.setdefault(r.dest, {}).setdefault(r.client, {})
    for dest, clients in table.items():
        for client in clients:
            mine = [r for r in runs if r.dest == dest and r.client == client]
            cpu = statistics.median(r.cpu for r in mine)
            gib = size / GiB if client != "hubget --version" else 1.0
            clients[client] = {
                "seconds": statistics.median(r.seconds for r in mine),
                "cpu_user": statistics.median(r.cpu_user for r in mine),
                "cpu_sys": statistics.median(r.cpu_sys for r in mine),
                "cpu": cpu,
                "cpu_per_gib": cpu / gib,
                "peak_rss_mb": max(r.peak_rss for r in mine) / 1e6,
                "load1_median": statistics.median(r.load1 for r in mine),
                "runs": len(mine),
            }
    return table


def ratios(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for dest, clients in table.items():
        hub = clients.get("hubget")
        if hub is None:
            continue
        out[dest] = {}
        for peer in ("hf_transfer", "hf_transfer+sha256"):
            if peer in clients:
                out[dest][f"speed_vs_{peer}"] = clients[peer]["seconds"] / hub["seconds"]
                out[dest][f"cpu_per_gib_vs_{peer}"] = hub["cpu_per_gib"] / clients[peer]["cpu_per_gib"]
    return out


def markdown(table: dict[str, dict[str, dict[str, float]]], rat: dict[str, dict[str, float]]) -> str:
    lines = [
        "| dest | client | wall s | CPU s (user+sys) | CPU s/GiB | peak RSS MB | load1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for dest, clients in table.items():
        for client, m in clients.items():
            lines.append(
                f"| {dest} | {client} | {m['seconds']:.2f} | {m['cpu']:.2f} ({m['cpu_user']:.2f}+"
                f"{m['cpu_sys']:.2f}) | {m['cpu_per_gib']:.2f} | {m['peak_rss_mb']:.0f} | "
                f"{m['load1_median']:.2f} |"
            )
    lines.append("")
    for dest, r in rat.items():
        parts = ", ".join(f"{k} {v:.2f}x" for k, v in r.items())
        lines.append(f"- {dest}: {parts}")
    return "\n".join(lines)


def start_nginx(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx_bin, "-c", str(conf), "-p", str(root)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def warm(path: Path) -> None:
    with open(path, "rb") as f:  # in the page cache, so no client pays for the first read
        while f.read(1 << 24):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dest", default="tmpfs,disk", help="comma-separated: tmpfs, disk")
    ap.add_argument(
        "--clients",
        default="hubget,hf_transfer,hf_transfer+sha256,hubget --version",
        help="comma-separated subset of: hubget, hf_transfer, hf_transfer+sha256, hubget --version",
    )
    ap.add_argument("--rss-size-mib", type=int, default=0, help="also one hubget run of this size (RSS)")
    ap.add_argument("--workdir", default="/tmp/hubget-bench-engine")
    ap.add_argument("--out", default="", help="write the JSON report here")
    args = ap.parse_args()
    compile_hubget()

    root = Path(args.workdir)
    for sub in ("www", "tmp", "src"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    size = args.size_mib * 1024 * 1024
    src = root / "src" / "big.bin"
    digest = make_file(src, size)
    publish(root / "www", src, size, digest)
    env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_TOKEN", None)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    dests = [d.strip() for d in args.dest.split(",") if d.strip()]
    bases = {"tmpfs": TMPFS / "hubget-bench", "disk": root / "dest"}
    nginx, endpoint = start_nginx(root)
    url = f"{endpoint}/{REPO}/resolve/{COMMIT}/big.bin"
    runs: list[Run] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        warm(src)
        for rnd in range(args.rounds):
            for dest in dests:
                bases[dest].mkdir(parents=True, exist_ok=True)
                order = clients[rnd % len(clients) :] + clients[: rnd % len(clients)]
                for client in order:
                    run = one_run(client, dest, rnd, bases[dest], url, endpoint, size, env)
                    runs.append(run)
                    print(
                        f"round {rnd + 1} {dest:5s} {client:20s} {run.seconds:6.2f} s  CPU {run.cpu:5.2f} s "
                        f"({run.cpu_user:.2f}+{run.cpu_sys:.2f})  RSS {run.peak_rss / 1e6:4.0f} MB  "
                        f"load {run.load1:.2f}",
                        flush=True,
                    )
        big: dict[str, float] = {}
        if args.rss_size_mib:
            bsize = args.rss_size_mib * 1024 * 1024
            bsrc = root / "src" / "huge" / "big.bin"
            bsrc.parent.mkdir(exist_ok=True)
            bdigest = make_file(bsrc, bsize)
            publish(root / "www" / "huge", bsrc, bsize, bdigest)
            bases["disk"].mkdir(parents=True, exist_ok=True)
            r = one_run("hubget", "disk", 0, bases["disk"], url, f"{endpoint}/huge", bsize, env)
            big = {"size_bytes": bsize, "seconds": r.seconds, "cpu": r.cpu, "peak_rss_mb": r.peak_rss / 1e6}
            big["load1"] = r.load1
            mb = r.peak_rss / 1e6
            print(f"hubget {args.rss_size_mib} MiB on disk: {r.seconds:.2f} s, peak RSS {mb:.0f} MB")
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
        shutil.rmtree(bases["tmpfs"], ignore_errors=True)
    table = summarize(runs, size)
    rat = ratios(table)
    print()
    print(markdown(table, rat))
    report = {
        "started": started,
        "size_bytes": size,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "medians": table,
        "ratios": rat,
        "large_file_rss": big,
        "runs": [{**asdict(r), "cpu": r.cpu} for r in runs],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    else:
        print(json.dumps({"medians": table, "ratios": rat, "large_file_rss": big}, indent=1))


if __name__ == "__main__":
    main()
