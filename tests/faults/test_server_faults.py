"""`hubget serve` under abuse: malformed requests, slowloris, path tricks, Range abuse and clients
that vanish mid-body. Each test runs the abuse while a normal download runs, and asserts that the
normal download gets verified bytes and the server still answers afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hubget
from tests.faults.harness import assert_files
from tests.support.hubserver import hub_server
from tests.support.repos import write_folder_repo

pytestmark = pytest.mark.timeout(120)

REPO = "org/served"
BIG = os.urandom(8 * 1024 * 1024 + 3)
FILES = {"config.json": b'{"d": 4}\n', "model.safetensors": BIG, "sub/readme.md": b"# hi\n"}
SECRET = b"hubget-test-secret-" + os.urandom(8).hex().encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "root"
    write_folder_repo(root / "models" / REPO, FILES)
    (base / "secret.txt").write_bytes(SECRET)  # beside the served root: must never be served
    with hub_server(root) as url:
        yield url, base


def _addr(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def _raw(url: str, data: bytes, *, read: int = 1 << 20, timeout: float = 2.0) -> bytes:
    """Send raw bytes, return what the server answers (until it closes or goes quiet)."""
    with socket.create_connection(_addr(url), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        out = b""
        with contextlib.suppress(OSError):
            while len(out) < read:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


def _resolve(path: str) -> str:
    return f"/{REPO}/resolve/main/{path}"


def _download_while(url: str, tmp: Path, abuse: Callable[[threading.Event], None]) -> None:
    """Run ``abuse`` in threads while a normal download runs; the download must succeed."""
    stop = threading.Event()
    threads = [threading.Thread(target=abuse, args=(stop,), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)  # let the abuse start first
        path = hubget.snapshot_download(REPO, endpoint=url, cache_dir=tmp / "cache", token=False)
        assert_files(Path(path), FILES)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    _assert_alive(url)


def _assert_alive(url: str) -> None:
    with urllib.request.urlopen(url + _resolve("config.json"), timeout=10) as resp:
        assert resp.read() == FILES["config.json"]


MALFORMED = {
    "garbage": b"\x00\xff\x13garbage\r\n\r\n",
    "bad_version": b"GET / HTTP/9.9\r\n\r\n",
    "no_version": b"GET /\r\n\r\n",
    "huge_request_line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
    "many_headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: y\r\n" % i for i in range(5000))
    + b"\r\n",
    "negative_length": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "huge_body_announced": b"POST /api/models/org/served/paths-info/main HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 99999999999\r\n\r\n",
    "bad_chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "nul_in_path": b"GET /org/served/resolve/main/config.json\x00.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_range": b"GET /org/served/resolve/main/config.json HTTP/1.1\r\nHost: x\r\nRange: bytes=z-q\r\n\r\n",
}


@pytest.mark.parametrize("key", sorted(MALFORMED))
def test_malformed_request_gets_a_4xx_or_a_close_and_others_are_served(served, key):
    url, _ = served
    answer = _raw(url, MALFORMED[key])
    status = _status(answer)
    assert status is None or status < 500, answer[:300]
    _assert_alive(url)


PATH_TRICKS = [
    "/org/served/resolve/main/../../../../secret.txt",
    "/org/served/resolve/main/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/org/served/resolve/main/..%2f..%2f..%2f..%2f..%2fsecret.txt",
    "/org/served/resolve/main/..%5c..%5c..%5c..%5c..%5csecret.txt",
    "/org/served/resolve/main/%2fetc%2fpasswd",
    "/org/served/resolve/main//etc/passwd",
    "/org/served/resolve/main/sub/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/org/served/resolve/main/config.json%00.txt",
    "/api/models/org/served/tree/main/..%2f..%2f..%2f..",
    "/api/models/org/..%2f..%2f../revision/main",
    "/org/..%2f..%2fsecret.txt/resolve/main/x",
    "/../../secret.txt",
]


@pytest.mark.parametrize("target", PATH_TRICKS)
def test_path_tricks_never_leave_the_root(served, target):
    url, _ = served
    answer = _raw(url, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = _status(answer)
    assert status is not None and 400 <= status < 500, answer[:300]
    assert SECRET not in answer
    assert b"root:" not in answer  # /etc/passwd


def test_range_abuse_is_bounded(served):
    url, _ = served
    size = len(FILES["config.json"])
    many = "bytes=" + ",".join("0-" for _ in range(1500))
    overlapping = "bytes=" + ",".join(f"{i}-{size - 1}" for i in range(size)) + ",0-0,0-0,0-0"
    tiny = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 2000, 2))
    for header in (many, overlapping, tiny):
        req = (
            f"GET {_resolve('config.json')} HTTP/1.1\r\nHost: x\r\nRange: {header}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        answer = _raw(url, req)
        status = _status(answer)
        assert status in (200, 206, 400, 416, 431), answer[:300]
        head, _, body = answer.partition(b"\r\n\r\n")
        # never an amplification: the body is at most the file plus multipart framing of a few parts
        assert len(body) <= 2 * size + 4096, (status, len(body))
    # on the big file, overlapping ranges must not multiply the bytes sent
    req = (
        f"GET {_resolve('model.safetensors')} HTTP/1.1\r\nHost: x\r\n"
        f"Range: bytes={','.join('0-' for _ in range(30))}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = _raw(url, req, read=64 << 20, timeout=20)
    assert len(answer) <= len(BIG) + 64 * 1024
    _assert_alive(url)


def test_slowloris_does_not_starve_other_clients(served, tmp_path):
    url, _ = served
    conns: list[socket.socket] = []
    for _ in range(200):
        s = socket.create_connection(_addr(url), timeout=5)
        s.sendall(b"GET /org/served/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n")
        conns.append(s)

    def drip(stop: threading.Event) -> None:
        i = 0
        while not stop.wait(0.2):
            for s in conns[i % 4 :: 4]:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")  # a header line that never ends
            i += 1

    try:
        _download_while(url, tmp_path, drip)
    finally:
        for s in conns:
            s.close()


def test_clients_vanishing_mid_body_do_not_disturb_others(served, tmp_path):
    url, _ = served

    def vanish(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                s = socket.create_connection(_addr(url), timeout=5)
                s.sendall(f"GET {_resolve('model.safetensors')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                s.recv(65536)
                # RST instead of FIN, at a random point of the body
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    _download_while(url, tmp_path, vanish)


def test_slow_reader_does_not_block_others(served, tmp_path):
    """Clients that request the big file and never read it (full socket buffers)."""
    url, _ = served
    held: list[socket.socket] = []
    for _ in range(20):
        s = socket.create_connection(_addr(url), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {_resolve('model.safetensors')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        held.append(s)
    try:
        _download_while(url, tmp_path, lambda stop: stop.wait(60))
    finally:
        for s in held:
            s.close()


# -- connection limits: header deadline, keep-alive timeout, connection cap --------------------------

HEADER_TIMEOUT = 1.0
SHORT_KEEPALIVE = 2.0
MAX_CONNECTIONS = 32
# Far above the short timeouts: a connection still open after this was not closed by them.
CLOSE_BOUND = 15.0
# aiohttp's keep-alive timer also runs while a fresh connection waits for its first request, so the
# header deadline is tested on a server whose keep-alive timeout is longer than CLOSE_BOUND.
LONG_KEEPALIVE = 60.0


@contextlib.contextmanager
def _limited_server(root: Path, keepalive: float) -> Iterator[str]:
    write_folder_repo(root / "models" / REPO, FILES)
    limits = [
        f"--header-timeout={HEADER_TIMEOUT}",
        f"--keepalive-timeout={keepalive}",
        f"--max-connections={MAX_CONNECTIONS}",
    ]
    with hub_server(root, extra_args=limits) as url:
        yield url


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[str]:
    """Header deadline 1 s, keep-alive 60 s, at most 32 connections."""
    with _limited_server(tmp_path_factory.mktemp("guarded") / "root", LONG_KEEPALIVE) as url:
        yield url


@pytest.fixture(scope="module")
def short_keepalive(tmp_path_factory) -> Iterator[str]:
    """Header deadline 1 s, keep-alive 2 s."""
    with _limited_server(tmp_path_factory.mktemp("short-keepalive") / "root", SHORT_KEEPALIVE) as url:
        yield url


def _closed_by_server(s: socket.socket) -> bool:
    """Wait (at most CLOSE_BOUND) for the server to close ``s``; True when it did."""
    s.settimeout(CLOSE_BOUND)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


HALF_SENT = {
    "nothing": b"",
    "half_request_line": b"GET /org/served/resolve/ma",
    "half_headers": b"GET /org/served/resolve/main/config.json HTTP/1.1\r\nHost: x\r\nX-Slow: ",
}


@pytest.mark.parametrize("key", sorted(HALF_SENT))
def test_half_sent_header_is_closed_after_the_header_deadline(guarded, key):
    with socket.create_connection(_addr(guarded), timeout=5) as s:
        s.sendall(HALF_SENT[key])
        assert _closed_by_server(s)
    _assert_alive(guarded)


def test_dripped_header_is_closed_after_the_header_deadline(guarded):
    """A byte every 0.1 s never completes the header; bytes arriving must not extend the deadline."""
    with socket.create_connection(_addr(guarded), timeout=5) as s:
        s.sendall(b"GET /org/served/resolve/main/config.json HTTP/1.1\r\nHost: x\r\nX-Drip: ")
        s.setblocking(False)
        closed = False
        for _ in range(int(CLOSE_BOUND / 0.1)):
            try:
                if s.recv(65536) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            try:
                s.send(b"x")
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        assert closed
    _assert_alive(guarded)


def _read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response with Content-Length from ``s``: (head, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, len(body)
        body += chunk
    return head, body


def test_idle_keepalive_connection_is_closed_after_the_keepalive_timeout(short_keepalive):
    with socket.create_connection(_addr(short_keepalive), timeout=5) as s:
        for _ in range(2):  # the connection is reused while requests keep coming
            s.sendall(f"GET {_resolve('config.json')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, body = _read_response(s)
            assert _status(head) == 200 and body == FILES["config.json"]
        assert _closed_by_server(s)


def test_slow_reader_of_a_long_body_is_not_cut(short_keepalive):
    """A download read slowly for longer than the header and keep-alive timeouts gets every byte."""
    with socket.create_connection(_addr(short_keepalive), timeout=CLOSE_BOUND) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(f"GET {_resolve('model.safetensors')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        started = time.monotonic()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        while len(body) < len(BIG):
            chunk = s.recv(64 * 1024)
            assert chunk, f"cut after {len(body)} of {len(BIG)} bytes"
            body += chunk
            time.sleep(0.03)
        # Not a speed check: it makes sure the read outlasted both timeouts, or the test proves nothing.
        assert time.monotonic() - started > HEADER_TIMEOUT + SHORT_KEEPALIVE
        assert _status(head) == 200 and body == BIG


def test_many_slow_clients_past_the_cap_do_not_stop_a_download(guarded, tmp_path):
    """Four times the connection cap of header-dripping clients, each reconnecting as soon as it is
    closed: a normal download still gets verified bytes, and the server closed the slow ones."""
    closed = [0]
    lock = threading.Lock()

    def open_slow() -> socket.socket | None:
        try:
            s = socket.create_connection(_addr(guarded), timeout=5)
            s.sendall(b"GET /org/served/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n")
            s.setblocking(False)
            return s
        except OSError:
            return None

    def slow_clients(stop: threading.Event) -> None:
        conns = [open_slow() for _ in range(MAX_CONNECTIONS)]
        try:
            while not stop.wait(0.1):
                for i, s in enumerate(conns):
                    alive = s is not None
                    if s is not None:
                        try:
                            alive = s.recv(65536) != b""
                        except BlockingIOError:
                            with contextlib.suppress(OSError):
                                s.send(b"y")
                        except OSError:
                            alive = False
                    if not alive:
                        if s is not None:
                            s.close()
                            with lock:
                                closed[0] += 1
                        conns[i] = open_slow()
        finally:
            for s in conns:
                if s is not None:
                    s.close()

    _download_while(guarded, tmp_path, slow_clients)
    assert closed[0] > 0


def test_new_connection_gets_503_when_every_connection_is_busy(guarded):
    """At the cap with every connection sending a body to a client that does not read, a new
    client is told to come back (503 + Retry-After) instead of waiting unanswered."""
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            s = socket.create_connection(_addr(guarded), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET {_resolve('model.safetensors')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(16).startswith(b"HTTP/1.1 200")
            held.append(s)
        answer = _raw(guarded, f"GET {_resolve('config.json')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _status(answer) == 503, answer[:200]
        assert b"Retry-After: 1" in answer
    finally:
        for s in held:
            s.close()
    _assert_alive(guarded)
