"""The Hugging Face Hub API (PROTOCOLS.md §1) over the store: repo info, tree, paths-info, refs, resolve.

Answers carry what huggingface_hub (0.26 to 2.x) and transformers read: ``sha`` and ``siblings``
in repo info, the tree with ``Link: rel="next"`` pagination, and on ``resolve`` the headers
``X-Repo-Commit``, a strong ``ETag`` (sha256 for LFS files, git blob sha1 for others), ``X-Linked-Etag``
and ``X-Linked-Size`` for LFS files, and never ``X-Xet-*`` (that would switch clients to Xet).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

from aiohttp import web

from hubget.errors import (
    AuthError,
    EntryNotFoundError,
    GatedRepoError,
    HubgetError,
    NetworkError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from hubget.models import RepoType
from hubget.paths import safe_relpath
from hubget.server.auth import upstream_token
from hubget.server.keys import PAGE_SIZE_KEY, STORE_KEY
from hubget.server.repo import Entry, Repo
from hubget.server.sender import send_body
from hubget.server.store import Store

EXECUTOR_KEY: web.AppKey[ThreadPoolExecutor] = web.AppKey("hubget_executor", ThreadPoolExecutor)
KINDS: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX: dict[RepoType, str] = {"model": "", "dataset": "/datasets", "space": "/spaces"}
REPO_ID_FORMS = ("{owner}/{name}", "{name}")
WORKERS = 16

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- plumbing ---------------------------------------------------------------------------------------
async def blocking(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a store call (git, hashing, disk walks) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR_KEY], fn, *args)


def error_response(status: int, code: str | None, message: str) -> web.Response:
    headers = {"X-Error-Message": _header_safe(message)}
    if code:
        headers["X-Error-Code"] = code
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json", headers=headers
    )


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:500]


def hf_errors(handler: Handler) -> Handler:
    """Turn store errors into the hub's error answers (status + X-Error-Code)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RepoNotFoundError as exc:
            return error_response(404, "RepoNotFound", str(exc) or "Repository not found")
        except RevisionNotFoundError as exc:
            return error_response(404, "RevisionNotFound", str(exc) or "Revision not found")
        except EntryNotFoundError as exc:
            return error_response(404, "EntryNotFound", str(exc) or "Entry not found")
        # What an upstream hub answered a mirror (hubget serve --upstream):
        except GatedRepoError as exc:
            return error_response(403, "GatedRepo", str(exc) or "Gated repo")
        except AuthError as exc:
            return error_response(401, None, str(exc) or "Unauthorized")
        except NetworkError as exc:
            return error_response(502, None, f"upstream: {exc}")
        except HubgetError as exc:
            return error_response(500, None, str(exc) or type(exc).__name__)

    return wrapped


def repo_id_of(request: web.Request) -> str:
    mi = request.match_info
    return f"{mi['owner']}/{mi['name']}" if "owner" in mi else mi["name"]


def split_refs_revision(revision: str, rest: str) -> tuple[str, str]:
    """An unquoted ``refs/pr/1`` (or ``refs/convert/x``) revision arrives split over path segments."""
    if revision == "refs":
        parts = rest.split("/", 2)
        if len(parts) >= 2:
            return f"refs/{parts[0]}/{parts[1]}", parts[2] if len(parts) > 2 else ""
    return revision, rest


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def quoted(etag: str) -> str:
    return f'"{etag}"'


# -- JSON shapes ------------------------------------------------------------------------------------
def file_json(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "oid": entry.git_sha1, "size": entry.size, "path": entry.path}
    if entry.is_lfs:
        out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return out


def directory_oids(entries: list[Entry]) -> dict[str, str]:
    """A stable id per folder, derived from what it holds (the tree API's ``oid`` for folders)."""
    hashers: dict[str, Any] = {}
    for e in entries:
        parts = e.path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            h = hashers.setdefault(folder, hashlib.sha1(b"tree\n"))
            h.update(f"{e.path}\0{e.etag}\n".encode("utf-8", "surrogateescape"))
    return {folder: h.hexdigest() for folder, h in hashers.items()}


