"""Sending a file's bytes: whole, one range or several (multipart/byteranges), for GET and HEAD.

Files on disk go out with ``loop.sendfile`` (zero copy); git blobs are streamed from ``git cat-file``
through a small buffer. Memory per connection stays bounded whatever the file size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Mapping

from aiohttp import web

from hubget.server.gitrepo import blob_command
from hubget.server.growing import GrowingStream
from hubget.server.ranges import RangePlan, if_none_match, plan_ranges
from hubget.server.repo import Body

CHUNK = 1024 * 1024
CONTENT_TYPE = "application/octet-stream"


async def send_body(
    request: web.Request, body: Body, etag: str, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Answer GET/HEAD for ``body`` with ``headers`` (ETag and friends) and RFC 9110 range rules.
    ``etag`` is the quoted strong ETag."""
    size = body.size
    common = {**headers, "ETag": etag, "Accept-Ranges": "bytes"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and if_none_match(inm, etag):
        return web.Response(status=304, headers=common)
    if body.url is not None:
        # The bytes are in an object store: the client fetches them there, with its Range.
        # X-Linked-Size tells the size to clients that read it from the redirect (huggingface_hub).
        extra = {"Location": body.url, "X-Linked-Size": str(size)}
        return web.Response(status=302, headers={**common, **extra})
    plan: RangePlan = plan_ranges(
        method=request.method,
        range_header=None if body.whole_only else request.headers.get("Range"),
        if_range=request.headers.get("If-Range"),
        size=size,
        etag=etag,
    )
    if plan.status == 416:
        return web.Response(status=416, headers={**common, "Content-Range": f"bytes */{size}"})
    stream = None
    if body.growing is not None and request.method != "HEAD" and size:
        stream = GrowingStream(request, body.growing)
        await stream.start()  # a fill that fails at once is an error status, not a broken body
    try:
        return await _answer(request, body, plan, common, stream)
    finally:
        if stream is not None:
            stream.close()


async def _answer(
    request: web.Request,
    body: Body,
    plan: RangePlan,
    common: dict[str, str],
    stream: GrowingStream | None,
) -> web.StreamResponse:
    size = body.size
    if plan.status == 200:
        parts = [(0, size - 1)] if size else []
        return await _send_parts(request, body, 200, common, CONTENT_TYPE, parts, size, stream=stream)
    if not plan.multipart:
        start, end = plan.parts[0]
        hdrs = {**common, "Content-Range": f"bytes {start}-{end}/{size}"}
        return await _send_parts(
            request, body, 206, hdrs, CONTENT_TYPE, plan.parts, end - start + 1, stream=stream
        )
    boundary = secrets.token_hex(16)
    heads = [
        (
            f"\r\n--{boundary}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Range: bytes {s}-{e}/{size}\r\n\r\n"
        ).encode()
        for s, e in plan.parts
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = sum(len(h) for h in heads) + sum(e - s + 1 for s, e in plan.parts) + len(tail)
    return await _send_parts(
        request,
        body,
        206,
        common,
        f"multipart/byteranges; boundary={boundary}",
        plan.parts,
        length,
        heads=heads,
        tail=tail,
        stream=stream,
    )


async def _send_parts(
    request: web.Request,
    body: Body,
    status: int,
    headers: Mapping[str, str],
    content_type: str,
    parts: list[tuple[int, int]],
    length: int,
    *,
    heads: list[bytes] | None = None,
    tail: bytes = b"",
    stream: GrowingStream | None = None,
) -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = content_type
    resp.content_length = length
    await resp.prepare(request)
    if request.method == "HEAD" or length == 0:
        await resp.write_eof()
        return resp
    try:
        for i, (start, end) in enumerate(parts):
            if heads:
                await resp.write(heads[i])
            if stream is not None:
                await stream.send(resp, start, end - start + 1, final=i == len(parts) - 1)
            elif body.path is not None:
                await _sendfile(request, resp, body, start, end - start + 1)
            else:
                await _stream_blob(resp, body, start, end - start + 1)
        if tail:
            await resp.write(tail)
        await resp.write_eof()
    except (ConnectionResetError, BrokenPipeError):
        # The client went away mid-body (a downloader re-planning its ranges does this): an
        # ordinary event, not a server error. Drop the connection; nothing more can be sent.
        if request.transport is not None:
            request.transport.close()
    return resp


async def _sendfile(
    request: web.Request, resp: web.StreamResponse, body: Body, offset: int, count: int
) -> None:
    assert body.path is not None
    loop = asyncio.get_running_loop()
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    with open(body.path, "rb") as f:
        if os.fstat(f.fileno()).st_size < offset + count:
            # The file shrank after it was listed: stop rather than send short bytes under a promised length.
            raise ConnectionResetError(f"{body.path} changed while being served")
        try:
            # aiohttp hands headers and multipart heads straight to the transport, and loop.sendfile
            # waits for the transport's buffer to empty first, so the bytes go out in order.
            await loop.sendfile(transport, f, offset, count)
        except NotImplementedError:
            f.seek(offset)
            remaining = count
            while remaining > 0:
                chunk = await loop.run_in_executor(None, f.read, min(CHUNK, remaining))
                if not chunk:
                    raise ConnectionResetError(f"{body.path} changed while being served") from None
                await resp.write(chunk)
                remaining -= len(chunk)


async def _stream_blob(resp: web.StreamResponse, body: Body, offset: int, count: int) -> None:
    assert body.git_dir is not None and body.blob is not None
    proc = await asyncio.create_subprocess_exec(
        *blob_command(body.git_dir, body.blob),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        skip = offset
        while skip > 0:
            data = await proc.stdout.read(min(CHUNK, skip))
            if not data:
                raise ConnectionResetError(f"git blob {body.blob} ended early")
            skip -= len(data)
        remaining = count
        while remaining > 0:
            data = await proc.stdout.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionResetError(f"git blob {body.blob} ended early")
            await resp.write(data)
            remaining -= len(data)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
