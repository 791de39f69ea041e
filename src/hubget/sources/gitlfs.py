"""Git LFS: pointer files, endpoint discovery and the batch API (download operation).

Spec: https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md and docs/spec.md.
A pointer is a small text file standing in for a large one; the batch API turns a list of
``(oid, size)`` into download actions (``href`` + ``header``, valid ``expires_in`` seconds).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from hubget.errors import (
    AuthError,
    HubgetError,
    NetworkError,
    NotFoundError,
    ProtocolError,
    RepoNotFoundError,
)
from hubget.transfer.http import HttpClient, origin_of

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
# git-lfs never treats a blob larger than this as a pointer.
POINTER_MAX_SIZE = 1024
# Objects per batch request: git-lfs sends 100; servers answer 413 when that is too many.
BATCH_SIZE = 100
_OID = re.compile(r"^[0-9a-f]{64}$")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")


@dataclass(frozen=True)
class LfsPointer:
    oid: str  # sha256 hex of the content
    size: int


def parse_pointer(data: bytes) -> LfsPointer | None:
    """The pointer ``data`` holds, or None when it is not a well-formed v1 pointer."""
    if len(data) > POINTER_MAX_SIZE or not data.startswith(b"version "):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    keys: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition(" ")
        if not sep or key in keys:
            return None
        keys[key] = value
    if keys.get("version") not in (POINTER_VERSION, "https://hawser.github.com/spec/v1"):
        return None
    oid, size = keys.get("oid", ""), keys.get("size", "")
    if not oid.startswith("sha256:") or not _OID.match(oid[7:]) or not size.isdigit():
        return None
    return LfsPointer(oid=oid[7:], size=int(size))


def format_pointer(pointer: LfsPointer) -> bytes:
    return f"version {POINTER_VERSION}\noid sha256:{pointer.oid}\nsize {pointer.size}\n".encode()


def object_relpath(oid: str) -> str:
    """Where git-lfs keeps an object below ``.git/lfs/objects``."""
    if not _OID.match(oid):
        raise ProtocolError(f"not an LFS object id: {oid!r}")
    return f"{oid[0:2]}/{oid[2:4]}/{oid}"


# ---------------------------------------------------------------- endpoints and credentials


def strip_userinfo(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without ``user:password@``, and the Basic ``Authorization`` header they stood for."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return clean, {"Authorization": f"Basic {token}"}


def http_remote_url(remote: str) -> str:
    """An http(s) URL for a git remote; ``git@host:org/repo`` and ``ssh://`` map to https like git-lfs."""
    parts = urlsplit(remote)
    if parts.scheme in ("http", "https"):
        return remote
    if parts.scheme in ("ssh", "git+ssh", "ssh+git", "git"):
        return urlunsplit(("https", parts.hostname or "", parts.path, "", ""))
    if m := _SCP_LIKE.match(remote):
        return f"https://{m.group(1)}/{m.group(2).lstrip('/')}"
    raise HubgetError(f"cannot find the LFS server of the git remote {remote!r}: set lfs.url")


def lfs_endpoint(remote: str) -> str:
    """The LFS API root git-lfs derives from a remote URL: ``{remote}.git/info/lfs``."""
    url = http_remote_url(remote)
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    path += "/info/lfs" if path.endswith(".git") else ".git/info/lfs"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def same_origin(a: str, b: str) -> bool:
    return origin_of(a) == origin_of(b)


# ---------------------------------------------------------------- the batch API


@dataclass
class LfsAction:
    oid: str
    size: int
    href: str
    header: dict[str, str] = field(default_factory=dict)
    expires_at: float | None = None  # time.time() after which the href may stop working


@dataclass
class LfsObjectError:
    oid: str
    size: int
    code: int
    message: str

    def to_exception(self, label: str = "") -> HubgetError:
        what = f"{label} (LFS object {self.oid[:12]})" if label else f"LFS object {self.oid}"
        text = f"{what}: the LFS server answered {self.code}: {self.message}"
        if self.code == 404 or self.code == 410:
            return NotFoundError(text)
        if self.code in (401, 403):
            return AuthError(text)
        if self.code == 422:
            return ProtocolError(text)
        return NetworkError(text)


