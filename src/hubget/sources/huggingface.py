"""The Hugging Face Hub protocol (and any HF_ENDPOINT mirror): repo info, tree, resolve."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urljoin

from hubget import config
from hubget.errors import (
    AuthError,
    EntryNotFoundError,
    GatedRepoError,
    HubgetError,
    NetworkError,
    ProtocolError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.paths import safe_relpath
from hubget.transfer.http import HttpClient, Response

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
MAX_TREE_PAGES = 10_000
# The hub's rate-limit buckets (hub docs, "rate limits"): every /resolve/ hit counts against
# "resolvers", API calls (repo info, tree pages) against "api".
API_BUCKET = "api"
RESOLVE_BUCKET = "resolvers"


def url_prefix(repo_type: str) -> str:
    return {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]


def _clean_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


class HfSource:
    """Speaks the Hugging Face Hub HTTP API of one endpoint."""

    name = "huggingface"

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None | bool = None,
        client: HttpClient | None = None,
    ) -> None:
        self.endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
        if token is False:
            self.token = None
        else:
            self.token = token if isinstance(token, str) else config.hf_token()
        self.client = client or HttpClient()

    # -- helpers -----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _api(self, ref: RepoRef) -> str:
        return f"{self.endpoint}/api/{ref.repo_type}s/{ref.repo_id}"

    def resolve_url(self, ref: RepoRef, revision: str, path: str) -> str:
        return (
            f"{self.endpoint}/{url_prefix(ref.repo_type)}{ref.repo_id}/resolve/"
            f"{quote(revision, safe='')}/{quote(path)}"
        )

    def _raise_for(self, resp: Response, ref: RepoRef, what: str) -> None:
        """Map a hub error answer to a typed exception (HF's X-Error-Code first)."""
        status = resp.status
        if status < 400:
            return
        code = resp.headers.get("X-Error-Code", "")
        message = resp.headers.get("X-Error-Message", "")
        where = f"{ref.repo_type} {ref.repo_id!r} on {self.endpoint}"
        detail = f": {message}" if message else ""
        if code == "RepoNotFound" or (status == 404 and not code and what == "repo"):
            raise RepoNotFoundError(f"repository not found: {where}{detail}")
        if code == "RevisionNotFound":
            raise RevisionNotFoundError(f"revision {ref.revision!r} not found in {where}{detail}")
        if code == "EntryNotFound" or status == 404:
            raise EntryNotFoundError(f"{what} not found in {where}{detail}")
        if code == "GatedRepo":
            raise GatedRepoError(f"{where} is gated: accept its terms on the hub and pass a token{detail}")
        if status in (401, 403):
            hint = "the token was refused" if self.token else "pass a token (--token or HF_TOKEN)"
            raise AuthError(f"access to {where} denied (HTTP {status}): {hint}{detail}")
        if status == 429:
            raise NetworkError(f"{where}: rate limited (HTTP 429) even after retries")
        raise NetworkError(f"{where}: HTTP {status} for {what}{detail}")

    def _get_json(self, url: str, ref: RepoRef, what: str) -> tuple[Any, Response]:
        resp = self.client.request("GET", url, headers=self._headers(), bucket=API_BUCKET)
        self._raise_for(resp, ref, what)
        try:
            return json.loads(resp.data), resp
        except ValueError as exc:
            raise ProtocolError(f"{self.endpoint}: {what} answer is not JSON") from exc

    # -- protocol ----------------------------------------------------------------------------
    def resolve_commit(self, ref: RepoRef) -> tuple[str, list[str]]:
        """The commit sha of ``ref.revision`` and the sibling names the repo-info call lists."""
        sha, info = self.resolve_info(ref)
        siblings = [s.get("rfilename") for s in info.get("siblings") or [] if isinstance(s, dict)]
        return sha, [s for s in siblings if isinstance(s, str)]

    def resolve_info(self, ref: RepoRef) -> tuple[str, dict[str, Any]]:
        """The commit sha of ``ref.revision`` and the whole repo-info answer (``private``, ``gated``...)."""
        revision = ref.revision or "main"
        url = f"{self._api(ref)}/revision/{quote(revision, safe='')}"
        info, _ = self._get_json(url, ref, "repo")
        if not isinstance(info, dict):
            raise ProtocolError(f"{self.endpoint}: repo info for {ref.repo_id} is not an object")
        sha = info.get("sha")
        if not isinstance(sha, str) or not _COMMIT.match(sha):
            raise ProtocolError(f"{self.endpoint}: repo info for {ref.repo_id} has no commit sha")
        return sha, info

    def list_tree(self, ref: RepoRef, commit: str) -> list[RemoteFile]:
        url: str | None = f"{self._api(ref)}/tree/{commit}?recursive=true&expand=false"
        files: list[RemoteFile] = []
        pages = 0
        while url:
            pages += 1
            if pages > MAX_TREE_PAGES:
                raise ProtocolError(f"{self.endpoint}: endless tree pagination for {ref.repo_id}")
            entries, resp = self._get_json(url, ref, "file tree")
            if not isinstance(entries, list):
                raise ProtocolError(f"{self.endpoint}: tree answer for {ref.repo_id} is not a list")
            for entry in entries:
                if isinstance(entry, dict) and entry.get("type") == "file":
                    files.append(self._entry_to_file(ref, commit, entry))
            match = _NEXT_LINK.search(resp.headers.get("Link", ""))
            url = urljoin(url, match.group(1)) if match else None
        return files

    def _entry_to_file(self, ref: RepoRef, commit: str, entry: dict[str, Any]) -> RemoteFile:
        path = safe_relpath(entry.get("path", ""))
        lfs = entry.get("lfs") or None
        size = entry.get("size")
        sha256 = None
        git_sha1 = None
        if isinstance(lfs, dict) and lfs.get("oid"):
            sha256 = str(lfs["oid"]).removeprefix("sha256:")
            size = lfs.get("size", size)
        elif entry.get("oid"):
            git_sha1 = str(entry["oid"])
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ProtocolError(f"{self.endpoint}: bad size {size!r} for {path}")
        xet = entry.get("xetHash")
        return RemoteFile(
            path=path,
            size=size,
            url=self.resolve_url(ref, commit, path),
            sha256=sha256,
            git_sha1=git_sha1,
            headers=self._headers(),
            xet_hash=xet if isinstance(xet, str) and xet else None,
            rate_bucket=RESOLVE_BUCKET,
        )

    def file_info(self, ref: RepoRef, path: str, commit: str | None = None) -> RemoteFile:
        return self.head(ref, path, commit)[0]

    def head(self, ref: RepoRef, path: str, commit: str | None = None) -> tuple[RemoteFile, str]:
        """HEAD the resolve URL (following only same-origin relative redirects, as the hub's
        renamed-repo redirects are) and read X-Repo-Commit, ETag / X-Linked-Etag and sizes."""
        file, commit_sha, _ = self.locate(ref, path, commit)
        return file, commit_sha

    def locate(
        self, ref: RepoRef, path: str, commit: str | None = None
    ) -> tuple[RemoteFile, str, str | None]:
        """``head`` and where the hub sends the file's bytes: the (signed, cross-origin) URL of its
        redirect, or None when the resolve URL answers with the bytes itself. One resolver call."""
        path = safe_relpath(path)
        url = self.resolve_url(ref, commit or ref.revision or "main", path)
        for _ in range(10):
            resp = self.client.request(
                "HEAD", url, headers=self._headers(), follow_redirects=False, bucket=RESOLVE_BUCKET
            )
            if 300 <= resp.status < 400 and "X-Linked-Etag" not in resp.headers:
                location = resp.headers.get("Location")
                if not location:
                    raise ProtocolError(f"{url}: redirect without Location")
                nxt = urljoin(url, location)
                if location.startswith("/"):
                    url = nxt
                    continue
                break  # cross-origin: the headers of this answer describe the file
            break
        else:
            raise ProtocolError(f"{url}: too many redirects")
        self._raise_for(resp, ref, f"file {path!r}")
        etag = _clean_etag(resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag"))
        commit_sha = resp.headers.get("X-Repo-Commit")
        size_text = resp.headers.get("X-Linked-Size") or resp.headers.get("Content-Length")
        if not etag or not commit_sha:
            raise ProtocolError(f"{self.endpoint}: no ETag or X-Repo-Commit for {path}")
        size = int(size_text) if size_text and size_text.isdigit() else None
        is_sha256 = len(etag) == 64
        file = RemoteFile(
            path=path,
            size=size,
            url=self.resolve_url(ref, commit_sha, path),
            sha256=etag if is_sha256 else None,
            git_sha1=etag if not is_sha256 else None,
            headers=self._headers(),
            xet_hash=resp.headers.get("X-Xet-Hash") or None,
            rate_bucket=RESOLVE_BUCKET,
        )
        location = resp.headers.get("Location") if 300 <= resp.status < 400 else None
        return file, commit_sha, urljoin(url, location) if location else None

    def resolve(self, ref: RepoRef) -> Snapshot:
        commit, siblings = self.resolve_commit(ref)
        try:
            files = self.list_tree(ref, commit)
        except EntryNotFoundError:
            # A server without the tree endpoint: describe each sibling by HEAD.
            files = [self.head(ref, name, commit)[0] for name in siblings]
        return Snapshot(ref=ref, commit=commit, files=files, source=self.name, endpoint=self.endpoint)


__all__ = ["HfSource", "HubgetError", "url_prefix"]
