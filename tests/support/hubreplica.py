"""A replica of huggingface.co as it answers in 2026, for tests: the hub and its Xet bridge (CDN).

Two origins on 127.0.0.1 (ephemeral ports), each a threaded HTTP/1.1 server:

- the **hub**: repo info (``/api/{type}s/{id}/revision/{rev}``), paginated tree (``Link: rel="next"``
  with a ``cursor``), ``/resolve/`` (302 to a signed bridge URL for LFS/Xet files, 200 for regular
  files), ``xet-read-token``, repo pages; ``X-Error-Code`` errors; gated and renamed repos; fixed-window
  rate limits per bucket (``api``, ``resolvers``, ``pages``) with the IETF ``RateLimit`` headers;
- the **bridge**: serves LFS/Xet blobs at signed URLs (HMAC-checked, expiring: 403 with S3 XML),
  Range (206 / 416), ``ETag: "<sha256>"``, and optionally CloudFront's "200 with the whole body to a
  Range request that accepts gzip".

Both origins can add a round-trip time before each answer's headers and cap every TCP connection's
rate. ``Counters`` records what clients did (resolver calls per file, 429s per bucket, bridge requests,
ranges, expired answers, Authorization values per origin, peak connections, bytes).

    with HubReplica([make_repo("org/llm", files)], url_expiry=2, rate_per_conn=8e6) as hub:
        ... HF_ENDPOINT=hub.hub_url ...
        hub.counters.resolves("model-00001-of-00002.safetensors")
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import hmac
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from tests.support.repos import git_blob_sha1, sha256_hex

HUB, BRIDGE = "hub", "bridge"
CHUNK = 256 * 1024
DEFAULT_PAGE_SIZE = 1000  # the hub's tree page size (50 with expand=true)
DEFAULT_URL_EXPIRY = 3600.0
# Quotas per 5-minute fixed window (hub docs, "Hub Rate limits").
WINDOW = 300.0
ANONYMOUS_QUOTAS = {"api": 500, "resolvers": 3000, "pages": 100}
FREE_QUOTAS = {"api": 1000, "resolvers": 5000, "pages": 200}
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".gguf",
    ".model",
    ".onnx",
    ".h5",
    ".msgpack",
    ".parquet",
)
TEXT_SUFFIXES = (".json", ".txt", ".md", ".py", ".jsonl", ".yaml", ".yml", ".csv", ".gitattributes")
POINTER_TEMPLATE = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_API = re.compile(r"^/api/(models|datasets|spaces)/(.+?)(?:/(revision|tree|xet-read-token)/(.*))?$")
_RESOLVE = re.compile(r"^/(datasets/|spaces/)?(.+?)/resolve/([^/]+)/(.+)$")
_PAGE = re.compile(r"^/(datasets/|spaces/)?([^/]+(?:/[^/]+)?)/?$")
_TYPE_OF_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_TYPE_OF_PREFIX = {None: "model", "datasets/": "dataset", "spaces/": "space"}
_PREFIX_OF_TYPE = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REASONS = {307: "Temporary Redirect", 416: "Range Not Satisfiable", 429: "Too Many Requests"}


# ---------------------------------------------------------------------------------- repos


def is_lfs_path(path: str, data: bytes) -> bool:
    """The hub's default .gitattributes tracks weights and archives with LFS; big files go there too."""
    return path.endswith(LFS_SUFFIXES) or len(data) > 10 * 1024 * 1024


def xet_hash_of(data: bytes) -> str:
    """A 64-hex content hash standing in for the Xet merkle hash (clients treat it as opaque)."""
    return hashlib.blake2b(data, digest_size=32, person=b"xet-file-hash").hexdigest()


@dataclass
class ReplicaFile:
    path: str
    data: bytes
    lfs: bool
    xet: bool  # served through the Xet bridge (has a xetHash); else plain LFS behind a CDN
    sha256: str = field(init=False)
    oid: str = field(init=False)  # git blob sha1: of the pointer file for LFS files
    xet_hash: str | None = field(init=False)
    pointer_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = sha256_hex(self.data)
        pointer = POINTER_TEMPLATE.format(oid=self.sha256, size=len(self.data)).encode()
        self.pointer_size = len(pointer)
        self.oid = git_blob_sha1(pointer if self.lfs else self.data)
        self.xet_hash = xet_hash_of(self.data) if self.lfs and self.xet else None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """What huggingface_hub names the cache blob: sha256 for LFS files, git blob sha1 for others."""
        return self.sha256 if self.lfs else self.oid

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        if self.xet_hash:
            entry["xetHash"] = self.xet_hash
        entry["path"] = self.path
        return entry


