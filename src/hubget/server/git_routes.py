"""Git smart HTTP (read-only) and the Git LFS batch API at the hub's clone URLs.

    /{owner}/{name}[.git]/info/refs?service=git-upload-pack      model repos (also /{name})
    /{owner}/{name}[.git]/git-upload-pack
    /datasets/{owner}/{name}[.git]/...  /spaces/{owner}/{name}[.git]/...
    .../info/lfs/objects/batch                                    LFS batch API (download only)
    .../info/lfs/objects/{oid}                                    the object's bytes (Range, sendfile)

Git's side is git's own ``git http-backend`` (CGI), run per request with the request body streamed
in and its answer streamed out. Pushing is refused. Only repos served from a git repository
speak git: plain folders and HF-cache repos answer 404 here (they have no history to clone);
their files stay available through the hub API. LFS objects are the files in the repository's
``lfs/objects`` folder; the batch API answers 404 per object for those it does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from hubget.errors import HubgetError, NotFoundError, RepoNotFoundError
from hubget.models import RepoType
from hubget.server.repo import Body, Repo
from hubget.server.sender import send_body
from hubget.server.store import Store

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
URL_PREFIX: dict[str, str] = {"dataset": "/datasets", "space": "/spaces", "model": ""}
REPO_ID_FORMS = ("{owner}/{name}", "{name}")
_OID = re.compile(r"^[0-9a-f]{64}$")
MAX_BATCH_OBJECTS = 1000
MAX_BATCH_BODY = 4 * 1024 * 1024
PIPE_CHUNK = 256 * 1024
STORE_APP_KEY: web.AppKey[Store] = web.AppKey("hubget_git_store", Store)


# -- finding the repo ---------------------------------------------------------------------------
def _repo_id(request: web.Request) -> str:
    mi = request.match_info
    name = mi["name"]
    name = name[:-4] if name.endswith(".git") else name
    return f"{mi['owner']}/{name}" if "owner" in mi else name


async def _git_repo(request: web.Request, repo_type: RepoType) -> Repo:
    store = request.app[STORE_APP_KEY]
    try:
        repo = await asyncio.to_thread(store.find, repo_type, _repo_id(request), upstream=False)
    except RepoNotFoundError as exc:
        if store.upstream is None and store.ms_upstream is None:
            raise
        raise RepoNotFoundError(
            f"{exc}: a mirror serves git (clone, fetch, LFS) only for the repos under its ROOT; get this "
            "one through the hub API instead (HF_ENDPOINT / MODELSCOPE_ENDPOINT at this server)"
        ) from None
    if repo.git_dir is None:
        raise RepoNotFoundError(
            f"{repo.repo_id} is not served from a git repository (a plain folder or a cache): "
            "download it through the hub API instead"
        )
    return repo


def _text_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip() + "\n", content_type="text/plain")


def _lfs_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"message": message}), content_type=LFS_MEDIA_TYPE)


# -- git smart HTTP -----------------------------------------------------------------------------
def _backend_env(repo: Repo, request: web.Request, path_tail: str) -> dict[str, str]:
    folder = repo.root
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GIT_PROJECT_ROOT": str(folder.parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        # The served tree may belong to another user; pushing is off whatever the repo's config says.
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
        "GIT_CONFIG_KEY_1": "http.receivepack",
        "GIT_CONFIG_VALUE_1": "false",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": request.method,
        "PATH_INFO": f"/{folder.name}/{path_tail}",
        "QUERY_STRING": request.query_string,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_ADDR": request.remote or "",
    }
    if request.content_length is not None:
        env["CONTENT_LENGTH"] = str(request.content_length)
    for header, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "GIT_PROTOCOL")):
        if value := request.headers.get(header):
            env[var] = value
    return env


async def _run_backend(request: web.Request, repo: Repo, path_tail: str) -> web.StreamResponse:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=_backend_env(repo, request, path_tail),
    )
    assert proc.stdin is not None and proc.stdout is not None
    feeder = asyncio.create_task(_feed(request, proc.stdin))
    try:
        status, headers = await _read_cgi_headers(proc.stdout)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        while chunk := await proc.stdout.read(PIPE_CHUNK):
            await resp.write(chunk)
        await feeder
        await resp.write_eof()
        return resp
    finally:
        feeder.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    try:
        async for chunk in request.content.iter_chunked(PIPE_CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, {}
    while True:
        line = await stdout.readline()
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, _, value = text.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[name.strip()] = value.strip()
    return status, headers


async def _serve_backend(request: web.Request, repo_type: RepoType, path: str) -> web.StreamResponse:
    try:
        repo = await _git_repo(request, repo_type)
    except HubgetError as exc:
        return _text_error(404, str(exc) or "Repository not found")
    return await _run_backend(request, repo, path)


def info_refs_handler(repo_type: RepoType) -> Any:
    async def info_refs(request: web.Request) -> web.StreamResponse:
        if request.query.get("service") != "git-upload-pack":
            return _text_error(403, "this server is read-only: only git-upload-pack (clone, fetch) is served")
        return await _serve_backend(request, repo_type, "info/refs")

    return info_refs


def upload_pack_handler(repo_type: RepoType) -> Any:
    async def upload_pack(request: web.Request) -> web.StreamResponse:
        return await _serve_backend(request, repo_type, "git-upload-pack")

    return upload_pack


async def receive_pack(request: web.Request) -> web.StreamResponse:
    return _text_error(403, "this server is read-only: pushing is not possible")


# -- Git LFS ------------------------------------------------------------------------------------
def _lfs_object_path(repo: Repo, oid: str) -> Path | None:
    finder = getattr(repo, "lfs_object_path", None)
    if finder is not None:
        return finder(oid)
    return None


def batch_handler(repo_type: RepoType) -> Any:
    async def batch(request: web.Request) -> web.StreamResponse:
        try:
            repo = await _git_repo(request, repo_type)
        except HubgetError as exc:
            return _lfs_error(404, str(exc) or "Repository not found")
        if (request.content_length or 0) > MAX_BATCH_BODY:
            return _lfs_error(413, "batch request too large: send fewer objects per request")
        try:
            payload = json.loads(await request.read())
            operation = payload.get("operation")
            objects = payload["objects"]
            transfers = payload.get("transfers") or ["basic"]
            if not isinstance(objects, list):
                raise TypeError("objects must be a list")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _lfs_error(422, f"invalid batch request: {exc}")
        if operation != "download":
            return _lfs_error(403, "this server is read-only: only the download operation is served")
        if "basic" not in transfers:
            return _lfs_error(422, "only the basic transfer adapter is served")
        if len(objects) > MAX_BATCH_OBJECTS:
            return _lfs_error(413, f"at most {MAX_BATCH_OBJECTS} objects per batch request")
        base = f"{request.url.origin()}{URL_PREFIX[repo_type]}/{repo.repo_id}.git/info/lfs/objects"
        header = {}
        if auth := request.headers.get("Authorization"):
            header["Authorization"] = auth  # the object URLs are this server's: same token policy
        answers = await asyncio.to_thread(_answer_objects, repo, objects, base, header)
        body = {"transfer": "basic", "objects": answers, "hash_algo": "sha256"}
        return web.Response(text=json.dumps(body), content_type=LFS_MEDIA_TYPE)

    return batch


def _answer_objects(
    repo: Repo, objects: list[Any], base: str, header: dict[str, str]
) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for item in objects:
        oid = item.get("oid") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if not isinstance(oid, str) or not _OID.match(oid) or not isinstance(size, int) or size < 0:
            answers.append(
                {"oid": str(oid), "size": size, "error": {"code": 422, "message": "invalid object"}}
            )
            continue
        path = _lfs_object_path(repo, oid)
        actual = path.stat().st_size if path is not None else None
        if actual is None:
            answers.append(
                {"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}}
            )
        elif actual != size:
            answers.append(_object_error(oid, size, 422, f"Object size is {actual}, not {size}"))
        else:
            action = {"href": f"{base}/{oid}", "header": header}
            answers.append({"oid": oid, "size": size, "authenticated": True, "actions": {"download": action}})
    return answers


def _object_error(oid: str, size: object, code: int, message: str) -> dict[str, Any]:
    return {"oid": oid, "size": size, "error": {"code": code, "message": message}}


def object_handler(repo_type: RepoType) -> Any:
    async def lfs_object(request: web.Request) -> web.StreamResponse:
        oid = request.match_info["oid"]
        try:
            repo = await _git_repo(request, repo_type)
            path = _lfs_object_path(repo, oid)
            if path is None:
                raise NotFoundError(f"LFS object {oid} is not stored on this server")
            size = (await asyncio.to_thread(path.stat)).st_size
        except HubgetError as exc:
            return _lfs_error(404, str(exc) or "Object does not exist")
        return await send_body(request, Body(size=size, path=path), f'"{oid}"', {})

    return lfs_object


# -- registration -------------------------------------------------------------------------------
def setup(app: web.Application, store: Store) -> None:
    app[STORE_APP_KEY] = store
    router = app.router
    # Dataset and space URLs first, so "/datasets/x/info/refs" is not read as the model "datasets/x".
    for repo_type in ("dataset", "space", "model"):
        rtype: RepoType = repo_type  # type: ignore[assignment]
        for rid in REPO_ID_FORMS:
            base = f"{URL_PREFIX[repo_type]}/{rid}"
            router.add_get(f"{base}/info/refs", info_refs_handler(rtype))
            router.add_post(f"{base}/git-upload-pack", upload_pack_handler(rtype))
            router.add_post(f"{base}/git-receive-pack", receive_pack)
            router.add_post(f"{base}/info/lfs/objects/batch", batch_handler(rtype))
            obj = f"{base}/info/lfs/objects/{{oid:[0-9a-f]{{64}}}}"
            router.add_route("GET", obj, object_handler(rtype))
            router.add_route("HEAD", obj, object_handler(rtype))
