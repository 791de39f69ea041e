"""A scripted HTTP/1.1 server on raw sockets (127.0.0.1), for faults a well-behaved server library
cannot produce: bodies cut short or longer than announced, chunked framing cut off, an absurd
``Content-Length``, a status line that never comes, bytes dripped one at a time.

    srv = FaultServer().start()
    srv.add("/blob", data, {"ETag": '"abc"'})           # served correctly, with Range, by default
    srv.script("/blob", reset_after(1000), ignore_range())  # the next two GETs misbehave, in order
    ...
    srv.stop()

Each script step is a function ``(conn, request, blob) -> keep_alive`` consumed by one request of
that path (HEAD requests do not consume steps). ``add``/``base`` match RangeServer, so
``tests.support.fakehub.FakeHfRepo`` can publish a repo on it.
"""

from __future__ import annotations

import gzip
import re
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import urlsplit

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_REASONS = {
    200: "OK",
    206: "Partial Content",
    302: "Found",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    target: str  # path and query as sent
    headers: dict[str, str]  # lower-case names
    conn_id: int

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


@dataclass
class Conn:
    sock: socket.socket
    server: FaultServer
    id: int

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        with self.server.lock:
            self.server.bytes_sent += len(data)

    def head(self, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def reset(self) -> None:
        """Close with RST instead of FIN (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def wait(self, seconds: float) -> bool:
        """Sleep unless the server stops; True when it is stopping."""
        return self.server.stopping.wait(seconds)


Step = Callable[[Conn, Request, bytes], bool]


@dataclass
class _Blob:
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FaultServer:
    def __init__(self) -> None:
        self.blobs: dict[str, _Blob] = {}
        self.scripts: dict[str, list[Step]] = {}
        self.requests: list[Request] = []
        self.bytes_sent = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self._conns: set[socket.socket] = set()
        self._next_id = 0
        self._endless = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    # -- setup --------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> str:
        self.blobs[path] = _Blob(data, dict(headers or {}))
        return self.url(path)

    def script(self, path: str, *steps: Step) -> None:
        with self.lock:
            self.scripts.setdefault(path, []).extend(steps)

    def always(self, path: str, step: Step, times: int = 1000) -> None:
        self.script(path, *([step] * times))

    def requests_for(self, path: str, method: str = "GET") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def open_connections(self) -> int:
        with self.lock:
            return len(self._conns)

    def endless_senders(self) -> int:
        """``endless`` answers still sending (each stops when the client hangs up)."""
        with self.lock:
            return self._endless

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._sock.close()
        with self.lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                self._conns.add(sock)
                self._next_id += 1
                conn = Conn(sock, self, self._next_id)
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: Conn) -> None:
        buf = b""
        try:
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.sock.recv(65536)
                    if not data:
                        return
                    buf += data
                    if len(buf) > 1 << 20:
                        return
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                req = Request(method, target, headers, conn.id)
                with self.lock:
                    self.requests.append(req)
                    blob = self.blobs.get(req.path)
                    steps = self.scripts.get(req.path)
                    step = steps.pop(0) if steps and method != "HEAD" else None
                if step is None:
                    step = serve()
                if not step(conn, req, blob.data if blob else b""):
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self._conns.discard(conn.sock)
            try:
                conn.sock.close()
            except OSError:
                pass


# -- helpers for steps ------------------------------------------------------------------------


def _blob_headers(conn: Conn, req: Request) -> dict[str, str]:
    blob = conn.server.blobs.get(req.path)
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    headers.update(blob.headers if blob else {})
    return headers


def _range(req: Request, size: int) -> tuple[int, int] | None:
    """(start, end) exclusive for a satisfiable single Range header, None when absent."""
    m = _RANGE.match(req.headers.get("range", "").strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    else:
        start, end = max(0, size - int(m.group(2))), size
    return start, end


def _body(conn: Conn, req: Request, data: bytes) -> None:
    if req.method == "HEAD":
        return
    view = memoryview(data)
    for pos in range(0, len(data), CHUNK):
        conn.send(view[pos : pos + CHUNK].tobytes())


# -- steps ------------------------------------------------------------------------------------


def serve(
    *, lie_start: int = 0, lie_total: int = 0, skip_range: bool = False, flip: int | None = None
) -> Step:
    """A correct answer (200, or 206/416 for a Range), unless told to lie about the range or to
    flip the byte at file offset ``flip`` (right length, wrong bytes)."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        if req.path not in conn.server.blobs:
            return status(404)(conn, req, blob)
        if flip is not None and flip < len(blob):
            blob = blob[:flip] + bytes([blob[flip] ^ 0xFF]) + blob[flip + 1 :]
        size = len(blob)
        headers = _blob_headers(conn, req)
        rng = None if skip_range else _range(req, size)
        if rng is None:
            headers["Content-Length"] = str(size)
            conn.head(200, headers)
            _body(conn, req, blob)
            return True
        start, end = rng
        if start >= size or start >= end:
            conn.head(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            return True
        start = max(0, start + lie_start)
        end = min(size, max(end, start))
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size + lie_total}"
        headers["Content-Length"] = str(end - start)
        conn.head(206, headers)
        _body(conn, req, blob[start:end])
        return True

    return step


def ignore_range() -> Step:
    """200 with the whole file, whatever Range asked."""
    return serve(skip_range=True)


def corrupt(offset: int) -> Step:
    """The right length with one wrong byte at file offset ``offset``."""
    return serve(flip=offset)


def wrong_start(shift: int = 1) -> Step:
    """206 whose Content-Range (and bytes) start ``shift`` bytes after what was asked."""
    return serve(lie_start=shift)


def wrong_total(extra: int = 1) -> Step:
    """206 naming a total size ``extra`` bytes off the real one (the file changed upstream)."""
    return serve(lie_total=extra)


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"injected") -> Step:
    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        conn.head(code, {**(headers or {}), "Content-Length": str(len(body))})
        if req.method != "HEAD":
            conn.send(body)
        return True

    return step


def redirect(location: str | Callable[[Request], str], code: int = 302) -> Step:
    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        loc = location(req) if callable(location) else location
        conn.head(code, {"Location": loc, "Content-Length": "0"})
        return True

    return step


def _correct_head(conn: Conn, req: Request, blob: bytes) -> tuple[int, int]:
    """Send the headers of a correct answer (206 for a satisfiable Range); return the body's span."""
    size = len(blob)
    headers = _blob_headers(conn, req)
    rng = _range(req, size)
    start, end, code = 0, size, 200
    if rng is not None and rng[0] < size:
        start, end = rng
        code = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    conn.head(code, headers)
    return start, end


def _partial(conn: Conn, req: Request, blob: bytes, after: int) -> None:
    """Headers of a correct answer, then only ``after`` bytes of its body."""
    start, end = _correct_head(conn, req, blob)
    conn.send(blob[start : min(end, start + after)])


def reset_after(after: int) -> Step:
    """Send ``after`` body bytes, then reset the connection (RST)."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        _partial(conn, req, blob, after)
        conn.reset()
        return False

    return step


def close_after(after: int) -> Step:
    """Send ``after`` body bytes, then close cleanly (FIN) before Content-Length is reached."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        _partial(conn, req, blob, after)
        conn.sock.shutdown(socket.SHUT_RDWR)
        return False

    return step


def chunked_cut(after: int) -> Step:
    """``Transfer-Encoding: chunked`` with the whole file announced nowhere, cut after ``after``
    bytes without the terminating zero-size chunk."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        headers = _blob_headers(conn, req)
        headers["Transfer-Encoding"] = "chunked"
        conn.head(200, headers)
        data = blob[:after]
        for pos in range(0, len(data), 65536):
            piece = data[pos : pos + 65536]
            conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.sock.shutdown(socket.SHUT_RDWR)
        return False

    return step


def longer(extra: int) -> Step:
    """Announce the true length but send ``extra`` more bytes, then close."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        headers = _blob_headers(conn, req)
        rng = _range(req, len(blob))
        start, end, code = 0, len(blob), 200
        if rng is not None:
            start, end = rng
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(blob)}"
        headers["Content-Length"] = str(end - start)
        conn.head(code, headers)
        conn.send(blob[start:end] + b"\xee" * extra)
        conn.sock.shutdown(socket.SHUT_RDWR)
        return False

    return step


