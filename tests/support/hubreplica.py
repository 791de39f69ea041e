"""A replica of huggingface.co as it answers in 2026, for tests: the hub and its Xet bridge (CDN).

Two origins on 127.0.0.1 (ephemeral ports), each a threaded HTTP/1.1 server:

- the **hub**: repo info (``/api/{type}s/{id}/revision/{rev}``), paginated tree (``Link: rel="next"``
  with a ``cursor``), ``POST .../paths-info/{rev}``, ``/resolve/`` (302 to a signed bridge URL for
  LFS/Xet files, 200 for regular files), ``xet-read-token``, repo pages; ``X-Error-Code`` errors; gated
  and renamed repos; fixed-window rate limits per bucket (``api``, ``resolvers``, ``pages``) with the
  IETF ``RateLimit`` headers;
- the **bridge**: serves LFS/Xet blobs at signed URLs (HMAC-checked, expiring: 403 with S3 XML),
  Range (206 / 416), ``ETag: "<sha256>"``, and optionally CloudFront's "200 with the whole body to a
  Range request that accepts gzip".

Both origins can add a round-trip time before each answer's headers and cap every TCP connection's
rate. ``Counters`` records what clients did (resolver calls per file, 429s per bucket, bridge requests,
ranges, expired answers, Authorization values per origin, peak connections, bytes).

    with HubReplica([make_repo("org/llm", files)], url_expiry=2, rate_per_conn=8e6) as hub:
        ... HF_ENDPOINT=hub.hub_url ...
        hub.counters.resolves("model-00001-of-00002.safetensors")

Repos live in hubreplica_repos.py, counters and rate limits in hubreplica_counters.py (all re-exported).
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from tests.support.hubreplica_counters import (
    BRIDGE,
    HUB,
    Counters,
    FileKey,
    FixedWindows,
    RateLimits,
    Record,
    Verdict,
)
from tests.support.hubreplica_repos import ReplicaFile, ReplicaRepo, is_lfs_path, make_repo, xet_hash_of

CHUNK = 256 * 1024
DEFAULT_PAGE_SIZE = 1000  # the hub's tree page size (50 with expand=true)
DEFAULT_URL_EXPIRY = 3600.0
TEXT_SUFFIXES = (".json", ".txt", ".md", ".py", ".jsonl", ".yaml", ".yml", ".csv", ".gitattributes")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_API = re.compile(
    r"^/api/(models|datasets|spaces)/(.+?)(?:/(revision|tree|paths-info|xet-read-token)/(.*))?$"
)
_RESOLVE = re.compile(r"^/(datasets/|spaces/)?(.+?)/resolve/([^/]+)/(.+)$")
_PAGE = re.compile(r"^/(datasets/|spaces/)?([^/]+(?:/[^/]+)?)/?$")
_TYPE_OF_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_TYPE_OF_PREFIX = {None: "model", "datasets/": "dataset", "spaces/": "space"}
_PREFIX_OF_TYPE = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REASONS = {307: "Temporary Redirect", 416: "Range Not Satisfiable", 429: "Too Many Requests"}


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
        self._windows = FixedWindows()
        self._limits = copy.deepcopy(limits)
        self.retry_after = retry_after
        self.gzip_range_quirk = gzip_range_quirk
        self.gzip_text = gzip_text
        self.users: dict[str, str] = dict(users or {})  # token -> user name (valid tokens)
        self.secret = secret
        self.counters = Counters()
        # A CAS (tests/support/casreplica.py) holding the Xet files' bytes: xet-read-token then
        # answers with its tokens and casUrl. None: that route answers 404 (Xet clients use the bridge).
        self.xet_cas: Any = None
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

    def latest_expiry(self) -> float:
        """When the signed URL issued last stops working (``time.time()``; 0 before any)."""
        with self.counters.lock:
            return max(self._issued.values(), default=0.0)

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
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if h.command == "POST" else b""
        try:
            if h.command == "POST" and not (record.origin == HUB and "/paths-info/" in h.path):
                reply = _hub_error(405, None, "Method not allowed in this replica")
            elif record.origin == HUB:
                reply = self._hub(h, body)
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

    def _limit(self, bucket: str, client: str) -> Verdict | None:
        if self.limits is None:
            return None
        tier = "free" if client.startswith("user:") else "anonymous"
        verdict = self._windows.hit(self.limits, bucket, client, tier)
        if verdict is not None and not verdict.allowed:
            with self.counters.lock:
                self.counters.rate_limited[bucket] += 1
        return verdict

    def _too_many(self, verdict: Verdict) -> _Reply:
        message = (
            f"You have been rate-limited; you can retry this action in about {verdict.reset_in} seconds. "
            f"If you're a new user, your limits will raise progressively over time. ({verdict.bucket})"
        )
        reply = _json(429, {"error": message}, verdict.headers())
        if self.retry_after:
            reply.add("Retry-After", str(verdict.reset_in))
        return reply

    def _hub(self, h: _Handler, body: bytes = b"") -> _Reply:
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
        elif api and h.command == "POST":
            reply = self._paths_info(api, h.headers.get("Content-Type") or "", body, token, path, parts.query)
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
        if kind == "paths-info":
            return _hub_error(405, None, "paths-info takes POST")
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
            if self.xet_cas is None:  # no CAS behind this hub: Xet clients must take the bridge
                return _hub_error(404, None, "Xet storage is not available on this hub replica")
            body = self.xet_cas.read_token()
            extra = [
                ("X-Xet-Access-Token", body["accessToken"]),
                ("X-Xet-Token-Expiration", str(body["exp"])),
                ("X-Xet-Cas-Url", body["casUrl"]),
            ]
            return _json(200, body, extra)
        return _json(200, repo.info(self.hub_url))

    def _paths_info(
        self, m: re.Match[str], content_type: str, body: bytes, token: str | None, path: str, qs: str
    ) -> _Reply:
        """``POST /api/{type}s/{id}/paths-info/{rev}`` (form or JSON ``paths``): the tree entries of the
        paths that exist, in the order asked; as public as the tree (gates guard the files only)."""
        found = self._find(_TYPE_OF_PLURAL[m.group(1)], unquote(m.group(2)), token, path, qs)
        if isinstance(found, _Reply):
            return found
        revision = unquote(m.group(4) or "")
        if found.commit_for(revision) is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if "json" in content_type:
            try:
                asked = json.loads(body or b"{}").get("paths", [])
            except (ValueError, AttributeError):
                return _hub_error(400, None, "Invalid JSON body")
        else:
            asked = [v for k, v in parse_qsl(body.decode(), keep_blank_values=True) if k == "paths"]
        entries = {e["path"]: e for e in found.tree("", recursive=True) or []}
        wanted = [str(p).strip("/") for p in (asked if isinstance(asked, list) else [asked])]
        return _json(200, [entries[p] for p in wanted if p in entries])

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
                cas_url = self.xet_cas.cas_url if self.xet_cas is not None else self.bridge_url
                reconstruction = f"{cas_url}/v1/reconstructions/{f.xet_hash}"
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