@dataclass
class ReplicaRepo:
    repo_id: str
    files: dict[str, ReplicaFile]
    repo_type: str = "model"
    branch: str = "main"
    commit: str = ""
    gated: bool = False  # files need an accepted token (repo info and tree stay public, as on the hub)
    private: bool = False  # everything needs an accepted token; others are told "not found"
    granted: set[str] = field(default_factory=set)  # tokens with access (gated or private)
    created: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1(f"{self.repo_type}/{self.repo_id}".encode())
            for path in sorted(self.files):
                digest.update(f"\0{path}\0{self.files[path].oid}".encode())
            self.commit = digest.hexdigest()

    @property
    def key(self) -> tuple[str, str]:
        return self.repo_type, self.repo_id

    @property
    def storage_id(self) -> str:
        """The 24-hex id the bridge URLs carry in place of the repo name."""
        return hashlib.sha1(f"{self.repo_type}/{self.repo_id}".encode()).hexdigest()[:24]

    def commit_for(self, revision: str) -> str | None:
        if revision in (self.branch, self.commit):
            return self.commit
        return None

    def directories(self) -> list[str]:
        dirs = {p.rsplit("/", i)[0] for p in self.files for i in range(1, p.count("/") + 1)}
        return sorted(dirs)

    def tree(self, subpath: str, recursive: bool) -> list[dict[str, Any]] | None:
        """Entries below ``subpath`` (None: no such folder). Directories carry a fake tree oid."""
        base = subpath.strip("/")
        if base and base not in self.directories():
            return None
        prefix = f"{base}/" if base else ""
        entries: list[tuple[str, dict[str, Any]]] = []
        for d in self.directories():
            rest = d[len(prefix) :]
            if d.startswith(prefix) and d != base and (recursive or "/" not in rest):
                tree_oid = hashlib.sha1(f"tree {d}".encode()).hexdigest()
                entries.append((d, {"type": "directory", "oid": tree_oid, "size": 0, "path": d}))
        for path, f in self.files.items():
            rest = path[len(prefix) :]
            if path.startswith(prefix) and (recursive or "/" not in rest):
                entries.append((path, f.tree_entry()))
        return [e for _, e in sorted(entries, key=lambda pe: pe[0])]

    def info(self, hub_url: str) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.created))
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        info: dict[str, Any] = {
            "_id": self.storage_id,
            "id": self.repo_id,
            "author": author,
            "sha": self.commit,
            "lastModified": stamp,
            "createdAt": stamp,
            "private": self.private,
            "gated": "manual" if self.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(self.files)],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        if self.repo_type == "model":
            info.update(modelId=self.repo_id, library_name="transformers", spaces=[])
        return info


def make_repo(
    repo_id: str,
    files: dict[str, bytes],
    *,
    repo_type: str = "model",
    xet: bool = True,
    lfs: Callable[[str, bytes], bool] = is_lfs_path,
    gated: bool = False,
    private: bool = False,
    granted: Iterable[str] = (),
    branch: str = "main",
) -> ReplicaRepo:
    """A repo as the hub stores it; with ``xet`` every LFS file is Xet-backed (has a xetHash)."""
    entries = {p: ReplicaFile(p, d, lfs=lfs(p, d), xet=xet) for p, d in files.items()}
    return ReplicaRepo(
        repo_id,
        entries,
        repo_type=repo_type,
        branch=branch,
        gated=gated,
        private=private,
        granted=set(granted),
    )


# ---------------------------------------------------------------------------------- counters


FileKey = tuple[str, str]  # (repo_id, path)


@dataclass
class Record:
    """One request as the replica answered it."""

    origin: str
    method: str
    target: str  # path and query as sent
    headers: dict[str, str]  # names in lower case
    conn: int
    started: float  # time.monotonic()
    file: FileKey | None = None
    status: int = 0
    reply_headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    ended: float = 0.0
    body_bytes: int = 0


