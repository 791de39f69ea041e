"""One connection's work: fetch one segment of a file and write it in place.

``RangeFetcher.run_segment`` sends the request (a byte range, or the whole file), checks the answer
against what was asked (status, ``Content-Range``, length, encoding), reads the body into the
worker's buffer (a buffer filled, then one ``pwrite`` at its offset) or, for a ranged file over plain
HTTP, moves it socket -> pipe -> file with ``os.splice``, and tells the scheduler how it went. A
signed URL that expired (403/410) is refreshed once per file; a server that ignores Range restarts
the file as one stream; a stall or a short body is retried by the scheduler.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from hubget.errors import (
    AuthError,
    DiskError,
    HubgetError,
    IntegrityError,
    NetworkError,
    ProtocolError,
)
from hubget.transfer.answers import check_identity, content_range, refusal
from hubget.transfer.filetask import UNKNOWN_END, FileTask, Segment
from hubget.transfer.http import DEFAULT_SENSITIVE, HttpClient, RedirectRefused, Response, host_of, origin_of
from hubget.transfer.jobs import ProgressSink
from hubget.transfer.locations import Location, location_for
from hubget.transfer.scheduler import Scheduler

MiB = 1024 * 1024
RANGE_CLIENT_RETRIES = 1  # client retries inside one engine attempt at a range (see _fetch)
FILL_SECONDS = 0.1  # a read fills the buffer (or pipe) for at most this long before it is written
PIPE_SIZE = 1 * MiB  # what a splice pipe is asked to hold (the kernel may give less)
# A connection this far past the hashed prefix waits while the hasher has this much ready to hash
# (see RangeFetcher._yield_to_hasher).
HASH_LEAD = 64 * MiB
HASH_BACKLOG = 8 * MiB


class _Aborted(Exception):
    """The segment's work was cancelled (interrupt, file failed, file restarted)."""


class _Fatal(Exception):
    """A failure that retrying will not fix; fails the file."""

    def __init__(self, error: HubgetError) -> None:
        super().__init__(str(error))
        self.error = error


class _Again(Exception):
    """Retry the segment at once without counting an attempt (fresh URL obtained)."""


class _Attempt:
    """The segment a worker is on and the file generation it belongs to (both change on a restart)."""

    def __init__(self, seg: Segment, gen: int) -> None:
        self.seg = seg
        self.gen = gen


class _Pipe:
    """A pipe for ``os.splice`` from a socket into the partial file, as large as the kernel allows."""

    def __init__(self, r: int, w: int, size: int) -> None:
        self.r, self.w, self.size = r, w, size

    @classmethod
    def open(cls) -> _Pipe | None:
        try:
            r, w = os.pipe()
        except OSError:
            return None  # out of descriptors: read through the buffer instead
        size = 64 * 1024
        with contextlib.suppress(OSError, AttributeError):
            size = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return cls(r, w, size)

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)


