"""Rate limits obeyed as one client: what a server says of its quotas, shared by every thread.

Servers say how much is left with the IETF ``RateLimit`` header (``"resolvers";r=12;t=40``: 12 calls
left in bucket ``resolvers``, 40 s to the window's reset), its ``RateLimit-Policy`` (``q`` calls per
``w`` seconds) and, on a 429, sometimes ``Retry-After``. One ``RateLimiter`` per process keeps, per
origin and bucket, until when requests must wait (a 429, or nothing left) and how far apart they
must go when little is left, so that 64 connections pause together instead of each retrying on
its own. A request names its bucket when its caller knows it (``bucket="resolvers"``); one that
does not counts against its origin as a whole.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

ANY = ""  # the bucket of requests whose caller names none: the whole origin
LOW_WATER = 8  # calls left at which requests start to be spread over the rest of the window
MAX_WAIT = 3600.0  # no single pause is longer than this, whatever a header says
_ITEM = re.compile(r'"([^"]*)"|([A-Za-z][\w.-]*)\s*=\s*("[^"]*"|[^;,\s]+)')

log = logging.getLogger("hubget")


@dataclass(frozen=True)
class Quota:
    """One item of a ``RateLimit`` answer: calls ``remaining`` in ``bucket``, ``reset`` seconds to go."""

    bucket: str
    remaining: int | None
    reset: float | None


def _items(value: str) -> list[tuple[list[str], dict[str, str]]]:
    """Split a structured-field list (``"a";r=1;t=2, "b";r=0``) into names and parameters, leniently:
    quoted strings are names, ``k=v`` pairs are parameters."""
    out: list[tuple[list[str], dict[str, str]]] = []
    for part in value.split(","):
        names: list[str] = []
        params: dict[str, str] = {}
        for m in _ITEM.finditer(part):
            if m.group(1) is not None:
                names.append(m.group(1))
            else:
                params[m.group(2).lower()] = m.group(3).strip('"')
        if names or params:
            out.append((names, params))
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def parse_ratelimit(value: str | None) -> list[Quota]:
    """The quotas a ``RateLimit`` header states (an item without a name belongs to bucket ``ANY``)."""
    quotas: list[Quota] = []
    for names, params in _items(value or ""):
        remaining = _number(params.get("r", params.get("remaining")))
        reset = _number(params.get("t", params.get("reset")))
        bucket = names[-1] if names else ANY
        quotas.append(Quota(bucket, int(remaining) if remaining is not None else None, reset))
    return quotas


def parse_policy(value: str | None) -> dict[str, tuple[int, float]]:
    """``RateLimit-Policy``: bucket -> (quota, window seconds). The bucket is the item's last quoted
    name (the hub writes ``"fixed window";"resolvers";q=3000;w=300``)."""
    policies: dict[str, tuple[int, float]] = {}
    for names, params in _items(value or ""):
        q, w = _number(params.get("q")), _number(params.get("w"))
        if q is not None and w:
            policies[names[-1] if names else ANY] = (int(q), w)
    return policies


@dataclass
class _Bucket:
    closed_until: float = 0.0  # monotonic: no request before this
    next_slot: float = 0.0  # monotonic: the next request's turn while requests are spread out
    spacing: float = 0.0  # seconds between requests while little is left (0: no spreading)
    spacing_until: float = 0.0  # the window's reset: spreading ends there
    announced: float = 0.0  # closed_until of the last pause announced (one message per pause)


class RateLimiter:
    """Pauses and spacing per (origin, bucket), shared by every thread of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._listeners: list[Callable[[str], None]] = []

    # -- who hears about pauses ---------------------------------------------------------------

    def add_listener(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _say(self, text: str) -> None:
        listeners = list(self._listeners)
        if not listeners:
            log.warning("hubget: %s", text)
        for fn in listeners:
            fn(text)

    # -- before and after a request -----------------------------------------------------------

    def delay(self, origin: str, bucket: str | None) -> float:
        """Seconds the caller must wait before sending (its turn is taken: call once per request)."""
        now = time.monotonic()
        keys = {(origin, bucket or ANY), (origin, ANY)}
        with self._lock:
            start = now
            for key in keys:
                b = self._buckets.get(key)
                if b is not None:
                    start = max(start, b.closed_until)
            b = self._buckets.get((origin, bucket or ANY))
            if b is not None and b.spacing and start < b.spacing_until:
                start = max(start, b.next_slot)
                b.next_slot = start + b.spacing
        return start - now

    def observe(
        self,
        origin: str,
        bucket: str | None,
        status: int,
        headers: Mapping[str, str],
        *,
        host: str,
        anonymous: bool,
        fallback: Callable[[], float],
    ) -> float | None:
        """Learn from an answer's headers; for a 429, return the seconds to wait before asking again:
        the reset time the ``RateLimit`` header gives (plus jitter), else ``fallback()`` (the
        client's ``Retry-After`` handling, capped, or its backoff)."""
        quotas = parse_ratelimit(headers.get("RateLimit"))
        policies = parse_policy(headers.get("RateLimit-Policy"))
        now = time.monotonic()
        pause: float | None = None
        with self._lock:
            for q in quotas:
                b = self._buckets.setdefault((origin, q.bucket), _Bucket())
                reset = min(MAX_WAIT, q.reset) if q.reset is not None else None
                if q.remaining is not None and q.remaining <= 0 and reset is not None:
                    b.closed_until = max(b.closed_until, now + reset + random.uniform(0.05, 0.5))
                elif q.remaining is not None and reset is not None:
                    quota = policies.get(q.bucket, (0, 0.0))[0]
                    low = max(LOW_WATER, quota // 20)
                    if q.remaining <= low:
                        b.spacing = reset / (q.remaining + 1)
                        b.spacing_until = now + reset
                        b.next_slot = max(b.next_slot, now)
                    elif now >= b.spacing_until:
                        b.spacing = 0.0
            if status != 429:
                return None
            named = next((q for q in quotas if q.bucket == (bucket or ANY)), None)
            named = named or next((q for q in quotas if q.remaining == 0), None) or (quotas or [None])[0]
            if named is not None and named.reset is not None:
                wait = min(MAX_WAIT, max(named.reset, 0.0)) + random.uniform(0.05, 0.5)
            else:
                wait = max(0.0, fallback())
            which = named.bucket if named is not None and named.bucket else (bucket or ANY)
            key = (origin, which)
            b = self._buckets.setdefault(key, _Bucket())
            b.closed_until = max(b.closed_until, now + wait)
            if bucket and which != bucket:  # the caller's own bucket waits too
                own = self._buckets.setdefault((origin, bucket), _Bucket())
                own.closed_until = max(own.closed_until, b.closed_until)
            pause = b.closed_until - now
            announce = pause >= 1.0 and b.closed_until > b.announced + 1.0
            if announce:
                b.announced = b.closed_until
        if announce:
            what = f" ({which})" if which else ""
            hint = "; requests without a token get the lowest limits (pass a token)" if anonymous else ""
            self._say(f"rate limited by {host}{what}, resuming in {pause:.0f} s{hint}")
        return pause


LIMITER = RateLimiter()