def endless(limit: int = 1 << 30) -> Step:
    """200 without Content-Length (close-delimited): the file, then junk until the client leaves."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        headers = _blob_headers(conn, req)
        headers["Connection"] = "close"
        conn.head(200, headers)
        server = conn.server
        with server.lock:
            server._endless += 1
        try:
            conn.send(blob)
            junk = b"\xee" * CHUNK
            sent = 0
            while sent < limit and not server.stopping.is_set():
                conn.send(junk)
                sent += len(junk)
        finally:
            with server.lock:
                server._endless -= 1
        return False

    return step


def absurd_length(length: int = 10**18) -> Step:
    """A 200 announcing ``length`` bytes, then the real file, then a clean close."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        headers = _blob_headers(conn, req)
        headers["Content-Length"] = str(length)
        conn.head(200, headers)
        conn.send(blob)
        conn.sock.shutdown(socket.SHUT_RDWR)
        return False

    return step


def gzip_bomb(expanded: int = 64 * 1024 * 1024) -> Step:
    """``Content-Encoding: gzip`` on a file download: a small body that inflates to ``expanded``
    zeros. A downloader must refuse it (it asked for identity) rather than store or inflate it."""
    body = gzip.compress(b"\0" * expanded, compresslevel=9)

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        headers = _blob_headers(conn, req)
        headers.update({"Content-Encoding": "gzip", "Content-Length": str(len(body))})
        conn.head(200, headers)
        conn.send(body)
        return True

    return step


def delayed(seconds: float, then: Step | None = None) -> Step:
    """Say nothing for ``seconds``, then answer with ``then`` (a correct answer by default)."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        if conn.wait(seconds):
            return False
        return (then or serve())(conn, req, blob)

    return step


def never_answer() -> Step:
    """Read the request, then say nothing until the client gives up or the server stops."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        conn.wait(3600)
        return False

    return step


def stall_after(after: int) -> Step:
    """Correct headers and ``after`` body bytes, then silence."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        _partial(conn, req, blob, after)
        conn.wait(3600)
        return False

    return step


def drip(interval: float = 0.2, nbytes: int = 1) -> Step:
    """Correct headers, then ``nbytes`` every ``interval`` seconds: never silent long enough for a
    read timeout, yet far too slow to ever finish."""

    def step(conn: Conn, req: Request, blob: bytes) -> bool:
        start, end = _correct_head(conn, req, blob)
        pos = start
        while pos < end:
            conn.send(blob[pos : pos + nbytes])
            pos += nbytes
            if conn.wait(interval):
                return False
        return True

    return step


def http_date(seconds_from_now: float) -> str:
    import time

    return formatdate(time.time() + seconds_from_now, usegmt=True)
