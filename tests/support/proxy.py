"""A TCP proxy for tests and benchmarks: counts the bytes each way and can cap every connection's
rate (as CDNs do), so a test can prove what a client fetched, or slow it to stop it mid-file."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 64 * 1024


class CountingProxy:
    def __init__(self, target_host: str, target_port: int, *, rate_per_conn: float | None = None) -> None:
        self.target = (target_host, target_port)
        self.rate = rate_per_conn  # bytes/s per connection, server -> client; None: unlimited
        self.lock = threading.Lock()
        self.down = 0  # bytes server -> client
        self.up = 0  # bytes client -> server
        self.connections = 0
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset_counters(self) -> None:
        with self.lock:
            self.down = self.up = self.connections = 0

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections += 1
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        started = time.monotonic()
        sent = 0
        try:
            while not self.stopping.is_set():
                data = src.recv(
                    CHUNK if not (downstream and self.rate) else min(CHUNK, int(self.rate / 20) + 1)
                )
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                with self.lock:
                    if downstream:
                        self.down += len(data)
                    else:
                        self.up += len(data)
                if downstream and self.rate:
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        with self.lock:
            for s in self._open:
                try:
                    s.close()
                except OSError:
                    pass


@contextmanager
def counting_proxy(url: str, *, rate_per_conn: float | None = None) -> Iterator[CountingProxy]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    proxy = CountingProxy(host.strip("[]"), int(port.rstrip("/")), rate_per_conn=rate_per_conn)
    try:
        yield proxy
    finally:
        proxy.close()
