"""Pull-through mirrors, cold: N huggingface_hub clients at once through `hubget serve --upstream`
and through olah, both in front of the same replica of the real hub.

    python bench/mirror_vs_olah.py [--small] [--clients 1,4,8] [--json out.json] [--md out.md]

The upstream is the hub replica (tests/support/hubreplica.py, in a process of its own: bench/replica.py):
hub and Xet-bridge origins, resolve -> 302 to a signed bridge URL, ``xetHash`` in tree listings, every
TCP connection capped at ``--rate-per-conn`` and given a round-trip time from ``--rtt``. The repo is the
benchmark's ``realhub`` model (bench/data.py: 4 safetensors shards, a vision tower, a large
tokenizer.json and a dozen small files; 388 MB at full size, 13 MB with ``--small``).

For each N and each mirror: a fresh mirror with an empty cache (hubget: a new ROOT; olah: a new
repos-path), the replica's counters reset, then N clients started at once, each
``snapshot_download(repo)`` of huggingface_hub in its own process with its own empty HF_HOME and
HF_ENDPOINT = the mirror. Recorded: the wall time until the last client is done, what the replica
sent (body bytes of both origins), the calls it answered (hub API, resolver, bridge), its 429s, and
the sha256 of every file of every client against the repo. ``os.getloadavg()`` is recorded at the
start and end of every run: the machine may be shared.

Clients, as each mirror's users must run them: hf_xet is installed and Xet is left on for hubget (its
mirror drops ``xetHash`` and the ``X-Xet-*`` headers, so clients use plain HTTP against it). olah 0.5
passes ``xetHash`` through in tree listings, and ``snapshot_download`` fetches such files with hf_xet:
it asks olah for a Xet token (``/api/models/{id}/xet-read-token/{rev}``, which olah forwards upstream)
and then goes to the Xet CAS named there, not through olah. The replica has no CAS, so that fails here
(on huggingface.co the client would bypass the mirror). So olah's users set ``HF_HUB_DISABLE_XET=1``;
and since a client waiting on another client's fill of a 64 MiB block gets no byte until the whole
block is in olah's cache, which takes longer than huggingface_hub's 10 s read timeout when upstream
connections are capped, they also raise ``HF_HUB_ETAG_TIMEOUT``/``HF_HUB_DOWNLOAD_TIMEOUT`` (to 60 s
here). The ``olah`` rows run that way at every N, and ``olah-xet`` (Xet on) at the smallest N, to show
in the table how it fails; ``--mirrors hubget,olah,olah-timeouts`` adds olah with Xet off but the
default timeouts at the largest N (whether that fails depends on the machine's load).

olah runs from its own virtualenv (``--olah-venv``, created with ``pip install olah==0.5.4`` if
missing), configured by a TOML file pointing ``hf-scheme``/``hf-netloc``/``hf-lfs-netloc`` at the
replica's hub and bridge origins.

Last, the warm mirror against nginx: the largest blob that hubget's mirror cached in the last cold run,
fetched as ``--readers`` parallel ranges through the mirror's ``/resolve/`` URL and from nginx serving
the same file (bench/bench_serve.py's method, alternating rounds). The mirror is restarted on the same
ROOT for this, so its first request asks upstream for the branch once (the TTL cache is in memory).
``python bench/bench_serve.py`` is the plain `hubget serve` (several workers) against nginx.

A benchmark, never a test: nothing here asserts a time.
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
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.hubreplica_repos import LFS_SUFFIXES  # noqa: E402
from tests.support.mirrorserver import MirrorServer, finish_client_logged, start_client  # noqa: E402

from bench.bench_serve import NGINX_CONF, free_port, parallel_ranges, wait_for_http  # noqa: E402
from bench.data import BenchRepo, ensure_repo  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.procs import compile_hubget  # noqa: E402
from bench.replica import ReplicaServer  # noqa: E402
from bench.verify import verify_tree  # noqa: E402

OLAH_VERSION = "0.5.4"
MiB = 1024 * 1024
NO_XET = {"HF_HUB_DISABLE_XET": "1"}
CLIENT = """
import time
from huggingface_hub import snapshot_download
started = time.monotonic()
path = snapshot_download({repo_id!r})
emit({{"path": path, "seconds": time.monotonic() - started}})
"""
OLAH_TOML = """[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{repos}"
hf-scheme = "http"
hf-netloc = "{hub}"
hf-lfs-netloc = "{bridge}"
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
"""


@dataclass(frozen=True)
class Mirror:
    name: str  # the row's label
    kind: str  # "hubget" or "olah"
    client_env: dict[str, str] = field(default_factory=dict)
    note: str = ""


# olah's followers get no byte of a 64 MiB block until its leader has fetched all of it (one upstream
# connection), longer than huggingface_hub's 10 s read timeout on a capped upstream: its users raise it.
OLAH_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": "60", "HF_HUB_DOWNLOAD_TIMEOUT": "60"}
MIRRORS = {
    "hubget": Mirror("hubget serve --upstream", "hubget", note="Xet on (hf_xet installed)"),
    "olah": Mirror(
        f"olah {OLAH_VERSION}",
        "olah",
        NO_XET | OLAH_TIMEOUTS,
        "HF_HUB_DISABLE_XET=1, HF_HUB_ETAG_TIMEOUT=60, HF_HUB_DOWNLOAD_TIMEOUT=60",
    ),
    "olah-timeouts": Mirror(
        f"olah {OLAH_VERSION}", "olah", NO_XET, "HF_HUB_DISABLE_XET=1, default timeouts (10 s)"
    ),
    "olah-xet": Mirror(f"olah {OLAH_VERSION}", "olah", note="Xet on (hf_xet installed)"),
}
# Runs that only show how olah fails without what its users must set: at one N (--every-n: at all).
ONE_N = {"olah-timeouts": "max", "olah-xet": "min"}


@dataclass
class Run:
    mirror: str
    key: str
    clients: int
    client_env: str
    ok: bool = False
    wall_s: float = 0.0
    client_s: list[float] = field(default_factory=list)
    verified_clients: int = 0
    problems: list[str] = field(default_factory=list)
    error: str = ""
    client_errors: list[str] = field(default_factory=list)  # the end of each failed client's output
    upstream_bytes: int = 0
    bytes_per_repo: float = 0.0
    hub_calls: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    resolver_calls: int = 0
    bridge_calls: int = 0
    too_many: int = 0
    loadavg_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    replica: dict[str, Any] = field(default_factory=dict)
    mirror_metrics: list[str] = field(default_factory=list)  # hubget's /metrics after the run


# ---------------------------------------------------------------------------------- olah


def ensure_olah(venv: Path) -> Path:
    """The olah-cli of ``venv``, installing olah there first when it is missing (its own pins)."""
    cli = venv / "bin" / "olah-cli"
    if not cli.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"olah=={OLAH_VERSION}"]
        subprocess.run(pip, check=True)
    return cli


class OlahServer:
    """olah-cli with a fresh repos-path under ``work``, upstream = the replica's two origins."""

    def __init__(self, cli: Path, work: Path, hub_url: str, bridge_url: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = work / "olah.toml"
        conf.write_text(
            OLAH_TOML.format(
                port=port,
                repos=work / "repos",
                hub=hub_url.split("://", 1)[1],
                bridge=bridge_url.split("://", 1)[1],
            )
        )
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = work / "olah.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(cli), "--config", str(conf)], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/models/none/none", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"olah did not start; see {self.log_path}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------- one run


def clients_round(url: str, repo: BenchRepo, n: int, work: Path, env: dict[str, str], timeout: float) -> Run:
    """N clients at once; wall time to the last one, every client's tree verified afterwards."""
    run = Run("", "", n, " ".join(f"{k}={v}" for k, v in env.items()))
    code = CLIENT.format(repo_id=repo.repo_id)
    started = time.monotonic()
    procs = [start_client(code, endpoint=url, hf_home=work / f"client{i}", env=env) for i in range(n)]
    paths: list[Path] = []
    for i, proc in enumerate(procs):
        try:
            out, _ = finish_client_logged(proc, max(1.0, timeout - (time.monotonic() - started)))
            paths.append(Path(out["path"]))
            run.client_s.append(round(float(out["seconds"]), 2))
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            proc.kill()
            proc.communicate()
            lines = [line for line in str(exc).splitlines() if line.strip()]
            # The client's last error line says why (the traceback above it is huggingface_hub's).
            tail = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
            run.problems.append(f"client {i}: {tail.strip()[:300]}")
            run.client_errors.append("\n".join(lines[-12:]))
    run.wall_s = round(time.monotonic() - started, 2)
    for path in paths:
        verdict = verify_tree(path, repo)
        run.verified_clients += verdict.all_ok
        run.problems += verdict.problems[:3]
    run.ok = run.verified_clients == n
    if not run.ok and not run.error:
        run.error = run.problems[0] if run.problems else "failed"
    return run


def count_upstream(run: Run, replica: ReplicaServer, repo: BenchRepo) -> None:
    c = replica.counters()
    run.replica = c
    run.upstream_bytes = int(sum(c["bytes"].values()))
    run.bytes_per_repo = round(run.upstream_bytes / repo.total_bytes, 3)
    run.hub_calls = int(c["requests"]["hub"])
    run.api_calls = {k: int(v) for k, v in sorted(c["api_calls"].items())}
    run.resolver_calls = int(sum(c["resolves"].values()))
    run.bridge_calls = int(c["requests"]["bridge"])
    run.too_many = int(sum(c["too_many"].values()))


def one_run(
    key: str, n: int, args: argparse.Namespace, replica: ReplicaServer, repo: BenchRepo, olah_cli: Path | None
) -> tuple[Run, Path | None]:
    """A cold mirror of kind ``key`` and N clients through it; returns the run and hubget's ROOT."""
    mirror = MIRRORS[key]
    work = args.work / f"{key}-n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root: Path | None = None
    server: MirrorServer | OlahServer
    if mirror.kind == "hubget":
        root = work / "root"
        server = MirrorServer(root, replica.hub_url).start()
    else:
        assert olah_cli is not None
        server = OlahServer(olah_cli, work / "olah", replica.hub_url, replica.bridge_url)
    try:
        replica.reset()  # what the mirror did at start (olah probes its upstream) is not the clients'
        load0 = os.getloadavg()
        run = clients_round(server.url, repo, n, work, mirror.client_env, args.timeout)
        run.loadavg_start, run.loadavg_end = load0, os.getloadavg()
        run.mirror, run.key = mirror.name, key
        run.client_env = mirror.note
        count_upstream(run, replica, repo)
        if mirror.kind == "hubget":
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            run.mirror_metrics = [line for line in text.splitlines() if line.startswith("hubget_mirror")]
    finally:
        server.stop()
        if mirror.kind == "olah":
            shutil.copy(server.log_path, args.work / f"olah-{key}-n{n}.log")
    for i in range(n):
        shutil.rmtree(work / f"client{i}", ignore_errors=True)
    if root is None:
        shutil.rmtree(work, ignore_errors=True)
    return run, root


# ---------------------------------------------------------------------------------- warm vs nginx


def warm_vs_nginx(root: Path, replica: ReplicaServer, repo: BenchRepo, args: argparse.Namespace) -> dict:
    """The largest blob hubget's mirror holds, as parallel ranges: the mirror's /resolve/ against nginx
    serving the blob file itself; rounds alternate; nothing may be asked upstream."""
    big = max(repo.files, key=lambda f: f.size)
    blobs = list((root / ".hubget-mirror").rglob(big.sha256))
    if not blobs:
        return {"error": f"{big.path} not in the mirror's store"}
    blob = blobs[0]
    # nginx's workers may run unprivileged: a folder they can reach (the work folder may be private).
    tmp = Path(tempfile.mkdtemp(prefix="hubget-bench-nginx-"))
    (tmp / "www").mkdir()
    try:
        os.link(blob, tmp / "www" / "blob.bin")
    except OSError:
        shutil.copyfile(blob, tmp / "www" / "blob.bin")
    for folder in (tmp, tmp / "www"):
        folder.chmod(0o755)
    (tmp / "www" / "blob.bin").chmod(0o644)
    port = free_port()
    (tmp / "nginx.conf").write_text(
        NGINX_CONF.format(workers=args.nginx_workers, tmp=tmp, port=port, root=tmp / "www")
    )
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx = subprocess.Popen([nginx_bin, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
    mirror = MirrorServer(root, replica.hub_url, "--workers", str(args.mirror_workers)).start()
    try:
        nginx_url = f"http://127.0.0.1:{port}/blob.bin"
        hub_url = f"{mirror.url}/{repo.repo_id}/resolve/main/{big.path}"
        wait_for_http(nginx_url)
        replica.reset()
        parallel_ranges(nginx_url, big.size, args.readers)  # page cache warm for both
        parallel_ranges(hub_url, big.size, args.readers)
        mirror_s, nginx_s, loads = [], [], []
        for _ in range(args.warm_rounds):
            loads.append(os.getloadavg())
            mirror_s.append(parallel_ranges(hub_url, big.size, args.readers))
            nginx_s.append(parallel_ranges(nginx_url, big.size, args.readers))
        upstream = replica.counters()
    finally:
        mirror.stop()
        nginx.terminate()
        nginx.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    mb = big.size / 1e6
    mirror_mbps, nginx_mbps = mb / statistics.median(mirror_s), mb / statistics.median(nginx_s)
    return {
        "file": big.path,
        "file_mb": round(mb, 1),
        "readers": args.readers,
        "nginx_workers": args.nginx_workers,
        "mirror_workers": args.mirror_workers,
        "mirror_mb_s_rounds": [round(mb / t) for t in mirror_s],
        "nginx_mb_s_rounds": [round(mb / t) for t in nginx_s],
        "mirror_mb_s": round(mirror_mbps),
        "nginx_mb_s": round(nginx_mbps),
        "ratio_mirror_to_nginx": round(mirror_mbps / nginx_mbps, 3),
        "upstream_requests": sum(upstream["requests"].values()),
        "loadavg": loads,
    }


# ---------------------------------------------------------------------------------- report


def _load(t: tuple[float, float, float] | list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in t)


def markdown(result: dict[str, Any]) -> str:
    runs = [
        Run(**{**r, "loadavg_start": tuple(r["loadavg_start"]), "loadavg_end": tuple(r["loadavg_end"])})
        for r in result["runs"]
    ]
    repo_mb = result["repo"]["bytes"] / 1e6
    cap = result["upstream"]["rate_per_conn"] / 1e6
    lines = [
        f"Repo `{result['repo']['id']}`: {result['repo']['files']} files, {repo_mb:,.1f} MB "
        f"({result['repo']['lfs_files']} of them LFS/Xet via the bridge). Upstream: the hub replica, "
        f"{cap:g} MB/s per connection, RTT {result['upstream']['rtt'][0] * 1000:.0f}-"
        f"{result['upstream']['rtt'][1] * 1000:.0f} ms. Every client: huggingface_hub "
        f"{result['machine'].get('huggingface_hub', '?')} `snapshot_download`, own process, own empty cache.",
        "",
        "| mirror | clients | client settings | wall s | clients ok | upstream MB | upstream / repo "
        "| hub calls (API + resolve) | bridge calls | 429s | load 1/5/15 min (start -> end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        wall = f"{r.wall_s:.1f}" if r.ok else f"failed ({r.wall_s:.1f})"
        api = sum(r.api_calls.values())
        lines.append(
            f"| {r.mirror} | {r.clients} | {r.client_env} | {wall} | {r.verified_clients}/{r.clients} "
            f"| {r.upstream_bytes / 1e6:,.1f} | {r.bytes_per_repo:.2f}x | {r.hub_calls} ({api} + "
            f"{r.resolver_calls}) | {r.bridge_calls} | {r.too_many} "
            f"| {_load(r.loadavg_start)} -> {_load(r.loadavg_end)} |"
        )
    failures = [r for r in runs if not r.ok]
    if failures:
        lines += ["", "Failed runs, and why (the clients' last error line):", ""]
        for r in failures:
            lines.append(f"- {r.mirror}, {r.clients} client(s), {r.client_env}: {r.error}")
    ratios = result["ratios"]
    if ratios:
        lines += ["", "| clients | olah wall / hubget wall | hubget upstream / repo | olah upstream / repo |"]
        lines.append("|---|---|---|---|")
        for n, ratio in ratios.items():
            lines.append(
                f"| {n} | {ratio['olah_over_hubget_wall']} | {ratio['hubget_upstream_per_repo']} "
                f"| {ratio['olah_upstream_per_repo']} |"
            )
    warm = result.get("warm")
    if warm and "error" not in warm:
        lines += [
            "",
            f"Warm: `{warm['file']}` ({warm['file_mb']} MB) as {warm['readers']} parallel ranges, "
            f"{len(warm['mirror_mb_s_rounds'])} rounds alternating: hubget's mirror "
            f"({warm.get('mirror_workers', 1)} workers) {warm['mirror_mb_s']} MB/s "
            f"(rounds {warm['mirror_mb_s_rounds']}), nginx ({warm['nginx_workers']} workers) "
            f"{warm['nginx_mb_s']} MB/s (rounds {warm['nginx_mb_s_rounds']}): "
            f"**{warm['ratio_mirror_to_nginx']}x nginx**; upstream requests meanwhile: "
            f"{warm['upstream_requests']}; load per round: {', '.join(_load(x) for x in warm['loadavg'])}.",
        ]
    elif warm:
        lines += ["", f"Warm: {warm['error']}"]
    return "\n".join(lines) + "\n"


def ratios(runs: list[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    by = {(r.key, r.clients): r for r in runs}
    for n in sorted({r.clients for r in runs}):
        hub, olah = by.get(("hubget", n)), by.get(("olah", n))
        if hub is None or olah is None:
            continue
        out[str(n)] = {
            "olah_over_hubget_wall": (
                f"{olah.wall_s / hub.wall_s:.2f}x" if hub.ok and olah.ok else "n/a (a run failed)"
            ),
            "hubget_upstream_per_repo": f"{hub.bytes_per_repo:.2f}x",
            "olah_upstream_per_repo": f"{olah.bytes_per_repo:.2f}x",
        }
    return out


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the 13 MB repo: a smoke run of a minute or two")
    ap.add_argument("--clients", default="1,4,8", help="numbers of concurrent clients")
    ap.add_argument("--mirrors", default="hubget,olah,olah-xet", help=f"of {','.join(MIRRORS)}")
    ap.add_argument(
        "--every-n",
        action="store_true",
        help="olah-timeouts and olah-xet at every N too (default: at the largest and the smallest N)",
    )
    ap.add_argument("--rate-per-conn", type=float, default=8e6, help="bytes/s per upstream connection")
    ap.add_argument("--rtt", type=float, nargs=2, default=(0.020, 0.050), metavar=("MIN", "MAX"))
    ap.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    ap.add_argument("--readers", type=int, default=8, help="parallel ranges of the warm comparison")
    ap.add_argument("--warm-rounds", type=int, default=9)
    ap.add_argument("--nginx-workers", default="auto")
    ap.add_argument(
        "--mirror-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="the warm mirror's --workers (as nginx's auto)",
    )
    ap.add_argument("--no-warm", action="store_true")
    ap.add_argument("--olah-venv", type=Path, default=Path("/tmp/olah-venv"))
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/hubget-bench-data"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/hubget-bench-mirror"))
    ap.add_argument("--json", type=Path, help="write the results here (default: WORK/mirror_vs_olah.json)")
    ap.add_argument("--md", type=Path, help="write the markdown table here (default: WORK/mirror_vs_olah.md)")
    args = ap.parse_args(argv)
    compile_hubget()
    counts = [int(x) for x in args.clients.split(",") if x]
    keys = [k for k in args.mirrors.split(",") if k]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    scale = "small" if args.small else "full"
    repo = ensure_repo(args.data_dir, "realhub", scale)
    olah_cli = ensure_olah(args.olah_venv) if any(MIRRORS[k].kind == "olah" for k in keys) else None
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    replica = ReplicaServer(
        repo.folder,
        repo.repo_id,
        args.work / "replica.log",
        rate_per_conn=args.rate_per_conn,
        rtt=(args.rtt[0], args.rtt[1]),
        cwd=REPO_ROOT,
    )
    runs: list[Run] = []
    warm: dict[str, Any] | None = None
    last_root: Path | None = None
    try:
        for n in counts:
            for key in keys:
                if key in ONE_N and not args.every_n and n != (max if ONE_N[key] == "max" else min)(counts):
                    continue
                run, root = one_run(key, n, args, replica, repo, olah_cli)
                runs.append(run)
                print(
                    f"{run.mirror:<26} {run.client_env:<26} N={n}: wall {run.wall_s:7.1f} s "
                    f"ok {run.verified_clients}/{n} upstream {run.bytes_per_repo:.2f}x repo, hub calls "
                    f"{run.hub_calls}, bridge calls {run.bridge_calls}, load {_load(run.loadavg_start)}"
                    + ("" if run.ok else f"  FAILED: {run.error}"),
                    flush=True,
                )
                if root is not None:
                    if last_root is not None:
                        shutil.rmtree(last_root.parent, ignore_errors=True)
                    last_root = root
        if last_root is not None and not args.no_warm:
            warm = warm_vs_nginx(last_root, replica, repo, args)
            print(f"warm: {json.dumps(warm)}", flush=True)
    finally:
        replica.stop()
        if last_root is not None:
            shutil.rmtree(last_root.parent, ignore_errors=True)
    machine = describe()
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "bench/mirror_vs_olah.py", *(argv or sys.argv[1:])]),
        "started": started,
        "ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "olah": OLAH_VERSION,
        "repo": {
            "id": repo.repo_id,
            "scale": scale,
            "files": len(repo.files),
            "lfs_files": sum(f.path.endswith(LFS_SUFFIXES) or f.size > 10 * MiB for f in repo.files),
            "bytes": repo.total_bytes,
        },
        "upstream": {"rate_per_conn": args.rate_per_conn, "rtt": list(args.rtt)},
        "runs": [asdict(r) for r in runs],
        "ratios": ratios(runs),
        "warm": warm,
    }
    md = markdown(result)
    print()
    print(md)
    (args.json or args.work / "mirror_vs_olah.json").write_text(json.dumps(result, indent=1))
    (args.md or args.work / "mirror_vs_olah.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