class RangeFetcher:
    """Fetches segments for the workers of one run; holds no state of its own between segments."""

    def __init__(
        self,
        sched: Scheduler,
        client: HttpClient,
        progress: ProgressSink,
        *,
        stall_timeout: float,
        min_speed: int,
    ) -> None:
        self.sched = sched
        self.client = client
        self.progress = progress
        self.stall_timeout = stall_timeout
        self.min_speed = min_speed

    def run_segment(self, task: FileTask, seg: Segment, buf: bytearray) -> str | None:
        """Fetch ``seg``; returns "finish" or "cleanup" when the file is now complete or failed."""
        att = _Attempt(seg, task.generation)
        error: HubgetError | None = None
        fatal = again = False
        started, start_pos = time.monotonic(), seg.pos
        try:
            self._fetch(task, att, buf)
        except _Aborted:
            pass
        except _Again:
            again = True
        except _Fatal as e:
            error, fatal = e.error, True
        except (DiskError, AuthError, IntegrityError, RedirectRefused) as e:
            error, fatal = e, True
        except HubgetError as e:
            error = e
        except OSError as e:  # an unexpected local failure (not a disk-full, which is a DiskError)
            error, fatal = DiskError(f"{task.partial}: {e}"), True
        nbytes = att.seg.pos - (start_pos if att.seg is seg else att.seg.start)
        if error is None:
            self.sched.note_transfer(nbytes, time.monotonic() - started)
        if seg.source >= 0:
            fatal = self._source_outcome(task, seg.source, error, fatal, time.monotonic() - started, nbytes)
        with self.sched.cv:
            action = self.sched.segment_exit(task, att.seg, att.gen, error, fatal, again)
        return action

    def _source_outcome(
        self, task: FileTask, source: int, error: HubgetError | None, fatal: bool, seconds: float, nbytes: int
    ) -> bool:
        """Account a request to one of the file's URLs; returns whether ``error`` still fails the file.

        With several URLs, an answer that one source will not fix (404, 401/403, broken ranges)
        takes that source out of use and the segment goes to another: the file fails only when no
        source is left. Local failures (disk, hash) stay fatal.
        """
        several = len(task.urls) > 1
        source_fault = error is not None and not isinstance(error, (DiskError, IntegrityError))
        dead = several and source_fault and (fatal or isinstance(error, ProtocolError))
        if dead and not task.other_source_alive(source):
            dead = False  # the last source: its error is the file's
        newly = task.source_done(source, max(0, nbytes), seconds, failed=source_fault, dead=dead)
        if several and source_fault and newly:
            origin = FileTask.origin_label(task.urls[source])
            what = "is out" if dead else "failed"
            self.progress.message(
                f"{task.label}: {origin} {what} ({error}); its ranges go to the other sources"
            )
        return fatal and not dead

    def _fetch(self, task: FileTask, att: _Attempt, buf: bytearray) -> None:
        """Download ``att.seg``; a restart switches ``att`` to the new generation's segment."""
        seg = att.seg
        url, headers = task.url_for(seg)
        index = seg.source
        try:  # where this source's redirects lead, or None: this request resolves it for the file
            loc = task.locations.claim(index, lambda: self._gone(task, att))
        except InterruptedError:
            raise _Aborted from None
        target = url if loc is None else loc.url
        if loc is not None and origin_of(loc.url) != origin_of(url):
            headers = {k: v for k, v in headers.items() if k.lower() not in DEFAULT_SENSITIVE}
        whole = seg.start == 0 and seg.end in (task.size, UNKNOWN_END) and not task.ranged
        hdrs = dict(headers)
        if not whole:
            hdrs["Range"] = f"bytes={seg.start}-{seg.end - 1}"
        # Retries do not nest: the engine tries a range up to ``range_retries + 1`` times (each
        # resuming at the byte reached), and each try gets at most RANGE_CLIENT_RETRIES quick
        # retries from the client (for a lone 503 or a Retry-After), so a 503 storm costs at most
        # (3 + 1) x (1 + 1) = 8 requests per range with the defaults, not 6 x 6 = 36. With several
        # sources a failing one is left at once: the segment moves to another. (A 429 is waited out
        # by the client as long as the rate-limit budget lasts; it is not a failure.)
        retries = 0 if len(task.urls) > 1 else min(self.client.retries, RANGE_CLIENT_RETRIES)
        bucket = task.job.rate_bucket if loc is None or not loc.redirected else None
        try:
            resp = self.client.request(
                "GET",
                target,
                headers=hdrs,
                stream=True,
                read_timeout=self.stall_timeout,
                retries=retries,
                bucket=bucket,
            )
        except BaseException:
            if loc is None:
                task.locations.resolved(index, None, failed=True)
            raise
        loc = self._learn_location(task, index, url, loc, resp)
        with self.sched.cv:
            if self.sched.cancelled:
                resp.close()
                raise _Aborted
            self.sched.responses.add(resp)
        start = att.seg.pos
        try:
            self._check_answer(task, att, resp, url, whole)
            self._prepare_write(task, att.seg, att.gen)
            self._read_body(task, att.seg, resp, buf, att.gen)
        finally:
            if loc is not None and att.seg is seg:
                loc.served += max(0, seg.pos - start)
            with self.sched.cv:
                self.sched.responses.discard(resp)
            # Keep the connection only after a body read to its end. After a failure or a stolen
            # tail, close: reading the rest first would go at the pace of a failing server.
            if resp.body_complete():
                resp.release()
            else:
                resp.close()

    def _gone(self, task: FileTask, att: _Attempt) -> bool:
        """Whether the segment's work no longer matters (interrupt, file failed or restarted)."""
        return self.sched.cancelled or task.status != "active" or task.generation != att.gen

    def _learn_location(
        self, task: FileTask, index: int, url: str, loc: Location | None, resp: Response
    ) -> Location | None:
        """Keep where a resolve led; on a CDN's 403/410, drop the location and raise ``_Again`` so
        the range is asked again through the hub. Returns the location the answer came from."""
        refused = resp.status in (403, 410)
        if loc is None:  # this request resolved the source for the whole file
            found = location_for(url, resp.url)
            ok = resp.status in (200, 206)
            task.locations.resolved(index, found if ok else None, failed=resp.status >= 500)
            if not (refused and found.redirected):
                return found if ok else None
            loc = found  # a fresh signed URL refused at once
        elif not (refused and loc.redirected):
            return loc
        if not task.locations.refused(index, loc):
            return loc  # refused again at once: not an expiry, the status stands (see _check_answer)
        resp.close()
        host = host_of(resp.url)
        self.progress.message(
            f"{task.label}: {host} refused the signed URL (HTTP {resp.status}); resolving again"
        )
        raise _Again

    def _check_answer(self, task: FileTask, att: _Attempt, resp: Response, url: str, whole: bool) -> None:
        seg = att.seg
        host = host_of(resp.url)
        status = resp.status
        if status in (403, 410):
            self._refresh(task, url, resp.url, status, host)
        refused = refusal(task.label, resp)
        if refused is not None:
            raise _Fatal(refused)
        if status == 416:
            raise _Fatal(ProtocolError(f"{task.label}: {host} refused byte range {seg.start}- (HTTP 416)"))
        if status not in (200, 206):
            raise NetworkError(f"{task.label}: HTTP {status} from {host}")
        check_identity(task.label, resp)
        length = resp.headers.get("Content-Length")
        if status == 200:
            if task.size is not None and length is not None and length.isdigit() and int(length) != task.size:
                raise ProtocolError(
                    f"{task.label}: {host} announces {length} bytes, the hub said {task.size}"
                )
            if not whole:
                with self.sched.cv:  # the server ignored Range: this body is the whole file, from byte 0
                    if att.gen != task.generation or task.status != "active":
                        raise _Aborted
                    att.seg = self.sched.restart(task, seg)
                    att.gen = task.generation
            return
        answered = content_range(resp)
        if answered is None:
            task.bad_answers += 1
            raise ProtocolError(f"{task.label}: {host} answered 206 without a valid Content-Range")
        first, last, total = answered
        if first != seg.start or last < first or (task.size is not None and total != str(task.size)):
            task.bad_answers += 1
            raise ProtocolError(
                f"{task.label}: {host} answered bytes {first}-{last}/{total} to a request for "
                f"{seg.start}-{seg.end - 1}/{task.size}"
            )
        if length is not None and length.isdigit() and int(length) != last - first + 1:
            task.bad_answers += 1
            raise ProtocolError(f"{task.label}: {host} sent Content-Length {length} for bytes {first}-{last}")
        if last + 1 < seg.end:
            with self.sched.cv:  # a shorter answer is allowed; the rest is queued again
                task.pending.append(Segment(last + 1, seg.end))
                seg.end = last + 1

    def _refresh(self, task: FileTask, url: str, answered: str, status: int, host: str) -> None:
        """A signed URL expired (403/410): ask the job for a fresh one, once per file.

        ``answered`` is the URL that gave the status (after redirects). When the fresh URL is
        the one asked and it answered itself, without a redirect, asking again would get the
        same refusal: the status stands."""
        with task.refresh_lock:
            if url != task.urls[0]:
                if url in task.urls[1:]:
                    raise NetworkError(f"{task.label}: HTTP {status} from mirror {host}")
                raise _Again  # another worker already refreshed the URL
            if task.refreshed or task.job.refresh is None:
                return  # the caller reports the status as an auth failure
            task.refreshed = True
            fresh = task.job.refresh(task.job)
            if fresh is None or (fresh[0] == url and answered == url):
                return
            task.urls[0], task.headers = fresh[0], dict(fresh[1])
            task.locations.replace_source(0)
            self.progress.message(f"{task.label}: download URL expired (HTTP {status}); got a fresh one")
        raise _Again

    def _prepare_write(self, task: FileTask, seg: Segment, gen: int) -> None:
        with self.sched.cv:
            # After a restart, wait for the older generation's writers: none may write after us.
            while task.stale > 0 and not self.sched.cancelled and task.generation == gen:
                self.sched.cv.wait(0.2)
            if self.sched.cancelled or task.generation != gen or task.status != "active":
                raise _Aborted
            reset = task.needs_hash_reset
            task.needs_hash_reset = False
        if reset:
            task.stop_hasher()
            task.hasher.reset()
        if not task.ranged and task.fd is not None and task.hasher.hashed < seg.start:
            with self.sched.cv:
                contiguous = task.done.covers(task.hasher.hashed, seg.start)
            if contiguous:  # hash the resumed prefix now, so the stream can be hashed as it arrives
                task.hasher.catch_up(task.fd, seg.start)

    def _yield_to_hasher(self, task: FileTask, pos: int, gen: int) -> None:
        """Wait while this connection is far ahead of a busy hasher.

        sha256 runs on one core (about 1.3 GB/s on a current x86 core). When the network is faster,
        the connections' receive work took the CPU from the hasher, which then hashed most of the
        file after the last byte had arrived (1 GiB over loopback on 2 cores: 0.65 s of hashing
        left at the end). A connection more than ``HASH_LEAD`` past the hashed prefix, while at
        least ``HASH_BACKLOG`` of the file is ready for the hasher, waits for it to move on: the
        receiving then uses what the hasher leaves, and the file is hashed when it is complete. On a
        slower network the hasher keeps up and nothing waits. Never waits on a hasher that has
        stopped or does not move within half a second.
        """
        hasher = task.hasher
        still = 0.0  # seconds the hasher has not moved
        while still < 0.5:
            thread = task.hash_thread
            hashed = hasher.hashed
            if thread is None or not thread.is_alive() or pos - hashed <= HASH_LEAD:
                return
            with self.sched.cv:
                if self.sched.cancelled or task.generation != gen or task.status != "active":
                    raise _Aborted
                ready = task.done.prefix_end() - hashed
            if ready <= HASH_BACKLOG:
                return
            still = 0.0 if hasher.wait_moved(hashed, 0.1) else still + 0.1

    def _read_body(self, task: FileTask, seg: Segment, resp: Response, buf: bytearray, gen: int) -> None:
        view = memoryview(buf)
        bufsize = len(buf)
        inline_hash = not task.ranged
        origin = FileTask.origin_label(resp.url)
        label = task.label
        pos = seg.pos
        window_start, window_bytes = time.monotonic(), 0
        # A ranged file is hashed by its hasher thread from the page cache, so its bytes need not
        # pass through this buffer: after the first read, plain HTTP moves them socket -> pipe ->
        # file with os.splice (one copy, in the kernel).
        pipe: _Pipe | None = None
        sock = None
        try:
            while True:
                end = seg.end
                if pos >= end:
                    break
                if not inline_hash:
                    self._yield_to_hasher(task, pos, gen)
                deadline = time.monotonic() + FILL_SECONDS
                if pipe is None and task.ranged and task.splice_ok:
                    sock = resp.splice_source()  # (once a read has emptied http.client's buffer)
                    pipe = _Pipe.open() if sock is not None else None
                elif pipe is not None and not task.splice_ok:
                    pipe.close()
                    pipe = None
                if pipe is not None and sock is not None:
                    n = resp.splice_into(sock, pipe.w, min(pipe.size, end - pos), deadline)
                else:
                    n = resp.fill(view[: min(bufsize, end - pos)], deadline)
                if n == 0:
                    break
                with self.sched.cv:
                    if self.sched.cancelled or task.generation != gen or task.status != "active":
                        raise _Aborted
                    n = min(n, seg.end - pos)  # the tail may have been handed to another worker meanwhile
                    seg.claimed = pos + n
                if n <= 0:
                    break
                if pipe is not None:
                    task.write_from_pipe(pipe.r, n, pos)
                else:
                    chunk = view[:n]
                    task.write(chunk, pos)
                    if inline_hash:
                        task.hasher.feed(pos, chunk)
                with self.sched.cv:
                    if task.generation != gen:
                        raise _Aborted
                    task.done.add(pos, pos + n)
                    task.bytes_fetched += n
                    task.dirty += n
                    task.sources[origin] += n
                    pos += n
                    seg.pos = pos
                self.progress.advance(label, n)
                if not inline_hash:
                    task.hash_wake.set()
                window_bytes += n
                now = time.monotonic()
                if now - window_start >= self.stall_timeout:
                    if window_bytes < self.min_speed * (now - window_start):
                        raise NetworkError(
                            f"{label}: {host_of(resp.url)} is stalling ({window_bytes} bytes in "
                            f"{now - window_start:.0f} s)"
                        )
                    window_start, window_bytes = now, 0
        finally:
            if pipe is not None:
                pipe.close()
        if pos < seg.end:
            if seg.end == UNKNOWN_END:
                task.size_seen = pos  # no size was announced: the end of the body is the end of the file
                seg.end = pos
                return
            raise NetworkError(
                f"{label}: {host_of(resp.url)} closed the connection after {pos - seg.start} of "
                f"{seg.end - seg.start} bytes"
            )
