"""Swarm benchmark: one file from two capped hubs at once against each hub alone.

Two `hubget serve` instances hold the same model: one answers as the Hugging Face endpoint
(``org/model``), the other as ModelScope under another id (``OrgCN/model``). Each sits behind a
proxy that caps its *total* rate (a mirror's or a hub's uplink), one faster than the other. Three
runs of ``hubget.api.auto.fetch_auto``, each into a fresh cache, each file's sha256 verified:

  hf alone          --source auto without ModelScope
  modelscope alone  the HF endpoint refused, the mapping names the ModelScope repo
  swarm             both: the file's ranges spread over the two by measured rate

    python -m bench.swarm [--size-mib 64] [--cap-a 24] [--cap-b 12] [--json out.json]

Prints seconds, MB/s, the bytes each source delivered, and the swarm's ratio to the faster single
source. A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.hubserver import hub_server
from tests.support.proxy import CountingProxy
from tests.support.repos import write_folder_repo

from hubget.api.auto import fetch_auto
from hubget.models import RepoRef

MB = 1_000_000
MiB = 1024 * 1024


class TotalCapProxy(CountingProxy):
    """A proxy whose connections share one rate budget (server -> client), like one uplink."""

    def __init__(self, host: str, port: int, total_rate: float) -> None:
        self.total_rate = total_rate
        self.budget_lock = threading.Lock()
        self.next_free = time.monotonic()
        super().__init__(host, port)

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while not self.stopping.is_set():
                data = src.recv(64 * 1024 if not downstream else 16 * 1024)
                if not data:
                    break
                if downstream:
                    with self.budget_lock:  # reserve this chunk's slot on the shared link
                        start = max(time.monotonic(), self.next_free)
                        self.next_free = start + len(data) / self.total_rate
                        ready = self.next_free
                    delay = ready - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                dst.sendall(data)
                with self.lock:
                    if downstream:
                        self.down += len(data)
                    else:
                        self.up += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def capped(url: str, rate: float) -> Iterator[TotalCapProxy]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    proxy = TotalCapProxy(host, int(port), rate)
    try:
        yield proxy
    finally:
        proxy.close()


def closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def run_once(name: str, work: Path, expected: str, **kw: object) -> dict[str, object]:
    cache = work / f"cache-{name}"
    started = time.monotonic()
    plan, report = fetch_auto(
        RepoRef("org/model"),
        token=False,
        cache_dir=cache,
        mirrors=[],
        probe_timeout=5,
        allow_patterns=["weights.safetensors"],
        connections=8,
        **kw,  # type: ignore[arg-type]
    )
    seconds = time.monotonic() - started
    (status,) = report.files
    blob = next(p for p in cache.rglob("weights.safetensors*") if p.is_file())
    digest = hashlib.sha256(blob.resolve().read_bytes()).hexdigest()
    if digest != expected:
        raise SystemExit(f"{name}: sha256 mismatch")
    size = status.size or 0
    return {
        "run": name,
        "seconds": round(seconds, 2),
        "MB_per_s": round(size / seconds / MB, 1),
        "bytes_per_source": status.sources,
        "substitute": plan.substitution.repo_id if plan.substitution else None,
        "sha256_verified": True,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--cap-a", type=float, default=24, help="MB/s of the Hugging Face-protocol hub")
    parser.add_argument("--cap-b", type=float, default=12, help="MB/s of the ModelScope-protocol hub")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.update({"HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "", "MODELSCOPE_API_TOKEN": ""})

    data = os.urandom(args.size_mib * MiB)
    expected = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="hubget-swarm-") as tmp:
        work = Path(tmp)
        files = {"weights.safetensors": data, "config.json": b"{}"}
        write_folder_repo(work / "a" / "models" / "org" / "model", files)
        write_folder_repo(work / "b" / "models" / "OrgCN" / "model", files)
        with hub_server(work / "a") as a_url, hub_server(work / "b") as b_url:
            with capped(a_url, args.cap_a * MB) as a, capped(b_url, args.cap_b * MB) as b:
                ms = {"modelscope_endpoint": b.url, "modelscope_id": "OrgCN/model"}
                results = [
                    run_once("hf alone", work, expected, endpoint=a.url, use_modelscope=False),
                    run_once("modelscope alone", work, expected, endpoint=closed_port(), **ms),
                    run_once("swarm", work, expected, endpoint=a.url, **ms),
                ]
    best_single = min(float(r["seconds"]) for r in results[:2])  # type: ignore[arg-type]
    swarm = float(results[2]["seconds"])  # type: ignore[arg-type]
    print(f"{args.size_mib} MiB file; caps: hub A {args.cap_a:g} MB/s, hub B {args.cap_b:g} MB/s (per hub)")
    print(f"{'run':<18}{'seconds':>9}{'MB/s':>8}  bytes per source")
    for r in results:
        print(f"{r['run']:<18}{r['seconds']:>9}{r['MB_per_s']:>8}  {r['bytes_per_source']}")
    print(f"swarm vs the faster single source: {best_single / swarm:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
