"""What the hub replica (tests/support/hubreplica.py) records and how it rate-limits: a Record per
request, Counters for tests to read, and fixed windows per bucket with the IETF RateLimit headers."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

HUB, BRIDGE = "hub", "bridge"
# Quotas per 5-minute fixed window (hub docs, "Hub Rate limits").
WINDOW = 300.0
ANONYMOUS_QUOTAS = {"api": 500, "resolvers": 3000, "pages": 100}
FREE_QUOTAS = {"api": 1000, "resolvers": 5000, "pages": 200}


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
class Verdict:
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


class FixedWindows:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[tuple[str, str], list[float]] = {}  # (bucket, client) -> [start, count]

    def clear(self) -> None:
        with self.lock:
            self.state.clear()

    def hit(self, limits: RateLimits, bucket: str, client: str, tier: str) -> Verdict | None:
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
        return Verdict(
            allowed, bucket, quota, max(0, int(quota - count)), reset_in, max(1, round(limits.window))
        )
