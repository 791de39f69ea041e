"""A small threaded HTTP(S) server for tests: blobs by path, Range/206/416, byte counters, faults.

Faults are queued per path and consumed one request at a time (``times``), so a test can say
"the next two GETs of /a answer 503, then serve normally".
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Fault:
    """One injected misbehaviour.

    kind:
      "status"       answer ``status`` with ``headers`` and a short body instead of the blob
      "reset"        send ``after`` body bytes, then reset the connection (RST)
      "close"        send ``after`` body bytes, then close cleanly (short body)
      "ignore_range" answer 200 with the whole blob to a Range request
      "wrong_start"  answer 206 whose bytes and Content-Range start ``shift`` bytes off
      "wrong_total"  answer 206 whose Content-Range names another total size
      "stall"        send ``after`` bytes, then send nothing for ``seconds``
      "drip"         send one byte every ``seconds``
      "corrupt"      flip the byte at ``offset`` of the blob (for every matching request)
      "encoding"     add ``Content-Encoding: gzip`` to an otherwise normal answer
      "endless"      answer 200 without Content-Length and never stop sending
      "redirect"     answer ``status`` (302 by default... set it) with ``Location: location``
    ``times``: how many requests it applies to; -1 for all. ``ranged_only``: only Range requests.
    """

    kind: str
    times: int = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0
    shift: int = 1
    offset: int = 0
    seconds: float = 5.0
    location: str = ""
    ranged_only: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    client_port: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: RangeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients dropping connections is what these tests provoke


class RangeServer:
    def __init__(self, *, certfile: str | None = None, keyfile: str | None = None) -> None:
        self.blobs: dict[str, bytes | Path] = {}
        self.extra_headers: dict[str, dict[str, str]] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.bytes_sent: Counter[str] = Counter()
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    # -- setup ---------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes | Path, headers: dict[str, str] | None = None) -> str:
        self.blobs[path] = data
        if headers:
            self.extra_headers[path] = headers
        return self.url(path)

    def fault(self, path: str, fault: Fault) -> None:
        with self.lock:
            self.faults.setdefault(path, []).append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def requests_for(self, path: str, method: str = "GET") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def start(self) -> RangeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler -------------------------------------------------------------

    def take_fault(self, path: str, ranged: bool) -> Fault | None:
        with self.lock:
            for fault in self.faults.get(path, []):
                if fault.times == 0 or fault.kind == "corrupt" or (fault.ranged_only and not ranged):
                    continue
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None

    def corrupt_offsets(self, path: str) -> list[int]:
        with self.lock:
            return [f.offset for f in self.faults.get(path, []) if f.kind == "corrupt"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # -- helpers -------------------------------------------------------------------------

    def _owner(self) -> RangeServer:
        return self.server.owner

    def _read_blob(self, blob: bytes | Path, start: int, end: int) -> bytes:
        if isinstance(blob, bytes):
            return blob[start:end]
        with open(blob, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def _simple(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _serve(self, head: bool) -> None:
        owner = self._owner()
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.requests.append(
                Recorded(self.command, self.path, dict(self.headers.items()), self.client_address[1])
            )
        range_header = self.headers.get("Range")
        fault = owner.take_fault(path, ranged=range_header is not None)
        if fault and fault.kind == "redirect":
            self._simple(
                fault.status if fault.status in (301, 302, 303, 307, 308) else 302,
                {"Location": fault.location},
            )
            return
        if fault and fault.kind == "status":
            self._simple(fault.status, fault.headers, b"injected failure")
            return
        if fault and fault.kind == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._endless(path)
            return
        blob = owner.blobs.get(path)
        if blob is None:
            self._simple(404, {}, b"not found")
            return
        size = len(blob) if isinstance(blob, bytes) else blob.stat().st_size
        status, start, end = 200, 0, size
        if range_header and not (fault and fault.kind == "ignore_range"):
            m = _RANGE.match(range_header.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:
                    start, end = max(0, size - int(m.group(2))), size
                if start >= size or start >= end:
                    self._simple(416, {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
        total = size
        send_start = start
        if fault and fault.kind == "wrong_start" and status == 206:
            send_start = max(0, start + fault.shift)
        if fault and fault.kind == "wrong_total" and status == 206:
            total = size + 1
        self.send_response(status)
        for k, v in owner.extra_headers.get(path, {}).items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if fault and fault.kind == "encoding":
            self.send_header("Content-Encoding", "gzip")
        length = end - send_start if status == 206 else size
        if status == 206:
            self.send_header("Content-Range", f"bytes {send_start}-{send_start + length - 1}/{total}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        self._send_body(path, blob, send_start, send_start + length, fault)

    def _endless(self, path: str) -> None:
        owner = self._owner()
        junk = b"\0" * CHUNK
        try:
            while not owner.stopping.is_set():
                self.wfile.write(junk)
                with owner.lock:
                    owner.bytes_sent[path] += len(junk)
        except OSError:
            pass

    def _send_body(self, path: str, blob: bytes | Path, start: int, end: int, fault: Fault | None) -> None:
        owner = self._owner()
        corrupt = owner.corrupt_offsets(path)
        limit = end
        if fault and fault.kind in ("reset", "close", "stall"):
            limit = min(end, start + fault.after)
        pos = start
        try:
            while pos < limit:
                step = 1 if fault and fault.kind == "drip" else CHUNK
                n = min(step, limit - pos)
                chunk = self._read_blob(blob, pos, pos + n)
                for off in corrupt:
                    if pos <= off < pos + n:
                        b = bytearray(chunk)
                        b[off - pos] ^= 0xFF
                        chunk = bytes(b)
                self.wfile.write(chunk)
                with owner.lock:
                    owner.bytes_sent[path] += n
                pos += n
                if fault and fault.kind == "drip":
                    self.wfile.flush()
                    if owner.stopping.wait(fault.seconds):
                        return
            self.wfile.flush()
            if fault and fault.kind == "stall" and pos < end:
                owner.stopping.wait(fault.seconds)
                self.close_connection = True
            elif fault and fault.kind == "reset" and pos < end:
                self._reset()
            elif fault and fault.kind == "close" and pos < end:
                self.close_connection = True
        except OSError:
            self.close_connection = True


def make_self_signed(folder: Path) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1 (via the openssl binary)."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
