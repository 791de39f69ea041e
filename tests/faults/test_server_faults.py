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