def tree_items(entries: list[Entry], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """Folders and files below ``prefix`` ("" for the root), like the hub lists them."""
    base = f"{prefix}/" if prefix else ""
    oids = directory_oids(entries)
    dirs: dict[str, None] = {}
    files: list[dict[str, Any]] = []
    for e in entries:
        if not e.path.startswith(base):
            continue
        rest = e.path[len(base) :]
        parts = rest.split("/")
        if recursive:
            for depth in range(1, len(parts)):
                dirs.setdefault(base + "/".join(parts[:depth]), None)
            files.append(file_json(e))
        elif len(parts) > 1:
            dirs.setdefault(base + parts[0], None)
        else:
            files.append(file_json(e))
    items = [{"type": "directory", "oid": oids[d], "size": 0, "path": d} for d in dirs]
    return sorted(items + files, key=lambda item: item["path"])


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


# -- handlers ---------------------------------------------------------------------------------------
async def find_and_resolve(
    request: web.Request, repo_type: RepoType, revision: str | None
) -> tuple[Repo, str]:
    store: Store = request.app[STORE_KEY]
    repo = await blocking(request, store.find_for, repo_type, repo_id_of(request), upstream_token(request))
    commit = await blocking(request, repo.resolve, revision)
    return repo, commit


@hf_errors
async def repo_info(request: web.Request) -> web.StreamResponse:
    repo_type = KINDS[request.match_info["kind"]]
    revision = request.match_info.get("revision")
    repo, commit = await find_and_resolve(request, repo_type, revision)
    entries = await blocking(request, repo.list_files, commit)
    date = iso(await blocking(request, repo.commit_date, commit))
    siblings = []
    for e in entries:
        sib: dict[str, Any] = {"rfilename": e.path, "size": e.size, "blobId": e.git_sha1}
        if e.is_lfs:
            sib["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
        siblings.append(sib)
    repo_id = repo.repo_id
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
        "id": repo_id,
        "author": repo_id.split("/")[0] if "/" in repo_id else None,
        "sha": commit,
        "lastModified": date,
        "createdAt": date,
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(e.size for e in entries),
    }
    if repo_type == "model":
        info["modelId"] = repo_id
    return web.json_response(info)


@hf_errors
async def tree(request: web.Request) -> web.StreamResponse:
    repo_type = KINDS[request.match_info["kind"]]
    revision, path = split_refs_revision(request.match_info["revision"], request.match_info.get("path", ""))
    path = path.strip("/")
    if path:
        try:
            safe_relpath(path)
        except HubgetError:
            raise EntryNotFoundError(f"invalid path {path!r}") from None
    repo, commit = await find_and_resolve(request, repo_type, revision)
    entries = await blocking(request, repo.list_files, commit)
    recursive = truthy(request.query.get("recursive"))
    items = tree_items(entries, path, recursive)
    if path and not items:
        raise EntryNotFoundError(f"{path} is not a folder of {repo.repo_id} at {commit}")
    page_size = request.app[PAGE_SIZE_KEY]
    try:
        start = max(0, int(request.query.get("cursor", "0")))
    except ValueError:
        start = 0
    page = items[start : start + page_size]
    if truthy(request.query.get("expand")):
        last = await blocking(request, repo.last_commits, commit)
        for item in page:
            if (info := last.get(item["path"])) is not None:
                item["lastCommit"] = {"id": info.id, "title": info.title, "date": iso(info.date)}
    headers = {}
    if start + page_size < len(items):
        next_url = request.url.update_query({"cursor": str(start + page_size)})
        headers["Link"] = f'<{next_url}>; rel="next"'
    return web.json_response(page, headers=headers)


@hf_errors
async def paths_info(request: web.Request) -> web.StreamResponse:
    repo_type = KINDS[request.match_info["kind"]]
    revision, _ = split_refs_revision(request.match_info["revision"], "")
    if request.content_type == "application/json":
        payload = await request.json()
        paths = payload.get("paths", []) if isinstance(payload, dict) else []
        expand = bool(payload.get("expand")) if isinstance(payload, dict) else False
    else:
        form = await request.post()
        paths = [str(p) for p in form.getall("paths", [])]
        expand = truthy(str(form.get("expand", "")))
    repo, commit = await find_and_resolve(request, repo_type, revision)
    entries = await blocking(request, repo.list_files, commit)
    by_path = {e.path: e for e in entries}
    oids = directory_oids(entries)
    out: list[dict[str, Any]] = []
    for raw in paths if isinstance(paths, list) else []:
        p = str(raw).strip("/")
        if p in by_path:
            out.append(file_json(by_path[p]))
        elif p in oids:
            out.append({"type": "directory", "oid": oids[p], "size": 0, "path": p})
    if expand and out:
        last = await blocking(request, repo.last_commits, commit)
        for item in out:
            if (info := last.get(item["path"])) is not None:
                item["lastCommit"] = {"id": info.id, "title": info.title, "date": iso(info.date)}
    return web.json_response(out)


@hf_errors
async def list_refs(request: web.Request) -> web.StreamResponse:
    repo_type = KINDS[request.match_info["kind"]]
    store: Store = request.app[STORE_KEY]
    repo = await blocking(request, store.find_for, repo_type, repo_id_of(request), upstream_token(request))
    refs = await blocking(request, repo.refs)
    branches = [
        {"name": r.name, "ref": f"refs/heads/{r.name}", "targetCommit": r.commit}
        for r in refs
        if r.kind == "branch"
    ]
    tags = [
        {"name": r.name, "ref": f"refs/tags/{r.name}", "targetCommit": r.commit}
        for r in refs
        if r.kind == "tag"
    ]
    body: dict[str, Any] = {"branches": branches, "converts": [], "tags": tags}
    if truthy(request.query.get("include_prs")):
        body["pullRequests"] = []
    return web.json_response(body)


def resolve_handler(repo_type: RepoType) -> Handler:
    @hf_errors
    async def resolve(request: web.Request) -> web.StreamResponse:
        revision, path = split_refs_revision(request.match_info["revision"], request.match_info["path"])
        repo, commit = await find_and_resolve(request, repo_type, revision)
        entry, body = await blocking(request, repo.open_file, commit, path)
        headers = {"X-Repo-Commit": commit, "Cache-Control": "no-cache"}
        if entry.is_lfs:
            headers["X-Linked-Etag"] = quoted(entry.etag)
            headers["X-Linked-Size"] = str(entry.size)
        return await send_body(request, body, quoted(entry.etag), headers)

    return resolve


# -- registration -----------------------------------------------------------------------------------
def setup(app: web.Application, store: Store) -> None:
    app[STORE_KEY] = store
    executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="hubget-store")
    app[EXECUTOR_KEY] = executor

    async def stop_executor(_app: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_executor)
    router = app.router
    kinds = "{kind:models|datasets|spaces}"
    for rid in REPO_ID_FORMS:
        api = f"/api/{kinds}/{rid}"
        router.add_get(f"{api}/revision/{{revision:.+}}", repo_info)
        router.add_get(f"{api}/tree/{{revision}}", tree)
        router.add_get(f"{api}/tree/{{revision}}/{{path:.+}}", tree)
        router.add_post(f"{api}/paths-info/{{revision:.+}}", paths_info)
        router.add_get(f"{api}/refs", list_refs)
    # The bare repo-info URLs last, so "/api/models/gpt2/refs" is the refs of gpt2, not the repo "gpt2/refs".
    for rid in REPO_ID_FORMS:
        router.add_get(f"/api/{kinds}/{rid}", repo_info)
    # Dataset and space URLs first: "/datasets/x/resolve/..." must not be read as the model "datasets/x".
    for repo_type in ("dataset", "space", "model"):
        handler = resolve_handler(repo_type)  # type: ignore[arg-type]
        for rid in REPO_ID_FORMS:
            pattern = f"{URL_PREFIX[repo_type]}/{rid}/resolve/{{revision}}/{{path:.+}}"  # type: ignore[index]
            router.add_route("GET", pattern, handler)
            router.add_route("HEAD", pattern, handler)
