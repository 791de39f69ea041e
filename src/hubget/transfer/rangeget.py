"""Byte ranges of one remote file read into memory, for writers that are not files (object stores).

``RangeReader.read_into(start, buf)`` fills ``buf`` with the bytes ``[start, start + len(buf))``.
All readers of one file share its ``Locations``: the first request follows the hub's redirects and
every other range goes to the signed URL it ended at (one resolver call per file, as the engine
does); a CDN's 403/410 or the URL's stated expiry resolves again, once, for all. A range cut short
is asked again from the byte reached, up to ``attempts`` times.
"""

from __future__ import annotations

import threading
import time

from hubget.errors import (
    AuthError,
    EntryNotFoundError,
    GatedRepoError,
    HubgetError,
    NetworkError,
    ProtocolError,
)
from hubget.transfer.answers import check_identity, content_range, refusal
from hubget.transfer.http import DEFAULT_SENSITIVE, HttpClient, Response, host_of, origin_of
from hubget.transfer.locations import Location, Locations, location_for

RANGE_CLIENT_RETRIES = 1
MIN_SPEED = 16 * 1024  # bytes/s below which a connection counts as stalled (checked per stall window)


class _Again(Exception):
    """Ask again at once (a fresh location is needed); not a failed attempt."""


class RangeReader:
    """Reads ranges of the file at ``url`` (thread-safe; one per file)."""

    def __init__(
        self,
        client: HttpClient,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        size: int,
        label: str = "",
        rate_bucket: str | None = None,
        attempts: int = 4,
        stall_timeout: float | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.headers = dict(headers or {})
        self.size = size
        self.label = label or url
        self.rate_bucket = rate_bucket
        self.attempts = attempts
        self.stall_timeout = stall_timeout if stall_timeout is not None else client.read_timeout
        self.locations = Locations(1)
        self.cancelled = threading.Event()
        self.requests = 0
        self._lock = threading.Lock()

    def read_into(self, start: int, buf: memoryview) -> None:
        """Fill ``buf`` with the file's bytes from ``start`` on; HubgetError when that fails."""
        end = start + len(buf)
        if end > self.size:
            raise ValueError(f"range {start}-{end} beyond the size {self.size}")
        pos, failures, again = start, 0, 0
        while pos < end:
            if self.cancelled.is_set():
                raise InterruptedError(f"{self.label}: cancelled")
            try:
                pos = self._request(pos, end, buf, start)
            except _Again:
                again += 1
                if again > 3:
                    raise AuthError(f"{self.label}: the signed URL keeps being refused") from None
            except (AuthError, EntryNotFoundError, GatedRepoError):
                raise
            except HubgetError:
                failures += 1
                if failures >= self.attempts:
                    raise
                time.sleep(self.client.backoff(failures - 1))

    # -- one request ---------------------------------------------------------------------------
    def _request(self, pos: int, end: int, buf: memoryview, origin_pos: int) -> int:
        loc = self.locations.claim(0, self.cancelled.is_set)
        target = self.url if loc is None else loc.url
        headers = dict(self.headers)
        if loc is not None and origin_of(loc.url) != origin_of(self.url):
            headers = {k: v for k, v in headers.items() if k.lower() not in DEFAULT_SENSITIVE}
        whole = pos == 0 and end == self.size
        if not whole:
            headers["Range"] = f"bytes={pos}-{end - 1}"
        bucket = self.rate_bucket if loc is None or not loc.redirected else None
        with self._lock:
            self.requests += 1
        try:
            resp = self.client.request(
                "GET",
                target,
                headers=headers,
                stream=True,
                read_timeout=self.stall_timeout,
                retries=min(self.client.retries, RANGE_CLIENT_RETRIES),
                bucket=bucket,
            )
        except BaseException:
            if loc is None:
                self.locations.resolved(0, None, failed=True)
            raise
        try:
            used = self._learn(loc, resp)
            self._check(resp, pos, end, whole)
            reached = self._read_body(resp, pos, end, buf, origin_pos)
            used.served += reached - pos
            return reached
        finally:
            if resp.body_complete():
                resp.release()
            else:
                resp.close()

    def _learn(self, loc: Location | None, resp: Response) -> Location:
        """The location this answer came from (found now when ``loc`` is None); _Again when it
        refused us and a fresh one may do."""
        refused = resp.status in (403, 410)
        if loc is None:
            loc = location_for(self.url, resp.url)
            ok = resp.status in (200, 206)
            self.locations.resolved(0, loc if ok else None, failed=resp.status >= 500)
        if refused and loc.redirected and self.locations.refused(0, loc):
            raise _Again
        return loc

    def _check(self, resp: Response, pos: int, end: int, whole: bool) -> None:
        host = host_of(resp.url)
        status = resp.status
        refused = refusal(self.label, resp)
        if refused is not None:
            raise refused
        if status not in (200, 206):
            raise NetworkError(f"{self.label}: HTTP {status} from {host}")
        check_identity(self.label, resp)
        length = resp.headers.get("Content-Length")
        if status == 200:
            if not whole:
                raise ProtocolError(f"{self.label}: {host} ignored the byte range asked (HTTP 200)")
            if length is not None and length.isdigit() and int(length) != self.size:
                raise ProtocolError(
                    f"{self.label}: {host} announces {length} bytes, the hub said {self.size}"
                )
            return
        answered = content_range(resp)
        if answered is None:
            raise ProtocolError(f"{self.label}: {host} answered 206 without a valid Content-Range")
        first, last, total = answered
        if first != pos or last < first or last >= end or total not in ("*", str(self.size)):
            raise ProtocolError(
                f"{self.label}: {host} answered bytes {first}-{last}/{total} to a request for "
                f"{pos}-{end - 1}/{self.size}"
            )
        if length is not None and length.isdigit() and int(length) != last - first + 1:
            raise ProtocolError(f"{self.label}: {host} sent Content-Length {length} for bytes {first}-{last}")

    def _read_body(self, resp: Response, pos: int, end: int, buf: memoryview, origin_pos: int) -> int:
        """Read into ``buf`` (which starts at file offset ``origin_pos``) until ``end`` or the body ends.
        Returns the offset reached; a short body after progress is an error only once nothing came."""
        window_start, window_bytes = time.monotonic(), 0
        started = pos
        while pos < end:
            if self.cancelled.is_set():
                raise InterruptedError(f"{self.label}: cancelled")
            try:
                n = resp.readinto(buf[pos - origin_pos : end - origin_pos])
            except NetworkError:
                if pos > started:
                    return pos  # keep what came; the caller asks for the rest
                raise
            if n == 0:
                break
            pos += n
            window_bytes += n
            now = time.monotonic()
            if now - window_start >= self.stall_timeout:
                if window_bytes < MIN_SPEED * (now - window_start):
                    raise NetworkError(f"{self.label}: {host_of(resp.url)} is stalling")
                window_start, window_bytes = now, 0
        if pos < end and pos == started:
            raise NetworkError(f"{self.label}: {host_of(resp.url)} closed the connection before any byte")
        return pos
