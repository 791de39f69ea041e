"""HTTP client on urllib3: pooled connections, manual redirects with an auth policy, retries.

Redirects are followed by hand so that credentials never cross origins and downgrades are
refused; retries are done by hand so that ``Retry-After`` is honoured with a cap and jitter.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import random
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable
from http.client import HTTPException, IncompleteRead
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import LocationParseError, NameResolutionError, SSLError

from hubget import config
from hubget.errors import HubgetError, NetworkError, ProtocolError
from hubget.transfer.ratelimit import LIMITER, RateLimiter
from hubget.version import __version__

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
RETRY_CODES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 10
# Headers that carry credentials; dropped on every cross-origin redirect hop.
DEFAULT_SENSITIVE = frozenset({"authorization", "proxy-authorization", "cookie"})
# Bodies read whole (API answers) are capped so a hostile server cannot exhaust memory.
MAX_BODY = 256 * 1024 * 1024
# A leftover body this small is read to its end (keeping the connection) when released, for at
# most this long; a bigger or slower one costs a new connection instead.
DRAIN_MAX = 65536
DRAIN_SECONDS = 0.25
SPLICE_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)  # a full pipe or an empty socket: EAGAIN, no wait
_DEFAULT_PORTS = {"http": 80, "https": 443}


USER_AGENT = f"hubget/{__version__}"


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return scheme, host, port


def origin_url(url: str) -> str:
    """``scheme://host:port`` of ``url``, as written: the key bytes are counted per source under."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        import email.utils  # only for a Retry-After date (its import costs start-up ~5 ms)

        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Response:
    """An HTTP answer. ``data`` holds the body unless the request asked for ``stream``."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str, data: bytes | None = None) -> None:
        self._raw = raw
        self.status: int = raw.status
        self.headers = raw.headers  # HTTPHeaderDict: case-insensitive
        self.url = url
        self.data: bytes = data if data is not None else b""
        self._released = data is not None
        self._drained = False  # http.client's read buffer is empty: the socket holds the rest
        self._deferred: NetworkError | None = None  # a read failure after bytes that were returned

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Read body bytes straight into ``buf``: whatever has arrived, at most one socket read.

        Returns 0 at the end of the body. Goes below urllib3, whose ``readinto`` allocates a bytes
        object per call, and below http.client, whose ``readinto`` waits until ``buf`` is full
        (a dripping server would then never look slow). Raises IncompleteRead-derived
        NetworkError when the connection closes before the announced length.
        """
        fp = getattr(self._raw, "_fp", None)
        if fp is None or fp.fp is None:
            return 0
        try:
            if fp.chunked:
                return fp.readinto(buf)  # rare for file bodies; http.client parses the chunks
            if fp.length is not None:
                if fp.length == 0:
                    fp._close_conn()
                    return 0
                if len(buf) > fp.length:
                    buf = memoryview(buf)[: fp.length]
            n = fp.fp.readinto1(buf)
            # Whether the BufferedReader is left empty, so the socket itself holds the rest of the
            # body: it hands out what it holds, and a request larger than its buffer then reads the
            # socket straight into ``buf``; a smaller one that it filled may have left bytes behind.
            self._drained = n < len(buf) or len(buf) > io.DEFAULT_BUFFER_SIZE
            if fp.length is not None:
                fp.length -= n
                if n == 0:
                    raise IncompleteRead(b"", fp.length)
                if fp.length == 0:
                    fp._close_conn()  # marks the body complete, so the connection can be reused
            elif n == 0:
                fp._close_conn()
            return n
        except (OSError, HTTPException, ValueError) as e:
            self.close()
            raise NetworkError(f"{host_of(self.url)}: connection failed while reading: {_describe(e)}") from e

    def fill(self, buf: memoryview, deadline: float) -> int:
        """``readinto`` until ``buf`` is full, the body ends or ``deadline`` (monotonic) passes.

        At least one read; returns 0 only at the end of the body. Large fills mean one write and
        one round of bookkeeping per buffer, not per socket read."""
        self._raise_deferred()
        total = n = self.readinto(buf)
        size = len(buf)
        try:
            while n and total < size and time.monotonic() < deadline:
                n = self.readinto(buf[total:])
                total += n
        except NetworkError as e:
            self._deferred = e  # keep what arrived before the failure; the next read raises it
        return total

    def _raise_deferred(self) -> None:
        if self._deferred is not None:
            e, self._deferred = self._deferred, None
            raise e

    def splice_source(self) -> socket.socket | None:
        """The socket, when the rest of the body can be moved with ``os.splice`` (no copy through
        user space): plain TCP (not TLS), a known length left, not chunked, nothing buffered."""
        fp = getattr(self._raw, "_fp", None)
        if not self._drained or fp is None or not isinstance(fp.fp, io.BufferedReader):
            return None
        if fp.chunked or not fp.length or not hasattr(os, "splice"):
            return None
        sock = getattr(getattr(self._raw, "_connection", None), "sock", None)
        return sock if type(sock) is socket.socket else None

    def splice_into(self, sock: socket.socket, pipe_w: int, count: int, deadline: float) -> int:
        """Move up to ``count`` body bytes from ``sock`` (``splice_source``) into the pipe ``pipe_w``,
        which must have room for them: until ``count``, the end of the body or ``deadline``.

        Returns 0 only at the end of the body; a connection closed early or a read timeout raise
        NetworkError, as in ``readinto``."""
        self._raise_deferred()
        fp = self._raw._fp  # type: ignore[attr-defined]
        count = min(count, fp.length)
        total = 0
        try:
            while total < count:
                try:
                    n = os.splice(sock.fileno(), pipe_w, count - total, flags=SPLICE_NONBLOCK)
                except BlockingIOError:
                    if total:
                        break  # return what came; the caller drains the pipe
                    if not _wait_readable(sock):
                        raise TimeoutError("timed out") from None
                    continue
                if n == 0:
                    raise IncompleteRead(b"", fp.length)
                total += n
                fp.length -= n
                if fp.length == 0:
                    fp._close_conn()  # the body is complete: the connection may be reused
                    break
                if time.monotonic() >= deadline:
                    break
        except (OSError, HTTPException, ValueError) as e:
            self.close()
            error = NetworkError(f"{host_of(self.url)}: connection failed while reading: {_describe(e)}")
            error.__cause__ = e
            if not total:
                raise error from e
            self._deferred = error  # what is in the pipe is written first
        return total

    def body_complete(self) -> bool:
        fp = getattr(self._raw, "_fp", None)
        return fp is None or fp.isclosed()

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to its end, else close it.

        A short leftover (a redirect's or a 503's body) is drained first, since that is cheaper
        than a new connection, but only for a moment: a server that drips it gets closed instead.
        """
        if self._released:
            return
        fp = getattr(self._raw, "_fp", None)
        remaining = getattr(fp, "length", None)
        if fp is not None and not fp.isclosed() and remaining is not None and remaining <= DRAIN_MAX:
            self._drain(DRAIN_SECONDS)
        self._released = True
        if self.body_complete():
            self._raw.release_conn()
        else:
            self.close()

    def _drain(self, seconds: float) -> None:
        conn = getattr(self._raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is None:
            return
        deadline = time.monotonic() + seconds
        scratch = bytearray(16384)
        saved = sock.gettimeout()
        try:
            while not self.body_complete():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                sock.settimeout(left)
                if self.readinto(scratch) == 0:
                    return
        except (OSError, HubgetError):
            return  # readinto closed it; the connection is not reused
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(saved)

    def abort(self) -> None:
        """Unblock a reader stuck in ``readinto`` from another thread, then drop the connection."""
        conn = getattr(self._raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        """Drop the connection (a half-read body must never be reused)."""
        self._released = True
        try:
            self._raw.close()
        except Exception:  # closing a broken socket may raise; the connection is gone either way
            pass
        self._raw.release_conn()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _wait_readable(sock: socket.socket) -> bool:
    """Wait, up to the socket's timeout, until it has data (or an error) to read."""
    timeout = sock.gettimeout()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def _describe(e: BaseException) -> str:
    if isinstance(e, NameResolutionError):
        return "name resolution failed (DNS)"
    text = str(e) or type(e).__name__
    # urllib3 prefixes messages with the connection object's repr; keep the meaningful tail.
    if "): " in text:
        text = text.split("): ", 1)[1]
    return text


