"""`hubget serve` in a thread of the test process, writing down every request it answers, so a test
can prove which file bodies a client fetched (and that it fetched none).

    with counting_hub(root) as hub:
        ...client runs against hub.url...
        assert hub.bodies() == ["org/model:weights.bin"]
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

START_TIMEOUT = 60.0


@dataclass
class Request:
    method: str
    path: str
    query: str
    status: int
    range: str | None


@dataclass
class CountingHub:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def bodies(self) -> list[str]:
        """``repo:path`` of every GET that asked for a file body (HF resolve, ModelScope repo?FilePath)."""
        out = []
        with self.lock:
            requests = list(self.requests)
        for r in requests:
            if r.method != "GET" or r.status >= 400:
                continue
            if "/resolve/" in r.path:
                repo, _, rest = r.path.lstrip("/").partition("/resolve/")
                out.append(f"{repo}:{unquote(rest.partition('/')[2])}")
            elif r.path.startswith("/api/v1/") and r.path.endswith("/repo") and "FilePath=" in r.query:
                repo = r.path[len("/api/v1/") :].rsplit("/repo", 1)[0].partition("/")[2]
                path = next(p for p in r.query.split("&") if p.startswith("FilePath=")).partition("=")[2]
                out.append(f"{repo}:{unquote(path.replace('+', ' '))}")
        return out


@contextlib.contextmanager
def counting_hub(root: Path, *, hf_cache: Path | None = None) -> Iterator[CountingHub]:
    from hubget.server.app import create_app, serve_forever

    hub = CountingHub()
    app = create_app(root, hf_cache=hf_cache)

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        entry = Request(
            request.method, request.path, request.query_string, response.status, request.headers.get("Range")
        )
        with hub.lock:
            hub.requests.append(entry)
        return response

    app.middlewares.append(record)
    loop = asyncio.new_event_loop()
    bound: queue.Queue[str | BaseException] = queue.Queue()
    tasks: list[asyncio.Task[None]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            task = asyncio.ensure_future(serve_forever(app, "127.0.0.1", 0, bound.put))
            tasks.append(task)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            bound.put(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="counting-hub", daemon=True)
    thread.start()
    got = bound.get(timeout=START_TIMEOUT)
    if isinstance(got, BaseException):
        raise RuntimeError(f"hubget serve did not start: {got!r}")
    hub.url = got
    try:
        yield hub
    finally:
        loop.call_soon_threadsafe(tasks[0].cancel)
        thread.join(timeout=10)