@dataclass
class Counters:
    """What clients did. Read them under ``lock`` or through the helpers (they lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    resolver_calls: Counter[FileKey] = field(default_factory=Counter)  # every /resolve/ hit, 429s too
    resolver_methods: Counter[str] = field(default_factory=Counter)  # "HEAD" / "GET"
    api_calls: Counter[str] = field(default_factory=Counter)  # "info", "tree", "xet-read-token"
    page_calls: int = 0
    rate_limited: Counter[str] = field(default_factory=Counter)  # 429s sent, per bucket
    bridge_requests: Counter[FileKey] = field(default_factory=Counter)
    ranges_served: Counter[FileKey] = field(default_factory=Counter)  # 206 answers of the bridge
    range_ignored: Counter[FileKey] = field(default_factory=Counter)  # 200 to a Range (gzip quirk)
    expired: Counter[FileKey] = field(default_factory=Counter)  # 403s for an expired signature
    expired_urls: dict[FileKey, set[str]] = field(default_factory=dict)  # distinct expired signatures
    bad_signatures: int = 0
    auth_seen: dict[str, list[str]] = field(default_factory=lambda: {HUB: [], BRIDGE: []})
    open_connections: Counter[str] = field(default_factory=Counter)
    max_connections: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)  # body bytes per origin
    records: list[Record] = field(default_factory=list)

    def reset(self) -> None:
        with self.lock:
            for name in (
                "resolver_calls",
                "resolver_methods",
                "api_calls",
                "rate_limited",
                "bridge_requests",
                "ranges_served",
                "range_ignored",
                "expired",
                "bytes_sent",
            ):
                getattr(self, name).clear()
            self.expired_urls.clear()
            self.page_calls = self.bad_signatures = 0
            self.auth_seen = {HUB: [], BRIDGE: []}
            self.max_connections = Counter(self.open_connections)
            self.records.clear()

    @staticmethod
    def _sum(counter: Counter[FileKey], path: str | None, repo_id: str | None) -> int:
        return sum(
            n
            for (repo, p), n in counter.items()
            if (path is None or p == path) and (repo_id is None or repo == repo_id)
        )

    def resolves(self, path: str | None = None, repo_id: str | None = None) -> int:
        """/resolve/ hits (HEAD and GET, whatever the answer) for ``path`` (all files: None)."""
        with self.lock:
            return self._sum(self.resolver_calls, path, repo_id)

    def bridge_hits(self, path: str | None = None, repo_id: str | None = None) -> int:
        with self.lock:
            return self._sum(self.bridge_requests, path, repo_id)

    def ranges(self, path: str | None = None, repo_id: str | None = None) -> int:
        with self.lock:
            return self._sum(self.ranges_served, path, repo_id)

    def expired_answers(self, path: str | None = None, repo_id: str | None = None) -> int:
        with self.lock:
            return self._sum(self.expired, path, repo_id)

    def expirations(self, path: str | None = None, repo_id: str | None = None) -> int:
        """Distinct signed URLs of ``path`` that a client presented after they had expired."""
        with self.lock:
            return sum(
                len(sigs)
                for (repo, p), sigs in self.expired_urls.items()
                if (path is None or p == path) and (repo_id is None or repo == repo_id)
            )

    def too_many(self, bucket: str | None = None) -> int:
        """429s sent (in ``bucket``, or in all)."""
        with self.lock:
            return sum(self.rate_limited.values()) if bucket is None else self.rate_limited[bucket]

    def authorizations(self, origin: str) -> list[str]:
        with self.lock:
            return list(self.auth_seen[origin])

    def bridge_span(self, path: str, repo_id: str | None = None) -> float:
        """Seconds from the first bridge request for ``path`` to the end of the last answer."""
        with self.lock:
            recs = [
                r
                for r in self.records
                if r.origin == BRIDGE and r.file and r.file[1] == path and (repo_id in (None, r.file[0]))
            ]
        if not recs:
            return 0.0
        return max(r.ended or r.started for r in recs) - min(r.started for r in recs)

    def requests(self, origin: str | None = None) -> list[Record]:
        with self.lock:
            return [r for r in self.records if origin in (None, r.origin)]


# ---------------------------------------------------------------------------------- rate limits


@dataclass
class RateLimits:
    """Fixed windows of ``window`` seconds per client (token's user, else IP) and bucket.

    A quota of None means no limit. The first request of a client opens its window."""

    window: float = WINDOW
    anonymous: dict[str, int | None] = field(default_factory=lambda: dict(ANONYMOUS_QUOTAS))
    free: dict[str, int | None] = field(default_factory=lambda: dict(FREE_QUOTAS))

    @classmethod
    def tight(cls, bucket: str = "resolvers", quota: int = 3, window: float = 2.0) -> RateLimits:
        """Real quotas everywhere except ``bucket``, which gets ``quota`` per ``window`` seconds."""
        limits = cls(window=window)
        limits.anonymous[bucket] = quota
        limits.free[bucket] = quota
        return limits


@dataclass
class _Verdict:
    allowed: bool
    bucket: str
    quota: int
    remaining: int
    reset_in: int
    window: int

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("RateLimit", f'"{self.bucket}";r={self.remaining};t={self.reset_in}'),
            ("RateLimit-Policy", f'"fixed window";"{self.bucket}";q={self.quota};w={self.window}'),
        ]


class _Windows:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[tuple[str, str], list[float]] = {}  # (bucket, client) -> [start, count]

    def clear(self) -> None:
        with self.lock:
            self.state.clear()

    def hit(self, limits: RateLimits, bucket: str, client: str, tier: str) -> _Verdict | None:
        quota = (limits.free if tier == "free" else limits.anonymous).get(bucket)
        if quota is None:
            return None
        now = time.monotonic()
        with self.lock:
            start, count = self.state.get((bucket, client), (now, 0.0))
            if now >= start + limits.window:
                start, count = now, 0.0
            allowed = count < quota
            if allowed:
                count += 1
            self.state[(bucket, client)] = [start, count]
        reset_in = max(1, math.ceil(start + limits.window - now))
        return _Verdict(
            allowed, bucket, quota, max(0, int(quota - count)), reset_in, max(1, round(limits.window))
        )


# ---------------------------------------------------------------------------------- answers


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | memoryview = b""
    length: int | None = None  # Content-Length to announce when it is not len(body) (HEAD of a blob)
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    file: FileKey | None = None

    def add(self, name: str, value: str) -> _Reply:
        self.headers.append((name, value))
        return self


def _json(status: int, obj: Any, extra: Iterable[tuple[str, str]] = ()) -> _Reply:
    body = json.dumps(obj).encode()
    return _Reply(status, [("Content-Type", "application/json; charset=utf-8"), *extra], body)


def _hub_error(status: int, code: str | None, message: str, extra: Iterable[tuple[str, str]] = ()) -> _Reply:
    headers = [("X-Error-Message", message), *extra]
    if code:
        headers.insert(0, ("X-Error-Code", code))
    return _json(status, {"error": message}, headers)


def _s3_error(code: str, message: str, extra: str = "") -> _Reply:
    request_id = hashlib.md5(f"{time.time()}".encode()).hexdigest()[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        f"<RequestId>{request_id}</RequestId><HostId>replica</HostId></Error>"
    ).encode()
    return _Reply(403, [("Content-Type", "application/xml"), ("Server", "AmazonS3")], body)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end) for one satisfiable range, "unsatisfiable", or None (no usable Range: whole body)."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None  # multiple or malformed ranges: S3 answers the whole object
    if m.group(1):
        start = int(m.group(1))
        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    else:
        start, end = max(0, size - int(m.group(2))), size
    if start >= size or start >= end:
        return "unsatisfiable"
    return start, end


def _disposition(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"


# ---------------------------------------------------------------------------------- servers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    replica: HubReplica
    origin: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubreplica"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.replica = self.server.replica
        self.origin = self.server.origin
        self.conn_id = self.replica._conn_opened(self.origin, self.connection)
        self.pace_clock = 0.0

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.replica._conn_closed(self.origin, self.connection)

    def do_GET(self) -> None:
        self.replica._handle(self, head=False)

    def do_HEAD(self) -> None:
        self.replica._handle(self, head=True)

    def do_POST(self) -> None:
        self.replica._handle(self, head=False)

    def pace(self, n: int) -> None:
        """Hold this connection to ``rate_per_conn`` bytes/s (at most 50 ms of burst)."""
        rate = self.replica.rate_per_conn
        if not rate:
            return
        now = time.monotonic()
        self.pace_clock = max(self.pace_clock, now - 0.05) + n / rate
        delay = self.pace_clock - now
        if delay > 0:
            self.replica._stopping.wait(delay)


class HubReplica:
    """The hub and its Xet bridge on two ports; start with ``start()`` or as a context manager.

    Switches (plain attributes, changeable while running): ``page_size``, ``url_expiry`` (seconds a
    signed bridge URL lives), ``rate_per_conn`` (bytes/s per TCP connection, None: no cap), ``rtt``
    (seconds added before each answer's headers), ``limits`` (RateLimits, by default the hub's real
    quotas, so every answer carries RateLimit headers; None: no rate limits),
    ``retry_after`` (add Retry-After to 429s), ``gzip_range_quirk`` (bridge answers 200 with the whole
    body to a Range request accepting gzip), ``gzip_text`` (hub gzips regular text files for clients
    accepting gzip, chunked, as huggingface.co does).
    """

    def __init__(
        self,
        repos: Iterable[ReplicaRepo] = (),
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        url_expiry: float = DEFAULT_URL_EXPIRY,
        rate_per_conn: float | None = None,
        rtt: float = 0.0,
        limits: RateLimits | None = RateLimits(),
        retry_after: bool = False,
        gzip_range_quirk: bool = False,
        gzip_text: bool = True,
        users: dict[str, str] | None = None,
        secret: bytes = b"replica-signing-key",
    ) -> None:
        self.page_size = page_size
        self.url_expiry = url_expiry
        self.rate_per_conn = rate_per_conn
        self.rtt = rtt
        self._windows = _Windows()
        self._limits = copy.deepcopy(limits)
        self.retry_after = retry_after
        self.gzip_range_quirk = gzip_range_quirk
        self.gzip_text = gzip_text
        self.users: dict[str, str] = dict(users or {})  # token -> user name (valid tokens)
        self.secret = secret
        self.counters = Counters()
        self.repos: dict[tuple[str, str], ReplicaRepo] = {}
        self.renames: dict[tuple[str, str], str] = {}
        self._blobs: dict[str, tuple[ReplicaRepo, ReplicaFile]] = {}  # bridge path -> file
        self._issued: dict[str, float] = {}  # signature -> when it expires (time.time(); fractional)
        self._cuts: dict[FileKey, list[int]] = {}  # next bridge bodies of a file to cut after N bytes
        self._stopping = threading.Event()
        self._socks: set[socket.socket] = set()
        self._conn_seq = 0
        self._servers = {name: _Server(("127.0.0.1", 0), _Handler) for name in (HUB, BRIDGE)}
        for name, server in self._servers.items():
            server.replica, server.origin = self, name
        self._threads: list[threading.Thread] = []
        for repo in repos:
            self.add_repo(repo)

    # -- setup ------------------------------------------------------------------------------

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[HUB].server_address[1]}"

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[BRIDGE].server_address[1]}"

    def add_repo(self, repo: ReplicaRepo) -> ReplicaRepo:
        self.repos[repo.key] = repo
        for f in repo.files.values():
            if f.lfs:
                self._blobs[self._bridge_path(repo, f)] = (repo, f)
        return repo

    @property
    def limits(self) -> RateLimits | None:
        return self._limits

    @limits.setter
    def limits(self, value: RateLimits | None) -> None:
        """New quotas start new windows for every client."""
        self._limits = value
        self._windows.clear()

    def rename(self, old_id: str, new_id: str, repo_type: str = "model") -> None:
        """``old_id`` answers with a relative 307 to ``new_id``, as the hub does after a rename."""
        self.renames[(repo_type, old_id)] = new_id

    def cut_next(self, path: str, after: int, repo_id: str | None = None, times: int = 1) -> None:
        """The next ``times`` bridge bodies of ``path`` stop after ``after`` bytes (connection closed)."""
        repo = repo_id or next(r.repo_id for r in self.repos.values() if path in r.files)
        with self.counters.lock:
            self._cuts.setdefault((repo, path), []).extend([after] * times)

    def reset(self) -> None:
        """Forget counters and rate-limit windows (a fresh start for the next client)."""
        self.counters.reset()
        self._windows.clear()

    def start(self) -> HubReplica:
        for server in self._servers.values():
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        with self.counters.lock:
            socks = list(self._socks)
        for sock in socks:  # idle keep-alive connections would hold their threads
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubReplica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection bookkeeping -------------------------------------------------------------

    def _conn_opened(self, origin: str, sock: socket.socket) -> int:
        c = self.counters
        with c.lock:
            self._conn_seq += 1
            self._socks.add(sock)
            c.open_connections[origin] += 1
            c.max_connections[origin] = max(c.max_connections[origin], c.open_connections[origin])
            return self._conn_seq

    def _conn_closed(self, origin: str, sock: socket.socket) -> None:
        with self.counters.lock:
            self._socks.discard(sock)
            self.counters.open_connections[origin] -= 1

    # -- dispatch ---------------------------------------------------------------------------

    def _handle(self, h: _Handler, head: bool) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        record = Record(self.origin_of(h), h.command, h.path, headers, h.conn_id, time.monotonic())
        auth = h.headers.get("Authorization")
        with self.counters.lock:
            self.counters.records.append(record)
            if auth is not None:
                self.counters.auth_seen[record.origin].append(auth)
        try:
            if h.command == "POST":
                reply = _hub_error(405, None, "Method not allowed in this replica")
            elif record.origin == HUB:
                reply = self._hub(h)
            else:
                reply = self._bridge(h)
        except Exception as exc:  # a replica bug must show as a 500, not a hung client
            reply = _hub_error(500, None, f"replica error: {exc!r}")
        record.file, record.status = reply.file, reply.status
        record.reply_headers = {k.lower(): v for k, v in reply.headers}
        try:
            self._send(h, reply, head, record)
        except OSError:
            h.close_connection = True
        finally:
            record.ended = time.monotonic()

    @staticmethod
    def origin_of(h: _Handler) -> str:
        return h.server.origin

    def _send(self, h: _Handler, reply: _Reply, head: bool, record: Record) -> None:
        if self.rtt:
            self._stopping.wait(self.rtt)
        h.send_response(reply.status, _REASONS.get(reply.status))
        for name, value in reply.headers:
            h.send_header(name, value)
        if reply.chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header(
                "Content-Length", str(reply.length if reply.length is not None else len(reply.body))
            )
        h.end_headers()
        if head or not reply.body:
            return
        cut = None
        if reply.file and record.origin == BRIDGE:
            with self.counters.lock:
                pending = self._cuts.get(reply.file)
                cut = pending.pop(0) if pending else None
        view = memoryview(reply.body)
        limit = len(view) if cut is None else min(cut, len(view))
        step = CHUNK if not self.rate_per_conn else max(1024, min(CHUNK, int(self.rate_per_conn / 50)))
        pos = 0
        while pos < limit:
            piece = view[pos : min(limit, pos + step)]
            h.pace(len(piece))
            if reply.chunked:
                h.wfile.write(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
            else:
                h.wfile.write(piece)
            pos += len(piece)
            record.body_bytes = pos
            with self.counters.lock:
                self.counters.bytes_sent[record.origin] += len(piece)
        if cut is not None and cut < len(view):
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.chunked:
            h.wfile.write(b"0\r\n\r\n")

    # -- the hub ----------------------------------------------------------------------------

    def _client(self, h: _Handler) -> tuple[str | None, str, _Reply | None]:
        """(token, rate-limit identity, error): a bearer token must be one the hub knows."""
        auth = h.headers.get("Authorization") or ""
        if not auth:
            return None, f"ip:{h.client_address[0]}", None
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        user = self.users.get(token) or next(
            (f"user-of-{token[:6]}" for r in self.repos.values() if token in r.granted), None
        )
        if user is None:
            return (
                None,
                f"ip:{h.client_address[0]}",
                _hub_error(401, None, "Invalid credentials in Authorization header"),
            )
        return token, f"user:{user}", None

    def _limit(self, bucket: str, client: str) -> _Verdict | None:
        if self.limits is None:
            return None
        tier = "free" if client.startswith("user:") else "anonymous"
        verdict = self._windows.hit(self.limits, bucket, client, tier)
        if verdict is not None and not verdict.allowed:
            with self.counters.lock:
                self.counters.rate_limited[bucket] += 1
        return verdict

    def _too_many(self, verdict: _Verdict) -> _Reply:
        message = (
            f"You have been rate-limited; you can retry this action in about {verdict.reset_in} seconds. "
            f"If you're a new user, your limits will raise progressively over time. ({verdict.bucket})"
        )
        reply = _json(429, {"error": message}, verdict.headers())
        if self.retry_after:
            reply.add("Retry-After", str(verdict.reset_in))
        return reply

    def _hub(self, h: _Handler) -> _Reply:
        parts = urlsplit(h.path)
        path, query = parts.path, dict(parse_qsl(parts.query))
        token, client, auth_error = self._client(h)
        api, resolve, page = _API.match(path), _RESOLVE.match(path), None
        if not api and not resolve:
            page = _PAGE.match(path)
        bucket = "api" if api else "resolvers" if resolve else "pages"
        file_key: FileKey | None = None
        if resolve:
            file_key = (unquote(resolve.group(2)), unquote(resolve.group(4)))
            with self.counters.lock:
                self.counters.resolver_calls[file_key] += 1
                self.counters.resolver_methods[h.command] += 1
        elif api:
            with self.counters.lock:
                self.counters.api_calls[api.group(3) or "info"] += 1
        else:
            with self.counters.lock:
                self.counters.page_calls += 1
        verdict = self._limit(bucket, client)
        if verdict is not None and not verdict.allowed:
            reply = self._too_many(verdict)
        elif auth_error is not None:
            reply = auth_error
        elif api:
            reply = self._api(api, query, token, path, parts.query)
        elif resolve:
            reply = self._resolve(h, resolve, token, path, parts.query)
        elif page:
            reply = self._page(page, token)
        else:
            reply = _Reply(404, [("Content-Type", "text/html")], b"<h1>404</h1>")
        if verdict is not None and verdict.allowed:
            reply.headers.extend(verdict.headers())
        reply.file = reply.file or file_key
        reply.headers.append(("X-Request-Id", f"Root=1-{int(time.time()):x}-{h.conn_id:024x}"))
        reply.headers.append(("Access-Control-Allow-Origin", "https://huggingface.co"))
        reply.headers.append(("Vary", "Origin"))
        return reply

    def _find(
        self, repo_type: str, repo_id: str, token: str | None, path: str, query: str
    ) -> ReplicaRepo | _Reply:
        new_id = self.renames.get((repo_type, repo_id))
        if new_id is not None:
            location = path.replace(repo_id, new_id, 1) + (f"?{query}" if query else "")
            return _Reply(
                307, [("Location", location), ("Content-Type", "text/plain")], b"Temporary Redirect"
            )
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token not in repo.granted):
            # Anonymous callers get 401: the repo might exist and be private.
            status = 404 if token else 401
            return _hub_error(status, "RepoNotFound", "Repository not found")
        return repo

    def _gate(self, repo: ReplicaRepo, token: str | None) -> _Reply | None:
        if not repo.gated or token in repo.granted:
            return None
        kind = repo.repo_type
        if token is None:
            message = (
                f"Access to {kind} {repo.repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            return _hub_error(401, "GatedRepo", message)
        message = (
            f"Access to {kind} {repo.repo_id} is restricted and you are not in the authorized list. "
            f"Visit https://huggingface.co/{_PREFIX_OF_TYPE[kind]}{repo.repo_id} to ask for access."
        )
        return _hub_error(403, "GatedRepo", message)

    def _api(self, m: re.Match[str], query: dict[str, str], token: str | None, path: str, qs: str) -> _Reply:
        repo_type, repo_id = _TYPE_OF_PLURAL[m.group(1)], unquote(m.group(2))
        found = self._find(repo_type, repo_id, token, path, qs)
        if isinstance(found, _Reply):
            return found
        repo, kind, rest = found, m.group(3), m.group(4) or ""
        if kind == "tree":
            rev, _, sub = rest.partition("/")
            return self._tree(repo, unquote(rev), unquote(sub), query)
        revision = unquote(rest) if kind else repo.branch
        commit = repo.commit_for(revision)
        if commit is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if kind == "xet-read-token":
            denied = self._gate(repo, token)
            if denied:
                return denied
            exp = int(time.time() + 3600)
            access = "xet_" + hmac.new(self.secret, f"{repo.storage_id}:{exp}".encode(), "sha256").hexdigest()
            body = {"accessToken": access, "exp": exp, "casUrl": self.bridge_url}
            extra = [("X-Xet-Access-Token", access), ("X-Xet-Token-Expiration", str(exp))]
            return _json(200, body, [*extra, ("X-Xet-Cas-Url", self.bridge_url)])
        return _json(200, repo.info(self.hub_url))

    def _tree(self, repo: ReplicaRepo, revision: str, sub: str, query: dict[str, str]) -> _Reply:
        if repo.commit_for(revision) is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        entries = repo.tree(sub, query.get("recursive", "false").lower() in ("true", "1"))
        if entries is None:
            return _hub_error(404, "EntryNotFound", f'{sub} does not exist on "{revision}"')
        size = max(
            1, min(self.page_size, 50) if query.get("expand", "").lower() == "true" else self.page_size
        )
        start = 0
        if cursor := query.get("cursor"):
            try:
                start = int(json.loads(base64.urlsafe_b64decode(cursor + "==")).get("offset", 0))
            except ValueError:
                return _hub_error(400, None, "Invalid cursor")
        page = entries[start : start + size]
        reply = _json(200, page)
        if start + size < len(entries):
            token = (
                base64.urlsafe_b64encode(json.dumps({"offset": start + size}).encode()).decode().rstrip("=")
            )
            params = {k: v for k, v in query.items() if k != "cursor"}
            params["cursor"] = token
            rev = quote(revision, safe="")
            sub_part = "/" + quote(sub, safe="") if sub else ""
            url = f"{self.hub_url}/api/{repo.repo_type}s/{repo.repo_id}/tree/{rev}{sub_part}"
            reply.add("Link", f'<{url}?{urlencode(params)}>; rel="next"')
        return reply

    def _resolve(self, h: _Handler, m: re.Match[str], token: str | None, path: str, qs: str) -> _Reply:
        repo_type = _TYPE_OF_PREFIX[m.group(1)]
        found = self._find(repo_type, unquote(m.group(2)), token, path, qs)
        if isinstance(found, _Reply):
            return found
        repo, revision, file_path = found, unquote(m.group(3)), unquote(m.group(4))
        commit = repo.commit_for(revision)
        if commit is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        denied = self._gate(repo, token)
        if denied:
            return denied
        f = repo.files.get(file_path)
        if f is None:
            return _hub_error(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", commit)])
        common = [("X-Repo-Commit", commit), ("Accept-Ranges", "bytes")]
        if f.lfs:
            location = self._sign(repo, f)
            reply = _Reply(
                302,
                [
                    ("Location", location),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    *common,
                    ("ETag", f'"{f.oid}"'),
                    ("X-Linked-Etag", f'"{f.sha256}"'),
                    ("X-Linked-Size", str(f.size)),
                ],
                f"Found. Redirecting to {location}".encode(),
            )
            if f.xet_hash:
                refresh = f"{self.hub_url}/api/{repo.repo_type}s/{repo.repo_id}/xet-read-token/{commit}"
                reconstruction = f"{self.bridge_url}/v1/reconstructions/{f.xet_hash}"
                reply.add("X-Xet-Hash", f.xet_hash)
                reply.add(
                    "Link", f'<{refresh}>; rel="xet-auth", <{reconstruction}>; rel="xet-reconstruction-info"'
                )
            return reply
        headers = [
            *common,
            ("ETag", f'"{f.oid}"'),
            ("Content-Disposition", _disposition(f.path)),
            (
                "Content-Type",
                "text/plain; charset=utf-8" if f.path.endswith(TEXT_SUFFIXES) else "application/octet-stream",
            ),
        ]
        rng = h.headers.get("Range")
        accepts_gzip = "gzip" in (h.headers.get("Accept-Encoding") or "").lower()
        if (
            self.gzip_text
            and accepts_gzip
            and not rng
            and h.command == "GET"
            and f.path.endswith(TEXT_SUFFIXES)
        ):
            body = gzip.compress(f.data, mtime=0)
            return _Reply(200, [*headers, ("Content-Encoding", "gzip")], body, chunked=True)
        return self._ranged(f.data, rng, headers)

    def _page(self, m: re.Match[str], token: str | None) -> _Reply:
        repo = self.repos.get((_TYPE_OF_PREFIX[m.group(1)], m.group(2)))
        if repo is None or (repo.private and token not in repo.granted):
            return _Reply(404, [("Content-Type", "text/html; charset=utf-8")], b"<h1>404</h1>")
        items = "".join(f"<li>{p}</li>" for p in sorted(repo.files))
        body = f"<!doctype html><title>{repo.repo_id}</title><ul>{items}</ul>".encode()
        return _Reply(200, [("Content-Type", "text/html; charset=utf-8")], body)

    @staticmethod
    def _ranged(data: bytes, rng: str | None, headers: list[tuple[str, str]]) -> _Reply:
        wanted = _parse_range(rng, len(data))
        if wanted == "unsatisfiable":
            return _Reply(416, [*headers, ("Content-Range", f"bytes */{len(data)}")])
        if wanted is None:
            return _Reply(200, headers, data)
        assert isinstance(wanted, tuple)
        start, end = wanted
        body = memoryview(data)[start:end]
        return _Reply(206, [*headers, ("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")], body)

    # -- signed URLs and the bridge ---------------------------------------------------------

    @staticmethod
    def _bridge_path(repo: ReplicaRepo, f: ReplicaFile) -> str:
        if f.xet_hash:
            return f"/xet-bridge-us/{repo.storage_id}/{f.xet_hash}"
        return f"/repos/{repo.storage_id[:2]}/{repo.storage_id[2:4]}/{repo.storage_id}/{f.sha256}"

    def _signature(self, path: str, params: dict[str, str]) -> tuple[str, str]:
        signed = "\n".join(
            [
                path,
                params["X-Amz-Date"],
                params["X-Amz-Expires"],
                params["Expires"],
                params["response-content-disposition"],
            ]
        )
        mac = hmac.new(self.secret, signed.encode(), "sha256")
        cloudfront = base64.b64encode(hmac.new(self.secret, mac.digest(), "sha1").digest()).decode()
        return mac.hexdigest(), cloudfront.replace("+", "-").replace("=", "_").replace("/", "~")

    def _sign(self, repo: ReplicaRepo, f: ReplicaFile) -> str:
        # The URL's fields are whole seconds; it is dated at the next whole second so that what it
        # says (X-Amz-Date + X-Amz-Expires = Expires) is when it expires, never less than
        # ``url_expiry`` after it was issued.
        date = math.ceil(time.time())
        lifetime = max(1, math.ceil(self.url_expiry))
        path = self._bridge_path(repo, f)
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
            "X-Amz-Credential": f"cas/{time.strftime('%Y%m%d', time.gmtime(date))}/us-east-1/s3/aws4_request",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(date)),
            "X-Amz-Expires": str(lifetime),
            "X-Amz-SignedHeaders": "host",
            "X-Xet-Cas-Uid": "public",
            "response-content-disposition": _disposition(f.path),
            "x-id": "GetObject",
            "Expires": str(date + lifetime),
            "Key-Pair-Id": "K2L8F4GPSG1IFC",
        }
        amz, cloudfront = self._signature(path, params)
        params["X-Amz-Signature"] = amz
        params["Signature"] = cloudfront
        with self.counters.lock:
            self._issued[amz] = date + float(self.url_expiry)
        # The order of the real URLs: the X-Amz-* query of the S3 presign, then CloudFront's.
        order = [k for k in params if k not in ("Expires", "Signature", "Key-Pair-Id")]
        order += ["Expires", "Signature", "Key-Pair-Id"]
        return f"{self.bridge_url}{path}?{urlencode([(k, params[k]) for k in order])}"

    def _check_signature(self, path: str, params: dict[str, str]) -> tuple[bool, str]:
        """(valid, signature). Expiry is checked by the caller (the request's start counts)."""
        needed = ("X-Amz-Date", "X-Amz-Expires", "Expires", "response-content-disposition", "X-Amz-Signature")
        if any(k not in params for k in needed):
            return False, ""
        amz, cloudfront = self._signature(path, params)
        ok = hmac.compare_digest(amz, params["X-Amz-Signature"]) and hmac.compare_digest(
            cloudfront, params.get("Signature", "")
        )
        return ok, amz

    def _expired(self, signature: str, params: dict[str, str]) -> bool:
        """Checked when a request starts; a transfer under way is never cut (as S3 and CloudFront)."""
        with self.counters.lock:
            expires = self._issued.get(signature, float(params["Expires"]))
        return time.time() > expires

    def _bridge(self, h: _Handler) -> _Reply:
        parts = urlsplit(h.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        found = self._blobs.get(parts.path)
        if found is None:
            return (
                _s3_error("AccessDenied", "Access Denied") if parts.query else _Reply(404, body=b"Not Found")
            )
        repo, f = found
        key = (repo.repo_id, f.path)
        with self.counters.lock:
            self.counters.bridge_requests[key] += 1
        ok, signature = self._check_signature(parts.path, params)
        if not ok:
            with self.counters.lock:
                self.counters.bad_signatures += 1
            reply = _s3_error("AccessDenied", "Access Denied")
            reply.file = key
            return reply
        if self._expired(signature, params):
            with self.counters.lock:
                self.counters.expired[key] += 1
                self.counters.expired_urls.setdefault(key, set()).add(signature)
            server_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            extra = f"<X-Amz-Expires>{params['X-Amz-Expires']}</X-Amz-Expires>"
            extra += f"<ServerTime>{server_time}</ServerTime>"
            reply = _s3_error("AccessDenied", "Request has expired", extra)
            reply.file = key
            return reply
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("ETag", f'"{f.sha256}"'),
            ("Last-Modified", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(repo.created))),
            ("Content-Disposition", params["response-content-disposition"]),
            ("Accept-Ranges", "bytes"),
            ("X-Cache", "Miss from cloudfront"),
            ("Via", "1.1 replica.cloudfront.net (CloudFront)"),
            ("X-Amz-Cf-Pop", "LOCAL1-P1"),
            ("Access-Control-Allow-Origin", "*"),
        ]
        rng = h.headers.get("Range")
        accepts_gzip = "gzip" in (h.headers.get("Accept-Encoding") or "").lower()
        if rng and self.gzip_range_quirk and accepts_gzip:
            with self.counters.lock:
                self.counters.range_ignored[key] += 1
            rng = None
        reply = self._ranged(f.data, rng, headers)
        if reply.status == 206:
            with self.counters.lock:
                self.counters.ranges_served[key] += 1
        reply.file = key
        return reply


__all__ = [
    "BRIDGE",
    "HUB",
    "Counters",
    "HubReplica",
    "RateLimits",
    "Record",
    "ReplicaFile",
    "ReplicaRepo",
    "is_lfs_path",
    "make_repo",
    "xet_hash_of",
]
