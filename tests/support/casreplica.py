"""A replica of the Xet CAS (hub-docs ``docs/xet/``) for tests: the CAS API and its transfer origin.

Two origins on 127.0.0.1, each a threaded HTTP/1.1 server:

- the **CAS**: ``POST /v1/xorbs/default/{hash}`` (the xorb is parsed, every chunk decoded, the xorb hash
  recomputed), ``POST /v1/shards`` and ``/v2/shards`` (NDJSON progress; every term's verification hash,
  every file hash checked against the stored xorbs), ``GET /v1/`` and ``/v2/reconstructions/{file}``
  (optional ``Range``), batch reconstructions, ``HEAD`` of xorbs and files, ``GET /v1/chunks/...``
  (no global dedup here: 404), telemetry; bearer tokens with a read or write scope that expire;
- the **transfer** origin: xorb bytes at signed URLs (``X-Xet-Signed-Range``, ``Expires``,
  ``Signature``): any ``Range`` inside the signed ranges, several at once as ``multipart/byteranges``;
  403 once expired or outside them.

It is filled by the real client (``hf_xet``) uploading to it, so chunking, compression and hashes are
hf_xet's own; ``Counters`` record what downloaders did (reconstructions, xorb ranges, the chunks those
ranges cover, tokens, 401/403s). Faults: ``corrupt_next`` (the next xorb bodies are damaged),
``revoke_tokens`` (every token issued so far answers 401), short ``token_lifetime`` / ``url_expiry``.

    with CasReplica() as cas:
        infos = cas.upload({"model.safetensors": data})   # through hf_xet
        cas.read_token()  # {"accessToken", "exp", "casUrl"}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

from tests.support import xetspec as spec

CAS, TRANSFER = "cas", "transfer"
_HASH = r"([0-9a-f]{64})"
_RANGES = re.compile(r"^bytes=(\d+-\d+(?:\s*,\s*\d+-\d+)*)$")
BOUNDARY = "cas-replica-boundary"


@dataclass
class StoredXorb:
    data: bytes
    chunks: list[spec.XorbChunk]


@dataclass
class StoredFile:
    terms: list[spec.ShardTerm]
    size: int
    sha256: str | None


@dataclass
class UploadInfo:
    """What the upload of one file gave: its Xet hash (the hub's ``xetHash``), sha256 and size."""

    xet_hash: str
    sha256: str
    size: int


@dataclass
class CasCounters:
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    requests: Counter[str] = field(default_factory=Counter)  # "v1-reconstruction", "xorb-range", ...
    reconstructions: Counter[str] = field(default_factory=Counter)  # file hash -> queries
    xorb_requests: Counter[str] = field(default_factory=Counter)  # xorb hash -> transfer requests
    chunks_served: Counter[tuple[str, int]] = field(default_factory=Counter)  # (xorb, chunk index)
    transfer_bytes: int = 0
    tokens_issued: Counter[str] = field(default_factory=Counter)  # scope -> tokens
    unauthorized: int = 0  # 401s of the CAS (missing, unknown, expired or revoked token)
    refused_urls: Counter[str] = field(default_factory=Counter)  # "expired", "bad-signature", "range"
    corrupted: int = 0
    auth_seen: dict[str, list[str]] = field(default_factory=lambda: {CAS: [], TRANSFER: []})
    uploads: Counter[str] = field(default_factory=Counter)  # "xorb", "shard", "xorb-new"

    def reset(self) -> None:
        with self.lock:
            for name in ("requests", "reconstructions", "xorb_requests", "chunks_served", "tokens_issued"):
                getattr(self, name).clear()
            self.refused_urls.clear()
            self.uploads.clear()
            self.transfer_bytes = self.unauthorized = self.corrupted = 0
            self.auth_seen = {CAS: [], TRANSFER: []}

    def chunks_fetched(self) -> int:
        with self.lock:
            return sum(self.chunks_served.values())


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    length: int | None = None


def _json(status: int, obj: Any) -> _Reply:
    return _Reply(status, [("Content-Type", "application/json")], json.dumps(obj).encode())


def _error(status: int, message: str) -> _Reply:
    return _json(status, {"error": message})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    replica: CasReplica
    origin: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "casreplica"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.replica._lock:
            self.server.replica._socks.add(self.connection)
        self.pace_clock = 0.0

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.replica._lock:
                self.server.replica._socks.discard(self.connection)

    def _body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self.server.replica._handle(self, b"")

    def do_HEAD(self) -> None:
        self.server.replica._handle(self, b"")

    def do_POST(self) -> None:
        self.server.replica._handle(self, self._body())

    def pace(self, n: int) -> None:
        rate = self.server.replica.rate_per_conn
        if not rate:
            return
        now = time.monotonic()
        self.pace_clock = max(self.pace_clock, now - 0.05) + n / rate
        if self.pace_clock > now:
            self.server.replica._stopping.wait(self.pace_clock - now)


class CasReplica:
    """The CAS and its transfer origin; start with ``start()`` or as a context manager.

    Switches (plain attributes): ``token_lifetime`` and ``url_expiry`` (seconds), ``v2`` (False: the
    ``/v2/`` reconstruction answers 404, as older CAS deployments), ``rate_per_conn`` (bytes/s per
    transfer connection), ``max_ranges_per_url`` (v2 splits a xorb's ranges over several URLs).
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 3600.0,
        url_expiry: float = 3600.0,
        v2: bool = True,
        rate_per_conn: float | None = None,
        secret: bytes = b"cas-replica-key",
    ) -> None:
        self.token_lifetime = token_lifetime
        self.url_expiry = url_expiry
        self.v2 = v2
        self.rate_per_conn = rate_per_conn
        self.max_ranges_per_url = 500
        self.secret = secret
        self.counters = CasCounters()
        self.xorbs: dict[str, StoredXorb] = {}
        self.files: dict[str, StoredFile] = {}
        self._revoked_before = 0.0  # tokens issued before this (time.time()) answer 401
        self._url_issued: dict[str, float] = {}  # signature -> when it was issued
        self._urls_revoked_before = 0.0  # signed URLs issued before this answer 403, as if expired
        self._corrupt: list[tuple[str | None, str]] = []  # (xorb or None: any, mode)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._socks: set[socket.socket] = set()
        self._servers = {name: _Server(("127.0.0.1", 0), _Handler) for name in (CAS, TRANSFER)}
        for name, server in self._servers.items():
            server.replica, server.origin = self, name
        self._threads: list[threading.Thread] = []
        self.xet_cache = Path(tempfile.mkdtemp(prefix="casreplica-xet-"))

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def cas_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[CAS].server_address[1]}"

    @property
    def transfer_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[TRANSFER].server_address[1]}"

    def start(self) -> CasReplica:
        for server in self._servers.values():
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        shutil.rmtree(self.xet_cache, ignore_errors=True)

    def __enter__(self) -> CasReplica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- tokens ---------------------------------------------------------------------------------

    def _token(self, scope: str, issued: float, exp: float) -> str:
        claim = f"{scope}.{int(issued * 1e6)}.{int(exp * 1e6)}"  # microseconds: no dots inside
        mac = hmac.new(self.secret, claim.encode(), "sha256").hexdigest()[:32]
        return f"xet_{claim}.{mac}"

    def issue_token(self, scope: str = "read", lifetime: float | None = None) -> dict[str, Any]:
        """What the hub's ``xet-{scope}-token`` route answers (valid ``token_lifetime`` seconds)."""
        issued = time.time()
        exp = issued + (self.token_lifetime if lifetime is None else lifetime)
        with self.counters.lock:
            self.counters.tokens_issued[scope] += 1
        return {"accessToken": self._token(scope, issued, exp), "exp": int(exp), "casUrl": self.cas_url}

    def read_token(self) -> dict[str, Any]:
        return self.issue_token("read")

    def revoke_tokens(self) -> None:
        """Every token issued until now is refused (401), as after a revocation or an early expiry."""
        self._revoked_before = time.time()

    def revoke_urls(self) -> None:
        """Every signed xorb URL handed out until now is refused (403), as a CDN does once it expired."""
        self._urls_revoked_before = time.time()

    def _authorized(self, h: _Handler, scope: str) -> bool:
        auth = h.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token.startswith("xet_"):
            return False
        claim, _, mac = token[4:].rpartition(".")
        if not hmac.compare_digest(hmac.new(self.secret, claim.encode(), "sha256").hexdigest()[:32], mac):
            return False
        granted, issued_us, exp_us = claim.split(".")
        if time.time() > int(exp_us) / 1e6 or int(issued_us) / 1e6 <= self._revoked_before:
            return False
        return granted == "write" or scope == "read"

    # -- faults ---------------------------------------------------------------------------------

    def corrupt_next(self, times: int = 1, mode: str = "flip", xorb: str | None = None) -> None:
        """Damage the next ``times`` xorb bodies (of ``xorb``, or any): "flip" a byte of chunk data,
        "header" (a chunk header's version byte), "truncate" (close the connection halfway)."""
        with self._lock:
            self._corrupt.extend([(xorb, mode)] * times)

    def _take_corruption(self, xorb: str) -> str | None:
        with self._lock:
            for i, (which, mode) in enumerate(self._corrupt):
                if which in (None, xorb):
                    del self._corrupt[i]
                    return mode
        return None

    # -- uploading with the real client --------------------------------------------------------

    def upload(self, files: dict[str, bytes]) -> dict[str, UploadInfo]:
        """Upload ``files`` with hf_xet (its chunking, compression and hashing) and return each one's
        Xet hash. hf_xet's cache (its local shard cache, which it deduplicates against) belongs to this
        replica: a cache that remembered xorbs of another CAS would make it reference xorbs not here."""
        import hf_xet

        token = self.issue_token("write", lifetime=3600)  # setting up, not under test
        config = hf_xet.XetConfig().with_config({"telemetry.enabled": False})
        saved = os.environ.get("HF_XET_CACHE")
        os.environ["HF_XET_CACHE"] = str(self.xet_cache)
        try:
            session = hf_xet.XetSession(config)
            handles = {}
            with session.new_upload_commit(
                endpoint=self.cas_url, token=token["accessToken"], token_expiry_unix_secs=token["exp"]
            ) as commit:
                for name, data in files.items():
                    handles[name] = commit.start_upload_bytes(data, name=name)
        finally:
            if saved is None:
                os.environ.pop("HF_XET_CACHE", None)
            else:
                os.environ["HF_XET_CACHE"] = saved
        out = {}
        for name, handle in handles.items():
            info = handle.result().xet_info
            sha = info.sha256 or hashlib.sha256(files[name]).hexdigest()
            out[name] = UploadInfo(info.hash, sha, info.file_size)
        return out

    # -- dispatch -------------------------------------------------------------------------------

    def _handle(self, h: _Handler, body: bytes) -> None:
        origin = h.server.origin
        auth = h.headers.get("Authorization")
        if auth is not None:
            with self.counters.lock:
                self.counters.auth_seen[origin].append(auth)
        try:
            reply = self._cas(h, body) if origin == CAS else self._transfer(h)
        except spec.FormatError as e:
            reply = _error(400, str(e))
        except Exception as e:  # a replica bug shows as a 500, not a hung client
            reply = _error(500, f"replica error: {e!r}")
        if reply.status == 401:
            with self.counters.lock:
                self.counters.unauthorized += 1
        try:
            self._send(h, reply)
        except OSError:
            h.close_connection = True

    def _send(self, h: _Handler, reply: _Reply) -> None:
        h.send_response(reply.status)
        for name, value in reply.headers:
            h.send_header(name, value)
        h.send_header("Content-Length", str(reply.length if reply.length is not None else len(reply.body)))
        h.end_headers()
        if h.command == "HEAD" or not reply.body:
            return
        view = memoryview(reply.body)
        cut = len(view)
        if any(k == "X-Replica-Cut" for k, _ in reply.headers):
            cut = len(view) // 2
        step = 256 * 1024
        if self.rate_per_conn:
            step = max(1024, min(step, int(self.rate_per_conn / 50)))
        pos = 0
        while pos < cut:
            piece = view[pos : min(cut, pos + step)]
            h.pace(len(piece))
            h.wfile.write(piece)
            pos += len(piece)
            if h.server.origin == TRANSFER:
                with self.counters.lock:
                    self.counters.transfer_bytes += len(piece)
        if cut < len(view):
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

    def _count(self, kind: str) -> None:
        with self.counters.lock:
            self.counters.requests[kind] += 1

    # -- the CAS API ----------------------------------------------------------------------------

    def _cas(self, h: _Handler, body: bytes) -> _Reply:
        parts = urlsplit(h.path)
        path, method = parts.path, h.command
        if path == "/v1/telemetry":
            self._count("telemetry")
            return _json(200, {})
        if m := re.fullmatch(r"/v1/xorb-grants/default/" + _HASH, path):
            self._count("xorb-grant")  # not in the spec: the client then uploads the xorb itself
            return _error(404, "not found")
        write = method == "POST" and not path.startswith("/v1/reconstructions")
        if not self._authorized(h, "write" if write else "read"):
            self._count("unauthorized")
            return _error(401, "invalid or expired token")
        if m := re.fullmatch(r"/v([12])/reconstructions/" + _HASH, path):
            if m.group(1) == "2" and not self.v2:
                self._count("v2-reconstruction-404")
                return _error(404, "not found")
            self._count(f"v{m.group(1)}-reconstruction")
            return self._reconstruction(m.group(2), h.headers.get("Range"), int(m.group(1)))
        if path == "/v1/reconstructions":
            self._count("batch-reconstruction")
            if method == "POST":
                ids = [k["hash"] for k in json.loads(body or b"[]")]
            else:
                ids = parse_qs(parts.query).get("file_id", [])
            return self._batch(ids)
        if m := re.fullmatch(r"/v1/xorbs/default/" + _HASH, path):
            if method == "HEAD":
                found = self.xorbs.get(m.group(1))
                return _Reply(200, length=len(found.data)) if found else _Reply(404)
            self._count("xorb-upload")
            return self._put_xorb(m.group(1), body)
        if path in ("/v1/shards", "/v2/shards") and method == "POST":
            self._count("shard-upload")
            result = self._put_shard(body)
            if path == "/v1/shards":
                return _json(200, {"result": result})
            lines = [{"type": "validating", "verified": 1, "total": 1}, {"type": "result", "result": result}]
            text = "".join(json.dumps(line) + "\n" for line in lines).encode()
            ndjson = [("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-cache")]
            return _Reply(200, ndjson, text)
        if m := re.fullmatch(r"/v1/files/" + _HASH, path):
            found_file = self.files.get(m.group(1))
            return _Reply(200, length=found_file.size) if found_file else _Reply(404)
        if re.fullmatch(r"/v1/chunks/[a-z-]+/" + _HASH, path):
            self._count("global-dedup")
            return _error(404, "chunk not tracked by global dedup")
        return _error(404, f"no route {method} {path}")

    def _put_xorb(self, name: str, data: bytes) -> _Reply:
        chunks, _ = spec.parse_xorb(data)
        actual = spec.hash_to_hex(spec.xorb_hash([(c.hash, c.size) for c in chunks]))
        if actual != name:
            return _error(400, f"xorb hash {actual} does not match {name}")
        with self._lock:
            inserted = name not in self.xorbs
            self.xorbs.setdefault(name, StoredXorb(data, chunks))
        with self.counters.lock:
            self.counters.uploads["xorb"] += 1
            self.counters.uploads["xorb-new"] += inserted
        return _json(200, {"was_inserted": inserted})

    def _put_shard(self, data: bytes) -> int:
        shard = spec.parse_shard(data)
        with self._lock:
            xorbs = dict(self.xorbs)
        for f in shard.files:
            pairs: list[tuple[bytes, int]] = []
            if len(f.verification) != len(f.terms):
                raise spec.FormatError("shard upload without a verification entry per term")
            for term, check in zip(f.terms, f.verification, strict=True):
                stored = xorbs.get(spec.hash_to_hex(term.xorb))
                if stored is None or not 0 <= term.start < term.end <= len(stored.chunks):
                    raise spec.FormatError(f"term refers to a missing xorb or chunk range: {term}")
                used = stored.chunks[term.start : term.end]
                if (
                    sum(c.size for c in used) != term.unpacked
                    or spec.verification_hash([c.hash for c in used]) != check
                ):
                    raise spec.FormatError("a term's length or verification hash is wrong")
                pairs += [(c.hash, c.size) for c in used]
            if spec.file_hash(pairs) != f.file_hash:
                raise spec.FormatError("file hash does not match its terms")
            sha = spec.hash_to_hex(f.sha256) if f.sha256 else None
            with self._lock:
                self.files[spec.hash_to_hex(f.file_hash)] = StoredFile(f.terms, sum(s for _, s in pairs), sha)
        with self.counters.lock:
            self.counters.uploads["shard"] += 1
        return 1

    # -- reconstructions ------------------------------------------------------------------------

    def _select(self, f: StoredFile, start: int, end: int) -> tuple[int, list[spec.ShardTerm]]:
        """The terms for file bytes [start, end), each cut down to the chunks that hold those bytes,
        and the offset of ``start`` into the first (as the CAS answers a ``Range``)."""
        chosen: list[spec.ShardTerm] = []
        offset = 0
        pos = 0
        for term in f.terms:
            if pos + term.unpacked > start and pos < end:
                stored = self.xorbs[spec.hash_to_hex(term.xorb)]
                sizes = [c.size for c in stored.chunks[term.start : term.end]]
                first, at = term.start, pos
                for size in sizes:  # skip whole chunks before start
                    if at + size > start:
                        break
                    first, at = first + 1, at + size
                last, stop = first, at
                while last < term.end and stop < end:
                    stop += sizes[last - term.start]
                    last += 1
                if not chosen:
                    offset = start - at
                chosen.append(spec.ShardTerm(term.xorb, stop - at, first, last))
            pos += term.unpacked
        return offset, chosen

    def _ranges(self, terms: list[spec.ShardTerm]) -> dict[str, list[tuple[int, int]]]:
        """Per xorb, the chunk ranges the terms need, overlapping and adjacent ones merged."""
        wanted: dict[str, list[tuple[int, int]]] = {}
        for t in terms:
            wanted.setdefault(spec.hash_to_hex(t.xorb), []).append((t.start, t.end))
        merged: dict[str, list[tuple[int, int]]] = {}
        for name, spans in wanted.items():
            out: list[tuple[int, int]] = []
            for s, e in sorted(spans):
                if out and s <= out[-1][1]:
                    out[-1] = (out[-1][0], max(out[-1][1], e))
                else:
                    out.append((s, e))
            merged[name] = out
        return merged

    def _byte_range(self, name: str, chunks: tuple[int, int]) -> tuple[int, int]:
        stored = self.xorbs[name]
        return stored.chunks[chunks[0]].offset, stored.chunks[chunks[1] - 1].end - 1

    def _sign(self, name: str, byte_ranges: list[tuple[int, int]]) -> str:
        signed = "bytes=" + ",".join(f"{s}-{e}" for s, e in byte_ranges)
        expires = str(int(time.time() + self.url_expiry))
        mac = hmac.new(self.secret, f"/xorb/default/{name}\n{signed}\n{expires}".encode(), "sha256")
        with self._lock:
            self._url_issued[mac.hexdigest()] = time.time()
        query = f"X-Xet-Signed-Range={quote(signed, safe='')}&Expires={expires}&Signature={mac.hexdigest()}"
        return f"{self.transfer_url}/xorb/default/{name}?{query}&Key-Pair-Id=REPLICA"

    def _term_json(self, t: spec.ShardTerm) -> dict[str, Any]:
        return {
            "hash": spec.hash_to_hex(t.xorb),
            "unpacked_length": t.unpacked,
            "range": {"start": t.start, "end": t.end},
        }

    def _fetch_info(self, terms: list[spec.ShardTerm]) -> dict[str, list[dict[str, Any]]]:
        info: dict[str, list[dict[str, Any]]] = {}
        for name, spans in self._ranges(terms).items():
            for span in spans:
                first, last = self._byte_range(name, span)
                info.setdefault(name, []).append(
                    {
                        "range": {"start": span[0], "end": span[1]},
                        "url": self._sign(name, [(first, last)]),
                        "url_range": {"start": first, "end": last},
                    }
                )
        return info

    def _reconstruction(self, file_id: str, range_header: str | None, version: int) -> _Reply:
        with self.counters.lock:
            self.counters.reconstructions[file_id] += 1
        f = self.files.get(file_id)
        if f is None:
            return _error(404, "file not found")
        start, end = 0, f.size
        if range_header:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if not m:
                return _error(400, f"bad Range {range_header!r}")
            start = int(m.group(1))
            end = min(f.size, int(m.group(2)) + 1) if m.group(2) else f.size
            if start >= f.size:
                return _error(416, "range start beyond the end of the file")
        offset, terms = self._select(f, start, end)
        answer: dict[str, Any] = {
            "offset_into_first_range": offset,
            "terms": [self._term_json(t) for t in terms],
        }
        if version == 1:
            answer["fetch_info"] = self._fetch_info(terms)
            return _json(200, answer)
        xorbs: dict[str, list[dict[str, Any]]] = {}
        for name, spans in self._ranges(terms).items():
            for i in range(0, len(spans), self.max_ranges_per_url):
                group = spans[i : i + self.max_ranges_per_url]
                byte_ranges = [self._byte_range(name, span) for span in group]
                xorbs.setdefault(name, []).append(
                    {
                        "url": self._sign(name, byte_ranges),
                        "ranges": [
                            {"chunks": {"start": s[0], "end": s[1]}, "bytes": {"start": b[0], "end": b[1]}}
                            for s, b in zip(group, byte_ranges, strict=True)
                        ],
                    }
                )
        answer["xorbs"] = xorbs
        return _json(200, answer)

    def _batch(self, ids: Iterable[str]) -> _Reply:
        files: dict[str, Any] = {}
        every: list[spec.ShardTerm] = []
        for file_id in ids:
            f = self.files.get(file_id)
            if f is None:
                return _error(404, f"file {file_id} not found")
            files[file_id] = [self._term_json(t) for t in f.terms]
            every += f.terms
        return _json(200, {"files": files, "fetch_info": self._fetch_info(every)})

    # -- the transfer origin --------------------------------------------------------------------

    def _refuse(self, why: str) -> _Reply:
        with self.counters.lock:
            self.counters.refused_urls[why] += 1
        body = f"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>{why}</Message></Error>"
        return _Reply(403, [("Content-Type", "application/xml")], body.encode())

    def _transfer(self, h: _Handler) -> _Reply:
        parts = urlsplit(h.path)
        m = re.fullmatch(r"/xorb/default/" + _HASH, parts.path)
        if m is None or m.group(1) not in self.xorbs:
            return _Reply(404, body=b"Not Found")
        name = m.group(1)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        signed, expires = query.get("X-Xet-Signed-Range", ""), query.get("Expires", "")
        mac = hmac.new(self.secret, f"/xorb/default/{name}\n{signed}\n{expires}".encode(), "sha256")
        if not hmac.compare_digest(mac.hexdigest(), query.get("Signature", "")):
            return self._refuse("bad-signature")
        with self._lock:
            issued = self._url_issued.get(mac.hexdigest(), 0.0)
        if time.time() > int(expires) or issued <= self._urls_revoked_before:
            return self._refuse("expired")
        allowed = _parse_ranges(unquote(signed))
        asked = _parse_ranges(h.headers.get("Range") or "")
        if not asked or not allowed or not all(any(a <= s and e <= b for a, b in allowed) for s, e in asked):
            return self._refuse("range")
        stored = self.xorbs[name]
        if any(e >= len(stored.data) for _, e in asked):
            return _Reply(416, [("Content-Range", f"bytes */{len(stored.data)}")])
        with self.counters.lock:
            self.counters.requests["xorb-range"] += 1
            self.counters.xorb_requests[name] += 1
            for s, e in asked:
                for i, c in enumerate(stored.chunks):
                    if c.offset >= s and c.end - 1 <= e:
                        self.counters.chunks_served[(name, i)] += 1
        bodies = [bytearray(stored.data[s : e + 1]) for s, e in asked]
        mode = self._take_corruption(name)
        extra: list[tuple[str, str]] = []
        if mode is not None:
            with self.counters.lock:
                self.counters.corrupted += 1
            target = bodies[0]
            if mode == "flip":
                csize = int.from_bytes(target[1:4], "little")  # inside the first chunk's data
                target[8 + min(csize - 1, csize // 2)] ^= 0x5A
            elif mode == "header":
                target[0] = 7
            elif mode == "truncate":
                extra.append(("X-Replica-Cut", "1"))
        size = len(stored.data)
        common = [("Accept-Ranges", "bytes"), ("ETag", f'"{name}"'), *extra]
        if len(asked) == 1:
            s, e = asked[0]
            headers = [
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", f"bytes {s}-{e}/{size}"),
            ]
            return _Reply(206, [*headers, *common], bytes(bodies[0]))
        out = bytearray()
        for (s, e), part in zip(asked, bodies, strict=True):
            out += f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n".encode()
            out += f"Content-Range: bytes {s}-{e}/{size}\r\n\r\n".encode() + part + b"\r\n"
        out += f"--{BOUNDARY}--\r\n".encode()
        multipart = ("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}")
        return _Reply(206, [multipart, *common], bytes(out))


def weights_like(nbytes: int, seed: int) -> bytes:
    """Bytes shaped like a checkpoint's tensors (bf16-ish float32 values near zero): hf_xet stores
    their chunks as BG4+LZ4, where random bytes would be stored uncompressed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(nbytes // 4 + 1) * 0.02).astype(np.float32)
    values = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)  # a bf16's precision
    return values.tobytes()[:nbytes]


def publish(hub: Any, cas: CasReplica, repo: Any) -> Any:
    """Put ``repo`` (a ReplicaRepo) on the hub replica with its Xet files uploaded to ``cas`` by hf_xet:
    their ``xetHash`` becomes the real one, and the hub's xet-read-token route answers with ``cas``."""
    xet_files = {p: f for p, f in repo.files.items() if f.xet_hash}
    infos = cas.upload({p: f.data for p, f in xet_files.items()}) if xet_files else {}
    for path, f in xet_files.items():
        assert infos[path].sha256 == f.sha256
        f.xet_hash = infos[path].xet_hash
    hub.xet_cas = cas
    hub.add_repo(repo)
    return repo


def _parse_ranges(header: str) -> list[tuple[int, int]]:
    m = _RANGES.match(header.strip())
    if not m:
        return []
    out = []
    for part in m.group(1).split(","):
        s, e = part.strip().split("-")
        if int(e) < int(s):
            return []
        out.append((int(s), int(e)))
    return out
