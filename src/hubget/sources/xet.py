"""The Xet protocol (hub-docs ``docs/xet/``): CAS tokens from the hub, reconstructions from the CAS.

``XetAuth`` gets a read token from the hub's ``xet-read-token`` route (``{accessToken, exp, casUrl}``)
and gets a new one before ``exp`` (30 s before it, or a fifth of its lifetime when that is shorter),
or at once after the CAS refuses the current one (401). ``XetCas.reconstruct`` asks
``GET {casUrl}/v2/reconstructions/{hash}`` for a byte range (``/v1/`` when the CAS answers 404/501
to v2, remembered) and turns the answer into ``XetReconstruction`` (transfer/xetplan.py), checking
its shape: a malformed answer is a ProtocolError, never a crash deeper down.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from hubget.errors import AuthError, EntryNotFoundError, HubgetError, NetworkError, ProtocolError
from hubget.models import RepoRef
from hubget.transfer.http import HttpClient, host_of
from hubget.transfer.xetplan import XetFetch, XetReconstruction, XetTerm

TOKEN_MARGIN = 30.0  # seconds before ``exp`` a token is replaced (xet-core's buffer)...
TOKEN_FRACTION = 0.2  # ...or this fraction of its lifetime, when that is shorter
_HASH = re.compile(r"^[0-9a-f]{64}$")


class XetUnavailable(HubgetError):
    """This hub (or mirror) offers no usable Xet access: its files come over the HTTP bridge."""


def token_url(endpoint: str, ref: RepoRef, revision: str) -> str:
    """The hub's read-token route for ``revision`` of ``ref`` (the ``Link rel="xet-auth"`` of resolve)."""
    return f"{endpoint}/api/{ref.repo_type}s/{ref.repo_id}/xet-read-token/{quote(revision, safe='')}"


@dataclass(frozen=True)
class XetToken:
    access_token: str
    exp: float  # unix time
    cas_url: str
    refresh_at: float  # unix time: replace it from here on


class XetAuth:
    """The current CAS read token of one repo revision, refreshed as it nears expiry. Thread-safe."""

    def __init__(self, client: HttpClient, url: str, headers: dict[str, str]) -> None:
        self.client = client
        self.url = url
        self.headers = dict(headers)
        self._lock = threading.Lock()
        self._token: XetToken | None = None
        self.fetched = 0  # tokens obtained (for reports and tests)

    def current(self) -> XetToken:
        with self._lock:
            if self._token is None or time.time() >= self._token.refresh_at:
                self._token = self._fetch()
            return self._token

    def refused(self, token: XetToken) -> XetToken:
        """The CAS answered 401 to ``token``: a new one, unless another thread already got it."""
        with self._lock:
            if self._token is None or self._token.access_token == token.access_token:
                self._token = self._fetch()
            return self._token

    def _fetch(self) -> XetToken:
        try:
            resp = self.client.request("GET", self.url, headers=self.headers, bucket="api")
        except NetworkError as e:
            raise XetUnavailable(f"no Xet token from {host_of(self.url)}: {e}") from e
        if resp.status != 200:
            raise XetUnavailable(f"no Xet token from {host_of(self.url)} (HTTP {resp.status})")
        try:
            body = json.loads(resp.data)
            access, exp, cas = str(body["accessToken"]), float(body["exp"]), str(body["casUrl"]).rstrip("/")
        except (ValueError, KeyError, TypeError) as e:
            raise XetUnavailable(f"{host_of(self.url)}: malformed Xet token answer") from e
        if urlsplit(cas).scheme not in ("http", "https") or not access:
            raise XetUnavailable(f"{host_of(self.url)}: unusable CAS URL {cas!r}")
        now = time.time()
        life = max(0.0, exp - now)
        self.fetched += 1
        return XetToken(access, exp, cas, now + life - min(TOKEN_MARGIN, TOKEN_FRACTION * life))