def _trusting(bundles: list[str]) -> ssl.SSLContext | None:
    """A client TLS context trusting the CAs of every readable one of ``bundles`` (files or folders);
    None when none can be read (the first is then handed to urllib3, which reports it per request)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (verifies certificates and host names)
    loaded = 0
    for bundle in bundles:
        try:
            if os.path.isdir(bundle):
                context.load_verify_locations(capath=bundle)
            else:
                context.load_verify_locations(cafile=bundle)
            loaded += 1
        except (OSError, ssl.SSLError):
            continue
    return context if loaded else None


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class HttpClient:
    """Thread-safe HTTP client shared by the whole process."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        retries: int | None = None,
        ca_bundle: str | None = None,
        pool_maxsize: int = 32,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_cap: float | None = None,
        body_timeout: float | None = None,
        sensitive_headers: Iterable[str] = DEFAULT_SENSITIVE,
        user_agent: str = USER_AGENT,
        limiter: RateLimiter | None = None,
        rate_limit_wait: float | None = None,
    ) -> None:
        # None: the value from the environment (hubget.config: HUBGET_CONNECT_TIMEOUT, ...).
        self.connect_timeout = config.connect_timeout() if connect_timeout is None else connect_timeout
        self.read_timeout = config.read_timeout() if read_timeout is None else read_timeout
        self.retries = config.retries() if retries is None else retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_cap = config.retry_after_cap() if retry_after_cap is None else retry_after_cap
        # The read timeout bounds silence only; a whole (non-stream) answer must also arrive
        # within this many seconds, or a server sending a byte now and then holds us forever.
        if body_timeout is None:
            body_timeout = config.body_timeout()
        self.body_timeout = body_timeout if body_timeout is not None else 2 * self.read_timeout
        self.sensitive_headers = frozenset(h.lower() for h in sensitive_headers)
        self.user_agent = user_agent
        self.pool_maxsize = pool_maxsize
        self._pool_kw: dict[str, Any] = {
            "num_pools": 64,
            "maxsize": pool_maxsize,
            "block": False,
            "cert_reqs": "CERT_REQUIRED",
        }
        bundles = [ca_bundle] if ca_bundle else config.ca_bundles()
        context = _trusting(bundles) if len(bundles) > 1 else None
        if context is not None:
            self._pool_kw["ssl_context"] = context
        elif bundles and os.path.isdir(bundles[0]):
            self._pool_kw["ca_cert_dir"] = bundles[0]  # a c_rehash'ed folder, as REQUESTS_CA_BUNDLE may be
        elif bundles:
            self._pool_kw["ca_certs"] = bundles[0]
        self.ca_bundle = bundles[0] if bundles else None
        self._direct = urllib3.PoolManager(**self._pool_kw)
        self._proxies: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()
        # Tests replace this to observe waits without sleeping.
        self.sleep = time.sleep
        self.limiter: RateLimiter = limiter or LIMITER
        self.rate_limit_wait = config.rate_limit_wait() if rate_limit_wait is None else rate_limit_wait

    # -- connection selection -------------------------------------------------------------

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The proxy from the environment (HTTPS_PROXY, NO_PROXY...) or a direct pool."""
        scheme, host, _ = origin_of(url)
        if _is_loopback(host):
            return self._direct
        import urllib.request  # not for loopback: start-up

        proxy = urllib.request.getproxies().get(scheme)
        if not proxy or urllib.request.proxy_bypass(host):
            return self._direct
        with self._lock:
            if proxy not in self._proxies:
                self._proxies[proxy] = urllib3.ProxyManager(proxy, **self._pool_kw)
            return self._proxies[proxy]

    # -- public API -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        follow_redirects: bool = True,
        stream: bool = False,
        sensitive: Iterable[str] = (),
        read_timeout: float | None = None,
        retries: int | None = None,
        bucket: str | None = None,
    ) -> Response:
        """Send a request, following redirects and retrying transient failures.

        4xx answers other than 429 are returned as they are; the caller maps them. A retryable
        answer that is still failing after the last retry is returned too (its status tells).
        A 429 is waited out (see ``hubget.transfer.ratelimit``) without counting as a retry, until
        the waits add up to ``rate_limit_wait``. ``bucket`` names the server's rate-limit bucket
        the request counts against on the origin of ``url`` (e.g. "resolvers").
        ``sensitive`` names extra headers (besides Authorization, Cookie) that must not follow a
        redirect to another origin.
        """
        drop_on_cross = self.sensitive_headers | {h.lower() for h in sensitive}
        hdrs = {"User-Agent": self.user_agent}
        hdrs.update(headers or {})
        hdrs["Accept-Encoding"] = "identity"
        seen: set[tuple[str, str]] = set()
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            _check_scheme(current)
            seen.add((method, current))
            hop_bucket = bucket if origin_of(current) == origin_of(url) else None
            resp = self._send_with_retries(
                method,
                current,
                hdrs,
                body,
                stream=stream,
                read_timeout=read_timeout,
                retries=retries,
                bucket=hop_bucket,
            )
            if not follow_redirects or resp.status not in REDIRECT_CODES:
                return resp
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise ProtocolError(f"{host_of(current)}: redirect {resp.status} without a Location header")
            nxt = urljoin(current, location.strip())
            _check_scheme(nxt, came_from=current)
            if origin_of(nxt) != origin_of(current):
                hdrs = {k: v for k, v in hdrs.items() if k.lower() not in drop_on_cross}
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = ("GET" if method != "HEAD" else "HEAD"), None
            if (method, nxt) in seen:
                raise RedirectRefused(f"redirect loop at {nxt}")
            current = nxt
        raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects starting from {url}")

    def get_json(self, url: str, *, headers: dict[str, str] | None = None) -> tuple[Any, Response]:
        """GET a JSON document. Non-2xx answers are returned with ``None`` for the caller to map."""
        hdrs = {"Accept": "application/json"}
        hdrs.update(headers or {})
        resp = self.request("GET", url, headers=hdrs)
        if not 200 <= resp.status < 300:
            return None, resp
        try:
            return json.loads(resp.data), resp
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"{host_of(resp.url)}: invalid JSON from {resp.url}: {e}") from e

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): full jitter, or Retry-After capped."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * (2**attempt)))

    def clear(self) -> None:
        self._direct.clear()
        for mgr in self._proxies.values():
            mgr.clear()

    # -- internals ------------------------------------------------------------------------

    def _send_with_retries(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        stream: bool,
        read_timeout: float | None,
        retries: int | None,
        bucket: str | None = None,
    ) -> Response:
        limit = self.retries if retries is None else retries
        attempt = 0
        origin = origin_url(url)
        anonymous = not any(k.lower() == "authorization" for k in headers)
        rate_waited = 0.0  # seconds this request spent waiting out rate limits
        rate_attempt = 0
        waited_just_now = False
        while True:
            if not waited_just_now:  # another thread's 429 (or a spent quota) makes this one wait too
                delay = self.limiter.delay(origin, bucket)
                if delay > 0:
                    self.sleep(delay)
                    rate_waited += delay
            waited_just_now = False
            try:
                resp = self._send_once(method, url, headers, body, stream=stream, read_timeout=read_timeout)
            except NetworkError as e:
                dns = isinstance(e.__cause__, NameResolutionError)
                tls = isinstance(e.__cause__, SSLError)
                # A bad certificate will not fix itself; a DNS answer rarely does within seconds.
                if tls or attempt >= (min(limit, 1) if dns else limit):
                    raise
                self.sleep(self.backoff(attempt))
                attempt += 1
                continue
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            pause = self.limiter.observe(
                origin,
                bucket,
                resp.status,
                resp.headers,
                host=host_of(url),
                anonymous=anonymous,
                fallback=functools.partial(self.backoff, rate_attempt, retry_after),
            )
            if pause is not None and rate_waited + pause <= self.rate_limit_wait:
                # A 429 is waited out, not counted as a failure: every thread asking this bucket of
                # this origin waits with this one (the limiter), so the quota is not hammered.
                resp.release()
                self.sleep(pause)
                rate_waited += pause
                rate_attempt += 1
                waited_just_now = True
                continue
            if resp.status in RETRY_CODES and resp.status != 429 and attempt < limit:
                wait = self.backoff(attempt, retry_after)
                resp.release()
                self.sleep(wait)
                attempt += 1
                continue
            return resp

    def _send_once(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        stream: bool,
        read_timeout: float | None,
    ) -> Response:
        started = time.monotonic()
        timeout = urllib3.Timeout(
            connect=self.connect_timeout, read=self.read_timeout if read_timeout is None else read_timeout
        )
        try:
            raw = self._manager(url).request(
                method,
                url,
                headers=headers,
                body=body,
                redirect=False,
                retries=False,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
            )
        except SSLError as e:
            raise NetworkError(f"{host_of(url)}: TLS verification failed: {_describe(e)}") from e
        except LocationParseError as e:
            raise ProtocolError(f"invalid URL {url!r}: {e}") from e
        except (Urllib3HTTPError, OSError, HTTPException, ssl.SSLError) as e:
            raise NetworkError(f"{host_of(url)}: cannot connect: {_describe(e)}") from e
        if stream:
            return Response(raw, url)
        try:
            data = _read_body(raw, url, started + self.body_timeout)
        except (Urllib3HTTPError, OSError, HTTPException) as e:
            raw.close()
            raise NetworkError(f"{host_of(url)}: connection failed while reading: {_describe(e)}") from e
        raw.release_conn()
        return Response(raw, url, data)


class RedirectRefused(ProtocolError):
    """A redirect the policy forbids (downgrade to http, another scheme, a loop): never retried."""


def _check_scheme(url: str, came_from: str | None = None) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise RedirectRefused(f"refusing to fetch {url!r}: only http and https URLs are allowed")
    if came_from is not None and urlsplit(came_from).scheme.lower() == "https" and scheme == "http":
        raise RedirectRefused(f"refusing redirect from https to plain http ({came_from} -> {url})")


def _read_body(raw: urllib3.BaseHTTPResponse, url: str, deadline: float) -> bytes:
    """Read a whole (small) body with a size cap and a deadline (``time.monotonic()``); undo
    gzip/deflate a server sent anyway, bounded.

    Reads go one socket read at a time (``read1``): ``read(n)`` would wait for all ``n`` bytes,
    so the deadline could not be checked while a server drips."""
    length = raw.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raw.close()
        raise ProtocolError(f"{host_of(url)}: answer of {int(length)} bytes is too large")
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raw.close()
            raise NetworkError(f"{host_of(url)}: timed out: the answer did not arrive in time (too slow)")
        chunk = raw.read1(1024 * 1024, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > MAX_BODY:
            raw.close()
            raise ProtocolError(f"{host_of(url)}: answer larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    encoding = (raw.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in ("identity", ""):
        return data
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"{host_of(url)}: unsupported Content-Encoding {encoding!r}")
    decoder = zlib.decompressobj(47)  # 32 + 15: accepts gzip and zlib framing
    try:
        out = decoder.decompress(data, MAX_BODY + 1)
    except zlib.error as e:
        raise ProtocolError(f"{host_of(url)}: corrupt {encoding} body: {e}") from e
    if len(out) > MAX_BODY or decoder.unconsumed_tail:
        raise ProtocolError(f"{host_of(url)}: {encoding} body expands beyond {MAX_BODY} bytes")
    return out
