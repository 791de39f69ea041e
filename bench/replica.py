"""The hub replica (tests/support/hubreplica.py) as the benchmark's server, in a child process of its own,
so that its threads neither share the runner's GIL nor count as any peer's CPU.

    python -m bench.replica FOLDER REPO_ID --rate-per-conn 8000000 --rtt 0.02 0.05

loads every file under FOLDER into a Xet-backed repo, starts the hub and bridge origins on 127.0.0.1 and
prints one JSON line ``{"hub_url": ..., "bridge_url": ...}``. Then it answers one JSON line per command
line on stdin: ``reset`` (forget counters and rate-limit windows), ``bytes`` (body bytes sent by both
origins), ``counters`` (what the last client did), ``stop``.

Latency: each TCP connection is given a round-trip time drawn from the ``--rtt`` range (a client meets
several edges and paths); it waits ``--handshake-rtts`` of them before reading the first request (TCP
and TLS 1.3 handshakes, which the loopback does not have), and one before the headers of every answer.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from tests.support.hubreplica import BRIDGE, HUB, HubReplica, make_repo
from tests.support.hubreplica import _Handler as ReplicaHandler

from bench.procs import read_json_line, start_module

READY_TIMEOUT = 120.0


class _LatencyHandler(ReplicaHandler):
    def setup(self) -> None:
        super().setup()
        replica = self.server.replica
        assert isinstance(replica, BenchReplica)
        self.rtt = replica.draw_rtt()
        if replica.handshake_rtts:
            replica._stopping.wait(replica.handshake_rtts * self.rtt)


class BenchReplica(HubReplica):
    """The replica with a round-trip time per connection (``rtt_range``) instead of one for all."""

    def __init__(
        self, *args: Any, rtt_range: tuple[float, float], handshake_rtts: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, rtt=0.0, **kwargs)
        self.rtt_range = rtt_range
        self.handshake_rtts = handshake_rtts
        self._rng = random.Random(20)
        self._rng_lock = threading.Lock()
        for server in self._servers.values():
            server.RequestHandlerClass = _LatencyHandler

    def draw_rtt(self) -> float:
        with self._rng_lock:
            return self._rng.uniform(*self.rtt_range)

    def _send(self, h: Any, reply: Any, head: bool, record: Any) -> None:
        self._stopping.wait(getattr(h, "rtt", 0.0))
        super()._send(h, reply, head, record)


def snapshot(replica: HubReplica) -> dict[str, Any]:
    """The counters of the replica as plain JSON: per file, per bucket, per origin."""
    c = replica.counters
    records = c.requests()
    with c.lock:
        out: dict[str, Any] = {
            "resolves": {p: n for (_, p), n in sorted(c.resolver_calls.items())},
            "resolver_methods": dict(c.resolver_methods),
            "api_calls": dict(c.api_calls),
            "too_many": dict(c.rate_limited),
            "bridge_requests": {p: n for (_, p), n in sorted(c.bridge_requests.items())},
            "ranges": sum(c.ranges_served.values()),
            "expired": sum(c.expired.values()),
            "max_connections": {o: c.max_connections[o] for o in (HUB, BRIDGE)},
            "bytes": {o: c.bytes_sent[o] for o in (HUB, BRIDGE)},
        }
    out["requests"] = {o: sum(1 for r in records if r.origin == o) for o in (HUB, BRIDGE)}
    per_file: dict[str, int] = {}
    for r in records:
        if r.origin == BRIDGE and r.file:
            per_file[r.file[1]] = per_file.get(r.file[1], 0) + r.body_bytes
    out["bridge_bytes"] = dict(sorted(per_file.items()))
    out["connections"] = {o: len({r.conn for r in records if r.origin == o}) for o in (HUB, BRIDGE)}
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    out["statuses"] = statuses
    return out


def load_repo(folder: Path, repo_id: str) -> Any:
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
    return make_repo(repo_id, files, xet=True)


def serve(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.replica")
    p.add_argument("folder", type=Path)
    p.add_argument("repo_id")
    p.add_argument("--rate-per-conn", type=float, default=0.0, help="bytes/s per TCP connection, 0: none")
    p.add_argument("--rtt", type=float, nargs=2, default=(0.0, 0.0), metavar=("MIN", "MAX"))
    p.add_argument("--handshake-rtts", type=int, default=2)
    args = p.parse_args(argv)
    replica = BenchReplica(
        [load_repo(args.folder, args.repo_id)],
        rate_per_conn=args.rate_per_conn or None,
        rtt_range=(args.rtt[0], args.rtt[1]),
        handshake_rtts=args.handshake_rtts,
    )
    replica.start()
    out = sys.stdout
    out.write(json.dumps({"hub_url": replica.hub_url, "bridge_url": replica.bridge_url}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "reset":
                replica.reset()
                answer: Any = {"ok": True}
            elif cmd == "bytes":
                with replica.counters.lock:
                    answer = {"bytes": sum(replica.counters.bytes_sent.values())}
            elif cmd == "counters":
                answer = snapshot(replica)
            elif cmd == "stop":
                break
            else:
                answer = {"error": f"unknown command {cmd!r}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        replica.stop()
    return 0


class ReplicaServer:
    """The parent's side: start ``python -m bench.replica`` and talk to it."""

    def __init__(
        self,
        folder: Path,
        repo_id: str,
        log: Path,
        *,
        rate_per_conn: float,
        rtt: tuple[float, float],
        handshake_rtts: int = 2,
        cwd: Path | None = None,
    ) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        args = [str(folder), repo_id, "--rate-per-conn", str(rate_per_conn)]
        args += ["--rtt", str(rtt[0]), str(rtt[1]), "--handshake-rtts", str(handshake_rtts)]
        self.proc = start_module("bench.replica", args, self._log, cwd)
        self._lock = threading.Lock()
        ready = self._read(READY_TIMEOUT)
        self.hub_url = str(ready["hub_url"])
        self.bridge_url = str(ready["bridge_url"])

    def _read(self, timeout: float) -> dict[str, Any]:
        data = read_json_line(self.proc, timeout)
        if data is None:
            self.stop()
            raise RuntimeError(f"the hub replica did not answer; see {self.log_path}")
        return data

    def ask(self, command: str) -> dict[str, Any]:
        with self._lock:
            stdin: IO[bytes] | None = self.proc.stdin
            assert stdin is not None
            stdin.write(command.encode() + b"\n")
            stdin.flush()
            return self._read(60.0)

    def reset(self) -> None:
        self.ask("reset")

    def bytes_sent(self) -> int:
        return int(self.ask("bytes")["bytes"])

    def counters(self) -> dict[str, Any]:
        return self.ask("counters")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"stop\n")
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._log.close()


if __name__ == "__main__":
    sys.exit(serve())