class XetCas:
    """Reconstruction queries against the CAS that ``auth``'s tokens name."""

    def __init__(self, client: HttpClient, auth: XetAuth) -> None:
        self.client = client
        self.auth = auth
        self.version = 2  # drops to 1 for good once the CAS says it has no v2
        self.queries = 0
        self.unreachable = ""  # why the CAS gave no answer at all (then every later query fails fast)

    def reconstruct(self, file_hash: str, start: int, end: int) -> XetReconstruction:
        """The reconstruction of file bytes ``[start, end)`` of ``file_hash``, with fresh signed URLs."""
        if not _HASH.match(file_hash):
            raise ProtocolError(f"not a Xet hash: {file_hash!r}")
        token = self.auth.current()
        for attempt in range(3):
            url = f"{token.cas_url}/v{self.version}/reconstructions/{file_hash}"
            headers = {"Authorization": f"Bearer {token.access_token}", "Range": f"bytes={start}-{end - 1}"}
            self.queries += 1
            if self.unreachable:
                raise XetUnavailable(f"{host_of(url)} could not be reached: {self.unreachable}")
            try:
                resp = self.client.request("GET", url, headers=headers, follow_redirects=False)
            except NetworkError as e:
                self.unreachable = str(e)  # after the client's retries: the next files need not wait
                raise XetUnavailable(f"{host_of(url)} could not be reached: {e}") from e
            if resp.status in (404, 501) and self.version == 2:
                self.version = 1
                continue
            if resp.status == 401 and attempt < 2:
                token = self.auth.refused(token)
                continue
            if resp.status == 200:
                return parse_reconstruction(_json(resp.data, url), self.version)
            if resp.status == 404:
                raise EntryNotFoundError(f"{host_of(url)}: no Xet file {file_hash[:16]}")
            if resp.status in (401, 403):
                raise AuthError(f"{host_of(url)}: the CAS refused the Xet token (HTTP {resp.status})")
            raise NetworkError(f"{host_of(url)}: HTTP {resp.status} for a Xet reconstruction")
        raise AuthError(f"{host_of(token.cas_url)}: the CAS keeps refusing fresh Xet tokens")


def _json(data: bytes, url: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"{host_of(url)}: reconstruction answer is not JSON") from e


def _int(obj: Any, *keys: str) -> int:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(obj, int) or isinstance(obj, bool) or obj < 0:
        raise ProtocolError(f"Xet reconstruction: {'.'.join(keys)} is not a count: {obj!r}")
    return obj


def _hash(value: Any) -> str:
    if not isinstance(value, str) or not _HASH.match(value):
        raise ProtocolError(f"Xet reconstruction: not a xorb hash: {value!r}")
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ProtocolError(f"Xet reconstruction: not an http(s) URL: {str(value)[:80]!r}")
    return value


def parse_reconstruction(body: Any, version: int) -> XetReconstruction:
    """A v1 (``fetch_info``) or v2 (``xorbs``, several ranges per URL) answer as plain data."""
    if not isinstance(body, dict) or not isinstance(body.get("terms"), list):
        raise ProtocolError("Xet reconstruction: no terms")
    terms = [
        XetTerm(
            _hash(t.get("hash")),
            _int(t, "range", "start"),
            _int(t, "range", "end"),
            _int(t, "unpacked_length"),
        )
        for t in body["terms"]
        if isinstance(t, dict)
    ]
    if len(terms) != len(body["terms"]):
        raise ProtocolError("Xet reconstruction: a term is not an object")
    fetches: list[XetFetch] = []
    if version == 2:
        xorbs = body.get("xorbs")
        if not isinstance(xorbs, dict):
            raise ProtocolError("Xet reconstruction: no xorbs")
        for name, entries in xorbs.items():
            for entry in entries if isinstance(entries, list) else [None]:
                if not isinstance(entry, dict) or not isinstance(entry.get("ranges"), list):
                    raise ProtocolError("Xet reconstruction: a xorb entry without ranges")
                url = _url(entry.get("url"))
                for r in entry["ranges"]:
                    fetches.append(_fetch(name, r, "chunks", "bytes", url))
    else:
        info = body.get("fetch_info")
        if not isinstance(info, dict):
            raise ProtocolError("Xet reconstruction: no fetch_info")
        for name, entries in info.items():
            for entry in entries if isinstance(entries, list) else [None]:
                if not isinstance(entry, dict):
                    raise ProtocolError("Xet reconstruction: a fetch_info entry is not an object")
                fetches.append(_fetch(name, entry, "range", "url_range", _url(entry.get("url"))))
    return XetReconstruction(_int(body, "offset_into_first_range"), terms, fetches)


def _fetch(name: str, entry: Any, chunks: str, byte_range: str, url: str) -> XetFetch:
    first, last = _int(entry, byte_range, "start"), _int(entry, byte_range, "end")
    if last < first:
        raise ProtocolError(f"Xet reconstruction: byte range {first}-{last}")
    chunk_start, chunk_end = _int(entry, chunks, "start"), _int(entry, chunks, "end")
    return XetFetch(_hash(name), chunk_start, chunk_end, first, last + 1, url)