class LfsBatchClient:
    """Asks an LFS server where to download objects from."""

    def __init__(
        self,
        endpoint: str,
        *,
        client: HttpClient,
        auth_headers: dict[str, str] | None = None,
        ref: str | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.endpoint, userinfo_auth = strip_userinfo(endpoint.rstrip("/"))
        self.client = client
        self.auth_headers = dict(auth_headers or userinfo_auth)
        self.ref = ref
        self.batch_size = batch_size

    @property
    def batch_url(self) -> str:
        return f"{self.endpoint}/objects/batch"

    def download_actions(self, objects: Iterable[LfsPointer]) -> dict[str, LfsAction | LfsObjectError]:
        """One answer per distinct oid: where to fetch it, or why the server will not serve it."""
        unique = list({p.oid: p for p in objects}.values())
        answers: dict[str, LfsAction | LfsObjectError] = {}
        for start in range(0, len(unique), self.batch_size):
            self._batch(unique[start : start + self.batch_size], answers)
        return answers

    def refresh(self, pointer: LfsPointer) -> LfsAction:
        """A fresh action for one object (its href expired or stopped working)."""
        answer = self.download_actions([pointer]).get(pointer.oid)
        if isinstance(answer, LfsObjectError):
            raise answer.to_exception()
        if answer is None:
            raise ProtocolError(f"{self.batch_url}: the answer does not mention object {pointer.oid}")
        return answer

    def _batch(self, chunk: list[LfsPointer], answers: dict[str, LfsAction | LfsObjectError]) -> None:
        payload: dict[str, object] = {
            "operation": "download",
            "transfers": ["basic"],
            "objects": [{"oid": p.oid, "size": p.size} for p in chunk],
            "hash_algo": "sha256",
        }
        if self.ref:
            payload["ref"] = {"name": self.ref}
        headers = {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE, **self.auth_headers}
        sent_at = time.time()
        resp = self.client.request("POST", self.batch_url, headers=headers, body=json.dumps(payload).encode())
        if resp.status == 413 and len(chunk) > 1:  # too many objects at once: halve and ask again
            half = len(chunk) // 2
            self._batch(chunk[:half], answers)
            self._batch(chunk[half:], answers)
            return
        if resp.status != 200:
            raise self._status_error(resp.status, resp.data)
        try:
            body = json.loads(resp.data)
            objects = body["objects"]
            if not isinstance(objects, list):
                raise TypeError("objects is not a list")
        except (ValueError, KeyError, TypeError) as e:
            raise ProtocolError(f"{self.batch_url}: invalid batch answer: {e}") from e
        transfer = body.get("transfer") or "basic"
        if transfer != "basic":
            raise ProtocolError(
                f"{self.batch_url}: the server chose transfer {transfer!r}; only basic is spoken"
            )
        wanted = {p.oid: p for p in chunk}
        for item in objects:
            parsed = self._parse_object(item, wanted, sent_at)
            if parsed is not None:
                answers[parsed.oid] = parsed

    def _parse_object(
        self, item: object, wanted: dict[str, LfsPointer], sent_at: float
    ) -> LfsAction | LfsObjectError | None:
        if not isinstance(item, dict) or item.get("oid") not in wanted:
            return None  # the spec lets a server add objects nobody asked for; ignore them
        pointer = wanted[item["oid"]]
        if isinstance(err := item.get("error"), dict):
            return LfsObjectError(
                pointer.oid, pointer.size, int(err.get("code") or 0), str(err.get("message"))
            )
        download = (item.get("actions") or {}).get("download")
        if not isinstance(download, dict) or not isinstance(download.get("href"), str):
            return LfsObjectError(pointer.oid, pointer.size, 0, "no download action in the batch answer")
        href = download["href"]
        if urlsplit(href).scheme not in ("http", "https"):
            raise ProtocolError(f"{self.batch_url}: refusing download href {href!r} (not http or https)")
        header = {str(k): str(v) for k, v in (download.get("header") or {}).items()}
        # Our credentials go along only to the LFS server's own origin, and only when the action
        # does not bring its own (a signed CDN URL must not see them).
        if same_origin(href, self.endpoint) and not any(k.lower() == "authorization" for k in header):
            header.update(self.auth_headers)
        return LfsAction(pointer.oid, pointer.size, href, header, _expiry(download, sent_at))

    def _status_error(self, status: int, data: bytes) -> HubgetError:
        message = ""
        try:
            message = str(json.loads(data).get("message") or "")
        except (ValueError, AttributeError):
            message = data[:200].decode("utf-8", "replace").strip()
        text = f"LFS batch API {self.batch_url} answered {status}" + (f": {message}" if message else "")
        if status in (401, 403):
            return AuthError(text + " (pass a token with --token, or in the URL)")
        if status == 404:
            return RepoNotFoundError(text)
        if status in (406, 415, 422) or 400 <= status < 500:
            return ProtocolError(text)
        return NetworkError(text)


def _expiry(download: dict[str, object], sent_at: float) -> float | None:
    expires_in = download.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in != 0:
        return sent_at + float(expires_in)
    expires_at = download.get("expires_at")
    if isinstance(expires_at, str) and expires_at and not expires_at.startswith("0001-01-01"):
        from datetime import datetime

        try:
            return datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
