"""Sending a blob that is still arriving from upstream, to every client that wants it at once.

One fill per blob (``BlobFill``) writes a partial file and records which byte ranges are on disk; each
client's answer follows it: bytes already there go out with sendfile, the rest as they arrive
(polled). A range far ahead of the fill is fetched for that client straight from upstream instead of
waiting (``open_direct``), one chunk at a time, so no second copy of the whole file is made.

No client gets a complete answer of unverified bytes: the last byte of every answer is held until the
fill has verified the blob, and bytes fetched directly are compared with the verified blob first.
When a fill fails its hash, the answers it fed are cut short (the client sees a broken download and
retries), and for a while Range requests get the whole file (``Body.whole_only``), so that a client
resuming after the cut cannot splice bad bytes with good ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from hubget.errors import HubgetError, IntegrityError, NetworkError
from hubget.server.upstream import BlobFill, Growing

MiB = 1024 * 1024
POLL = 0.05  # seconds between looks at the fill's progress
START_WAIT = 8.0  # seconds a GET waits for the fill's first bytes (or its failure) before its headers
FAR = 256 * MiB  # a range this far beyond the bytes on disk is fetched directly...
DIRECT_ETA = 2.0  # ... as is one the fill would reach in more seconds than this, at its measured rate,
DIRECT_AFTER = 5.0  # ... or has not reached after this many seconds without progress
RATE_WINDOW = 0.5  # seconds of watching the fill before its rate counts
DIRECT_CHUNK = 8 * MiB
DIRECT_BUF = 256 * 1024
RESTARTS = 3  # new fills one answer may wait for after the fill feeding it failed


class Cut(ConnectionResetError):
    """The answer cannot be completed with correct bytes: the connection is closed mid-body."""


def available(done: tuple[tuple[int, int], ...], pos: int, limit: int) -> int:
    """Bytes on disk from ``pos`` on (contiguous), at most up to ``limit``."""
    for start, end in done:
        if start <= pos < end:
            return max(0, min(end, limit) - pos)
    return 0


def front(done: tuple[tuple[int, int], ...], pos: int) -> int:
    """The end of the bytes on disk nearest before ``pos`` (0 when none)."""
    return max((end for start, end in done if start <= pos), default=0)


class GrowingStream:
    """One answer's bytes from a growing blob; ``start`` before the headers, ``send`` per part."""

    def __init__(self, request: web.Request, growing: Growing) -> None:
        self.request = request
        self.growing = growing
        self.fill: BlobFill | None = None
        self.lineage: int | None = None  # of the partial-file bytes this answer sent
        self.spans: list[tuple[int, int, bytes]] = []  # bytes sent straight from upstream, with sha256
        self.restarts = 0
        self._file: BinaryIO | None = None
        self._mark: tuple[float, int] | None = None  # (when, bytes on disk) at the first look

    async def start(self) -> None:
        """Join (or start) the fill; raise its error when it fails before a byte is there, so the
        client gets an error status rather than a broken body."""
        self.fill = await asyncio.to_thread(self.growing.current)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            p = self.fill.progress()
            if p.state == "failed":
                if not isinstance(p.error, IntegrityError) or self.restarts >= RESTARTS:
                    raise p.error or NetworkError("the upstream fill failed")
                # Wrong bytes came: a new fill will most likely get the right ones. Wait for it.
                await self._next_fill()
                deadline = time.monotonic() + START_WAIT
                continue
            if p.state == "done" or p.done:
                return
            await asyncio.sleep(POLL)

    async def _next_fill(self) -> None:
        """After the fill failed: the next one (a failure stays what clients get for a moment)."""
        failed = self.fill
        while True:
            self.fill = await asyncio.to_thread(self.growing.current)
            if self.fill is not failed:
                self.restarts += 1
                return
            await asyncio.sleep(0.5)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def send(self, resp: web.StreamResponse, start: int, count: int, *, final: bool) -> None:
        try:
            await self._send(resp, start, count, final)
        except (ConnectionResetError, BrokenPipeError):
            raise
        except (HubgetError, OSError) as exc:
            raise Cut(str(exc)) from exc

    async def _send(self, resp: web.StreamResponse, start: int, count: int, final: bool) -> None:
        assert self.fill is not None
        pos, end = start, start + count
        limit = end - 1 if final else end  # the answer's last byte waits for the verified blob
        waited = 0.0
        while pos < end:
            fill = self.fill
            p = fill.progress()
            if self.lineage is not None and p.lineage != self.lineage:
                raise Cut("bytes this answer got from the fill were disowned")
            if p.state == "done":
                await self._check_spans(fill.blob)
                await self._sendfile(fill.blob, pos, end - pos, None)
                return
            if p.state == "failed":
                if self.restarts >= RESTARTS:
                    raise Cut(f"the upstream fill failed: {p.error}")
                await self._next_fill()  # (bytes sent before are checked: the lineage above)
                continue
            n = available(p.done, pos, limit) if p.partial is not None else 0
            if n > 0:
                assert p.partial is not None
                await self._sendfile(p.partial, pos, n, p.lineage)
                self.lineage = p.lineage
                pos += n
                waited = 0.0
                continue
            if pos < limit and (waited >= DIRECT_AFTER or self._far(p.done, pos)):
                got = await self._direct(resp, fill, pos, min(limit, pos + DIRECT_CHUNK))
                if got:
                    pos += got
                    waited = 0.0
                    continue
            await asyncio.sleep(POLL)
            waited += POLL

    def _far(self, done: tuple[tuple[int, int], ...], pos: int) -> bool:
        """Whether the fill will take long to reach ``pos``: far ahead of the bytes on disk before it,
        at the rate the fill was seen to grow."""
        gap = pos - front(done, pos)
        if gap >= FAR:
            return True
        now, total = time.monotonic(), sum(end - start for start, end in done)
        if self._mark is None:
            self._mark = (now, total)
            return False
        elapsed = now - self._mark[0]
        if elapsed < RATE_WINDOW:
            return False
        rate = (total - self._mark[1]) / elapsed
        # No growth seen (the resume state is saved now and then, later under load): DIRECT_AFTER
        # decides, so a client at the front of a fill that paused does not fetch what the fill fetches.
        return rate > 0 and gap / rate > DIRECT_ETA

    async def _sendfile(self, path: Path, offset: int, count: int, lineage: int | None) -> None:
        """Send ``count`` bytes of ``path`` from ``offset``; a partial file is opened once, and only
        trusted when the fill's lineage did not change meanwhile."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        if lineage is None:
            with open(path, "rb") as f:
                await _sendfile(transport, f, offset, count)
            return
        if self._file is None:
            self._file = open(path, "rb")  # noqa: SIM115 - kept open across parts and polls
            assert self.fill is not None
            if self.fill.progress().lineage != lineage:
                raise Cut("the partial file was replaced")
        await _sendfile(transport, self._file, offset, count)

    async def _direct(self, resp: web.StreamResponse, fill: BlobFill, start: int, stop: int) -> int:
        reader = await asyncio.to_thread(fill.open_direct, start, stop)
        if reader is None:
            return 0
        digest = hashlib.sha256()
        got = 0
        buf = bytearray(DIRECT_BUF)
        try:
            while start + got < stop:
                view = memoryview(buf)[: min(len(buf), stop - start - got)]
                try:
                    n = await asyncio.to_thread(reader.readinto, view)
                except (HubgetError, OSError):
                    break
                if n <= 0:
                    break
                data = bytes(buf[:n])
                digest.update(data)
                await resp.write(data)  # (if the client is gone, so is the need to check these bytes)
                got += n
        finally:
            reader.close()
        if got:
            self.spans.append((start, start + got, digest.digest()))
        return got

    async def _check_spans(self, blob: Path) -> None:
        """Bytes sent straight from upstream must be those of the verified blob."""
        spans, self.spans = self.spans, []
        for start, end, digest in spans:
            if await asyncio.to_thread(_sha256_of, blob, start, end) != digest:
                raise Cut(f"bytes {start}-{end - 1} fetched directly differ from the verified blob")


def _sha256_of(path: Path, start: int, end: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        pos = start
        while pos < end:
            data = os.pread(f.fileno(), min(4 * MiB, end - pos), pos)
            if not data:
                break
            digest.update(data)
            pos += len(data)
    return digest.digest()


async def _sendfile(transport: asyncio.BaseTransport, f: BinaryIO, offset: int, count: int) -> None:
    if os.fstat(f.fileno()).st_size < offset + count:
        raise Cut(f"{f.name} is shorter than expected")
    loop = asyncio.get_running_loop()
    try:
        await loop.sendfile(transport, f, offset, count)  # type: ignore[arg-type]
    except NotImplementedError:
        pos = offset
        while pos < offset + count:
            data = os.pread(f.fileno(), min(MiB, offset + count - pos), pos)
            if not data:
                raise Cut(f"{f.name} is shorter than expected") from None
            transport.write(data)  # type: ignore[attr-defined]
            pos += len(data)
