"""The ModelScope API of `hubget serve`: what the modelscope SDK (1.38+) asks for.

Models: ``/api/v1/models/{owner}/{name}/repo/files`` (listing, cut at 3000 entries like the real
hub, so clients walk folders with ``Root=``), ``.../repo?Revision=&FilePath=`` (bytes, with Range),
``.../revisions`` and ``/api/v1/models/{owner}/{name}``. Datasets: the same under ``datasets/``,
listed by ``.../repo/tree`` with ``PageNumber``/``PageSize``. Every JSON answer is wrapped in the
``{"Code", "Success", "Message", "RequestId", "Data"}`` envelope. ModelScope's default branch is
``master``: for a repo without one it names the repo's default branch.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import subprocess
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hubget.errors import (
    EntryNotFoundError,
    HubgetError,
    NetworkError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from hubget.hashing import READ_BLOCK
from hubget.models import RepoType
from hubget.server.gitrepo import blob_command
from hubget.server.repo import Body, Entry, Repo
from hubget.server.sender import send_body
from hubget.server.store import Store

DEFAULT_REVISION = "master"
LISTING_CAP_KEY: web.AppKey[int] = web.AppKey("hubget_ms_listing_cap", int)
LISTING_CAP = 3000  # the real hub cuts a repo/files answer here; clients rely on walking past it
MAX_PAGE_SIZE = 1000
LISTING_HASH_CACHE = 32  # commits whose file hashes are kept (pages of one listing come in a row)
_TYPES: dict[str, RepoType] = {"models": "model", "datasets": "dataset"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def envelope(data: Any, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {
        "Code": code,
        "Success": code == 200,
        "Message": message,
        "RequestId": uuid.uuid4().hex,
        "Data": data,
    }


def error_response(status: int, message: str) -> web.Response:
    return web.json_response(envelope(None, code=status, message=message), status=status)


class BlobHashes:
    """sha256 of git blobs that are not LFS objects (ModelScope lists a sha256 for every file)."""

    def __init__(self, size: int = 65536) -> None:
        self._lock = threading.Lock()
        self._done: OrderedDict[str, str] = OrderedDict()
        self._size = size

    def get(self, body: Body) -> str:
        assert body.git_dir is not None and body.blob is not None
        key = f"{body.git_dir}\0{body.blob}"
        with self._lock:
            if key in self._done:
                return self._done[key]
        h = hashlib.sha256()
        with subprocess.Popen(blob_command(body.git_dir, body.blob), stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(READ_BLOCK):
                h.update(chunk)
        if proc.returncode != 0:
            raise EntryNotFoundError(f"git blob {body.blob} cannot be read")
        digest = h.hexdigest()
        with self._lock:
            self._done[key] = digest
            while len(self._done) > self._size:
                self._done.popitem(last=False)
        return digest


class MsApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.blob_hashes = BlobHashes()
        self._lock = threading.Lock()
        self._listing_hashes: OrderedDict[tuple[str, str, str], dict[str, str]] = OrderedDict()

    # -- blocking helpers (run in threads) ----------------------------------------------------

    def repo(self, segment: str, owner: str, name: str) -> Repo:
        repo_type = _TYPES.get(segment)
        if repo_type is None:
            raise RepoNotFoundError(f"unknown repo type {segment!r}")
        return self.store.find_modelscope(repo_type, f"{owner}/{name}")

    def resolve(self, repo: Repo, revision: str | None) -> str:
        revision = revision or DEFAULT_REVISION
        try:
            return repo.resolve(revision)
        except RevisionNotFoundError:
            # Git repos made for the Hugging Face Hub have "main": serve it as ModelScope's "master".
            if revision == DEFAULT_REVISION:
                return repo.resolve(None)
            raise

    def sha256(self, repo: Repo, commit: str, entry: Entry) -> str:
        if entry.sha256:
            return entry.sha256
        _, body = repo.open_file(commit, entry.path)
        if body.path is not None:
            return self.store.hashes.sha256(body.path)
        return self.blob_hashes.get(body)

    def hashes_of(self, repo: Repo, commit: str, entries: list[Entry]) -> dict[str, str]:
        """sha256 of every file of a commit, kept for the next pages of the same listing."""
        key = (str(repo.root), repo.repo_type, commit)
        with self._lock:
            known = self._listing_hashes.get(key)
        if known is None:
            known = {e.path: self.sha256(repo, commit, e) for e in entries}
            self.store.hashes.flush()  # one write for the sha256 of the whole listing
            with self._lock:
                self._listing_hashes[key] = known
                while len(self._listing_hashes) > LISTING_HASH_CACHE:
                    self._listing_hashes.popitem(last=False)
        return known

    def listing(
        self, repo: Repo, revision: str | None, root: str, recursive: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        commit = self.resolve(repo, revision)
        date = int(repo.commit_date(commit))
        prefix = f"{root}/" if root else ""
        every = repo.list_files(commit)
        files = [e for e in every if e.path.startswith(prefix)]
        if root and not files:
            raise EntryNotFoundError(f"folder {root!r} not found in {repo.repo_id}")
        hashes = self.hashes_of(repo, commit, every)
        entries: dict[str, dict[str, Any]] = {}
        for entry in files:
            rest = entry.path[len(prefix) :]
            parts = rest.split("/")
            # Folders on the way are listed as "tree" entries, as the hub does.
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(folder, _tree_entry(folder, commit, date))
            if recursive or len(parts) == 1:
                entries[entry.path] = _file_entry(entry, hashes[entry.path], commit, date)
        return commit, [entries[k] for k in sorted(entries)]

    def revisions(self, repo: Repo) -> dict[str, Any]:
        refs = repo.refs()
        branches = [r for r in refs if r.kind == "branch"]
        tags = sorted((r for r in refs if r.kind == "tag"), key=lambda r: r.date, reverse=True)
        names = {r.name for r in branches}
        out = [{"Revision": r.name, "CreatedAt": int(r.date)} for r in branches]
        if DEFAULT_REVISION not in names:
            commit = self.resolve(repo, DEFAULT_REVISION)
            out.insert(0, {"Revision": DEFAULT_REVISION, "CreatedAt": int(repo.commit_date(commit))})
        return {
            "RevisionMap": {
                "Branches": out,
                "Tags": [{"Revision": r.name, "CreatedAt": int(r.date)} for r in tags],
            }
        }

    # -- handlers -----------------------------------------------------------------------------

    async def files(self, request: web.Request) -> web.StreamResponse:
        """``repo/files`` (models) and ``repo/tree`` (datasets, paginated)."""
        q = request.query
        recursive = q.get("Recursive", "False").lower() == "true"
        root = q.get("Root", "").strip("/")
        repo = await _blocking(self.repo, *_ids(request))
        commit, entries = await _blocking(self.listing, repo, q.get("Revision"), root, recursive)
        if "PageNumber" in q or "PageSize" in q:
            try:
                page = max(1, int(q.get("PageNumber", "1")))
                size = min(MAX_PAGE_SIZE, max(1, int(q.get("PageSize", "100"))))
            except ValueError:
                return error_response(400, "PageNumber and PageSize must be numbers")
            entries = entries[(page - 1) * size : page * size]
        elif request.match_info["segment"] == "models":
            entries = entries[: request.app.get(LISTING_CAP_KEY, LISTING_CAP)]
        return web.json_response(envelope({"Files": entries, "IsTruncated": False}))

    async def file(self, request: web.Request) -> web.StreamResponse:
        path = request.query.get("FilePath", "").lstrip("/")
        if not path:
            return error_response(400, "FilePath is required")
        repo = await _blocking(self.repo, *_ids(request))
        commit = await _blocking(self.resolve, repo, request.query.get("Revision"))
        entry, body = await _blocking(repo.open_file, commit, path)
        sha256 = await _blocking(self.sha256, repo, commit, entry)
        etag = f'"{sha256}"'
        return await send_body(request, body, etag, {"X-Linked-ETag": etag, "X-Linked-Size": str(entry.size)})

    async def revisions_handler(self, request: web.Request) -> web.StreamResponse:
        repo = await _blocking(self.repo, *_ids(request))
        return web.json_response(envelope(await _blocking(self.revisions, repo)))

    async def info(self, request: web.Request) -> web.StreamResponse:
        segment, owner, name = _ids(request)
        repo = await _blocking(self.repo, segment, owner, name)
        commit = await _blocking(self.resolve, repo, None)
        data = {
            "Id": int(hashlib.sha256(f"{segment}/{owner}/{name}".encode()).hexdigest()[:12], 16),
            "Path": owner,
            "Name": name,
            "ChineseName": name,
            "Visibility": 5,
            "IsPublished": 1,
            "LastUpdatedTime": int(await _blocking(repo.commit_date, commit)),
            "Revision": commit,
        }
        return web.json_response(envelope(data))

    async def acceleration(self, request: web.Request) -> web.StreamResponse:
        return error_response(404, "no intra-cloud acceleration on this server")


def _tree_entry(path: str, commit: str, date: int) -> dict[str, Any]:
    return {
        "Name": path.rsplit("/", 1)[-1],
        "Path": path,
        "Type": "tree",
        "Size": 0,
        "Sha256": "",
        "Revision": commit,
        "IsLFS": False,
        "Mode": "40000",
        "CommittedDate": date,
    }


def _file_entry(entry: Entry, sha256: str, commit: str, date: int) -> dict[str, Any]:
    return {
        "Name": entry.path.rsplit("/", 1)[-1],
        "Path": entry.path,
        "Type": "blob",
        "Size": entry.size,
        "Sha256": sha256,
        "Revision": commit,
        "IsLFS": entry.is_lfs,
        "Mode": "100644",
        "Id": entry.git_sha1,
        "CommittedDate": date,
    }


def _ids(request: web.Request) -> tuple[str, str, str]:
    m = request.match_info
    return m["segment"], m["owner"], m["name"]


async def _blocking(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _ms_errors(handler: Handler) -> Handler:
    """hubget errors from the store become ModelScope envelopes with the matching HTTP status."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (RepoNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
            return error_response(404, str(exc))
        except NetworkError as exc:  # what the upstream of a mirror (--upstream-modelscope) did
            return error_response(502, f"upstream: {exc}")
        except HubgetError as exc:
            return error_response(500, str(exc))

    return wrapped


def setup(app: web.Application, store: Store) -> None:
    api = MsApi(store)
    base = "/api/v1/{segment:models|datasets}/{owner}/{name}"
    app.router.add_get("/api/v1/repos/internalAccelerationInfo", api.acceleration)
    app.router.add_get(base + "/repo/files", _ms_errors(api.files))
    app.router.add_get(base + "/repo/tree", _ms_errors(api.files))
    app.router.add_get(base + "/repo", _ms_errors(api.file))  # add_get also answers HEAD
    app.router.add_get(base + "/revisions", _ms_errors(api.revisions_handler))
    app.router.add_get(base, _ms_errors(api.info))
