"""A TCP proxy that adds a round-trip time in user space, in a process of its own (so its work is
neither the runner's nor any peer's CPU):

    python -m bench.delay TARGET_HOST:PORT --rtt 0.05 0.05 [--handshake-rtts 2]

prints one JSON line ``{"url": "http://127.0.0.1:PORT"}`` and forwards every connection to TARGET until
stdin closes. Each connection gets a round-trip time drawn from the ``--rtt`` range; every byte goes
through a delay line of half of it in each direction (so a request and its answer cost one RTT, and
throughput is not limited by it, as on a real path), and the client's first bytes wait
``--handshake-rtts`` RTTs more (TCP and TLS 1.3 handshakes, which the loopback does not have).

Unlike the hub replica's latency (bench/replica.py, which sleeps before each answer), this one sits in
front of any server: `hubget serve` or nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import threading
from pathlib import Path

from bench.procs import read_json_line, start_module

CHUNK = 256 * 1024
QUEUED = 64  # chunks in one direction's delay line at most (backpressure beyond that)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, first: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read (``first`` more for
    the first chunk), keeping their order."""
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED)

    async def feed() -> None:
        extra = first
        try:
            while data := await reader.read(CHUNK):
                await line.put((loop.time() + delay + extra, data))
                extra = 0.0
        except OSError:
            pass
        await line.put((loop.time() + delay, b""))

    feeder = asyncio.create_task(feed())
    try:
        while True:
            due, data = await line.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        feeder.cancel()


class DelayProxy:
    def __init__(self, target: tuple[str, int], rtt: tuple[float, float], handshake_rtts: int) -> None:
        self.target = target
        self.rtt = rtt
        self.handshake_rtts = handshake_rtts
        self.rng = random.Random(17)

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        rtt = self.rng.uniform(*self.rtt)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pipe(client_r, server_w, rtt / 2, self.handshake_rtts * rtt),
                _pipe(server_r, client_w, rtt / 2, 0.0),
            )
        finally:
            for w in (server_w, client_w):
                w.close()


async def _serve(target: tuple[str, int], rtt: tuple[float, float], handshake_rtts: int) -> None:
    proxy = DelayProxy(target, rtt, handshake_rtts)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    # The parent closes our stdin to stop us (or dies, which closes it too).
    threading.Thread(
        target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stdin_closed.set_result, None)),
        daemon=True,
    ).start()
    async with server:
        await stdin_closed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delay")
    p.add_argument("target", help="HOST:PORT")
    p.add_argument("--rtt", type=float, nargs=2, default=(0.05, 0.05), metavar=("MIN", "MAX"))
    p.add_argument("--handshake-rtts", type=int, default=2)
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    asyncio.run(_serve((host, int(port)), (args.rtt[0], args.rtt[1]), args.handshake_rtts))
    return 0


class DelayServer:
    """The parent's side: ``python -m bench.delay`` in front of ``upstream_url``; ``url`` is its address."""

    def __init__(
        self, upstream_url: str, rtt: tuple[float, float], log: Path, handshake_rtts: int = 2
    ) -> None:
        target = upstream_url.split("://", 1)[1].rstrip("/")
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        args = [target, "--rtt", str(rtt[0]), str(rtt[1]), "--handshake-rtts", str(handshake_rtts)]
        self.proc = start_module("bench.delay", args, self._log)
        ready = read_json_line(self.proc, 30)
        if ready is None:
            self.stop()
            raise RuntimeError(f"the delay proxy did not start; see {log}")
        self.url = str(ready["url"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


if __name__ == "__main__":
    sys.exit(main())
