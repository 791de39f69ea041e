"""The aiohttp application of `hubget serve` and the code that runs it.

Routes come from ``hf_routes`` (Hugging Face API), ``git_routes`` (git smart HTTP + LFS) and
``ms_routes`` (ModelScope API); each module has ``setup(app, store)``. Optional token protection
is a middleware in front of all of them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web

from hubget.server import git_routes, hf_routes, metrics, ms_routes
from hubget.server.auth import request_token, token_allowed
from hubget.server.connections import GuardedAppRunner, ServerLimits
from hubget.server.keys import PAGE_SIZE_KEY, STORE_KEY, TOKENS_KEY
from hubget.server.store import Store
from hubget.server.upstream import Upstream

__all__ = [
    "PAGE_SIZE_KEY",
    "STORE_KEY",
    "TOKENS_KEY",
    "create_app",
    "request_token",
    "runner_for",
    "serve_forever",
    "token_allowed",
]
DEFAULT_PAGE_SIZE = 1000

# Limits against abusive clients: header sizes and request bodies (time limits and the connection cap
# are in ``ServerLimits``).
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100
MAX_REQUEST_BODY = 16 * 1024 * 1024

log = logging.getLogger("hubget.serve")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def read_token_file(path: Path) -> frozenset[str]:
    """One token per line; blank lines and lines starting with # are ignored."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    tokens = request.app[TOKENS_KEY]
    if tokens and not token_allowed(request_token(request), tokens):
        message = (
            "Invalid credentials in Authorization header"
            if "Authorization" in request.headers
            else ("Authentication required: send a token as 'Authorization: Bearer <token>'")
        )
        return web.Response(
            status=401,
            text=f'{{"error": "{message}"}}',
            content_type="application/json",
            headers={
                "X-Error-Code": "Unauthorized",
                "X-Error-Message": message,
                "WWW-Authenticate": 'Bearer realm="hubget", Basic realm="hubget"',
            },
        )
    return await handler(request)


def create_app(
    root: Path,
    *,
    hf_cache: Path | None = None,
    tokens: Iterable[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    store: Store | None = None,
    upstream: Upstream | None = None,
    ms_upstream: Upstream | None = None,
) -> web.Application:
    """The server application for the repos under ``root`` (see ``hubget.server.store``); with
    ``upstream``, every other repo is served from that hub (a pull-through mirror), and with
    ``ms_upstream`` every other repo of the ModelScope API from that one."""
    store = store or Store(
        Path(root),
        hf_cache=Path(hf_cache) if hf_cache else None,
        upstream=upstream,
        ms_upstream=ms_upstream,
    )
    app = web.Application(middlewares=[auth_middleware], client_max_size=MAX_REQUEST_BODY)
    app[STORE_KEY] = store
    app[TOKENS_KEY] = frozenset(tokens or ())
    app[PAGE_SIZE_KEY] = page_size

    async def close_store(_app: web.Application) -> None:
        store.close()

    app.on_cleanup.append(close_store)
    if upstream is not None or ms_upstream is not None:
        metrics.setup(app)  # before the repo routes: "/metrics" is no repo
    for routes in (hf_routes, git_routes, ms_routes):  # registered in this order
        routes.setup(app, store)
    return app


def runner_for(
    app: web.Application, *, access_log: bool = False, limits: ServerLimits | None = None
) -> web.AppRunner:
    return GuardedAppRunner(
        app,
        limits=limits or ServerLimits(),
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
    )


async def serve_forever(
    app: web.Application,
    host: str,
    port: int,
    on_bound: Callable[[str], None] | None = None,
    *,
    access_log: bool = False,
    sock: socket.socket | None = None,
    limits: ServerLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve until cancelled. ``on_bound`` gets the base URL once the socket listens (port 0 allowed).
    With ``sock`` (a listening socket shared by several worker processes) host and port are ignored;
    with ``ssl_context`` it is HTTPS."""
    runner = runner_for(app, access_log=access_log, limits=limits)
    await runner.setup()
    try:
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
        else:
            site = web.TCPSite(runner, host, port, reuse_address=True, backlog=512, ssl_context=ssl_context)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        if on_bound is not None:
            on_bound(f"{'https' if ssl_context else 'http'}://{shown}:{bound_port}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
