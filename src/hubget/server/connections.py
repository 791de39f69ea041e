"""Connection limits of `hubget serve`: a deadline for request headers and a cap on open connections.

aiohttp bounds idle keep-alive connections (``keepalive_timeout``) but has no deadline for a request's
headers: a client that sends half a header, or drips a byte now and then, keeps its socket (and a file
descriptor) for as long as it likes. ``GuardedHandler`` starts a timer when a connection opens and
when the first bytes of a following request arrive, and cancels it once the request line and headers
are parsed, so a download that is being sent (however slowly it is read) is never cut by it.

Past ``max_connections`` open connections in one process, a new connection first takes the place of
the longest-open one that is waiting for a request (idle keep-alive or unfinished headers); when
every connection is busy with a request, the new one gets ``503`` with ``Retry-After`` and is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("hubget.serve")

BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 25\r\nConnection: close\r\n\r\ntoo many open connections"
)


@dataclass(frozen=True)
class ServerLimits:
    """``header_timeout``: seconds from a connection's opening (or a following request's first byte)
    until its headers are complete. ``keepalive_timeout``: seconds an idle connection is kept between
    requests. ``max_connections``: open connections per server process."""

    header_timeout: float = 20.0
    keepalive_timeout: float = 75.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0 or self.max_connections < 1:
            raise ValueError(f"invalid server limits: {self}")


class GuardedServer(web.Server):
    """aiohttp's low-level server whose connections are ``GuardedHandler``s, in order of opening."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        limits: ServerLimits,
        request_factory: Any = None,
        handler_cancellation: bool = False,
        **handler_kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            **handler_kwargs,
        )
        self.limits = limits
        self._handler_kwargs = handler_kwargs
        # A dict keeps insertion order: the first waiting entry is the longest-open one.
        self.open: dict[GuardedHandler, None] = {}
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=asyncio.get_running_loop(), **self._handler_kwargs)

    def make_room(self, newcomer: GuardedHandler) -> bool:
        """Called when ``newcomer`` pushed the count past the cap: close the longest-open connection
        that waits for a request. False when every other connection is busy answering one."""
        for conn in self.open:
            if conn is not newcomer and conn.waiting_for_request():
                self.open.pop(conn, None)
                conn.force_close()
                self.evicted += 1
                return True
        return False


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a header deadline and the server's connection cap."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._guard
        server.open[self] = None
        if len(server.open) > server.limits.max_connections and not server.make_room(self):
            server.refused += 1
            server.open.pop(self, None)
            if self.transport is not None:
                self.transport.write(BUSY_ANSWER)
            self.force_close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        self._guard.open.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count != parsed_before:
            # Request line and headers are complete: from here on only the keep-alive timeout and
            # the handler decide, so a slow reader of a long body is not cut.
            self._cancel_header_timer()
        elif data and self._header_timer is None and self.waiting_for_request():
            # First bytes of a following request on a keep-alive connection.
            self._arm_header_timer()

    def waiting_for_request(self) -> bool:
        """Idle between requests or still receiving a request's headers (nothing being answered)."""
        waiter = self._waiter
        return (waiter is not None and not waiter.done()) or (
            self._request_count == 0 and not self._force_close
        )

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self._loop.call_later(self._guard.limits.header_timeout, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.waiting_for_request():
            log.info("closing a connection whose request headers did not arrive in time")
            self.force_close()


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` serving through a ``GuardedServer``. ``handler_options`` go to every
    connection's handler (header size limits, access log)."""

    def __init__(self, app: web.Application, *, limits: ServerLimits, **handler_options: Any) -> None:
        super().__init__(app, handler_cancellation=True, **handler_options)
        self._limits = limits
        self._handler_options = handler_options

    async def _make_server(self) -> web.Server:
        # The app's own server runs the startup hooks and freezes the app; serve its request handler
        # and factory through guarded connections.
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            limits=self._limits,
            request_factory=plain.request_factory,
            # A client that goes away cancels its handler (no file is sent to nobody).
            handler_cancellation=True,
            keepalive_timeout=self._limits.keepalive_timeout,
            access_log_class=web.AccessLogger,
            **self._handler_options,
        )
