"""The download engine: many files at once, large files as parallel byte ranges, resumable, verified.

A fixed pool of worker threads (one connection each; sockets, ``pwrite`` and hashlib release the
GIL) takes work from a shared scheduler: open the next file, fetch the next segment of an open
file, or, when a file has nothing left to hand out, split the largest segment still in flight
(work stealing, so one slow connection does not hold up the end of a file). Each segment is read
with ``readinto`` into the worker's own buffer and written with ``os.pwrite`` at its offset into
one preallocated partial file. A hasher thread per large file hashes the contiguous prefix as it
grows, so verification is done moments after the last byte arrives.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections import deque
from pathlib import Path

from hubget import config
from hubget.errors import (
    AuthError,
    DiskError,
    EntryNotFoundError,
    HubgetError,
    IntegrityError,
    NetworkError,
    ProtocolError,
)
from hubget.transfer.filetask import UNKNOWN_END, FileTask, Segment
from hubget.transfer.http import HttpClient, RedirectRefused, Response, host_of
from hubget.transfer.jobs import FileJob, FileResult, ProgressSink
from hubget.transfer.ranges import IntervalSet

MiB = 1024 * 1024
MAX_CONNECTIONS = 64  # default ceiling on the connections of one run (all files together)
BUFFER_BUDGET = 48 * MiB  # read buffers of all workers together, at most
FINISHERS = 4  # threads that verify, fsync and rename finished files, off the download workers' path
WIDEN_AFTER = 3.0  # seconds a file is measured before it may get more than ``connections`` ranges
STEAL_WORTH = 1.0  # seconds of a victim's remaining transfer that are worth a dropped connection
RANGE_CLIENT_RETRIES = 1  # client retries inside one engine attempt at a range (see _fetch)
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


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


class Engine:
    def __init__(
        self,
        client: HttpClient | None = None,
        *,
        max_workers: int = 8,
        connections: int = 8,
        progress: ProgressSink | None = None,
        max_connections: int | None = None,
        stall_timeout: float | None = None,
        min_speed: int | None = None,
        split_threshold: int = 32 * MiB,
        min_chunk: int = 8 * MiB,
        max_chunk: int = 64 * MiB,
        steal_min: int = 4 * MiB,
        buffer_size: int = 2 * MiB,
        range_retries: int = 3,
        save_interval: float = 0.5,
        save_bytes: int = 64 * MiB,
        slow_connection: int = 8 * 1000 * 1000,
    ) -> None:
        self.max_workers = max(1, max_workers)
        self.connections = max(1, connections)
        # Every open file may use all its ranges at once: with origins that cap each connection,
        # the run's speed is (connections in use) x (cap), so the ceiling must not be below that.
        self.max_connections = max_connections or max(
            self.connections, min(MAX_CONNECTIONS, self.max_workers * self.connections)
        )
        # A ranged file whose connections each deliver less than this (bytes/s) while the run has
        # connections to spare is limited per connection, not by this machine: it may use more.
        self.slow_connection = slow_connection
        self.file_connections = min(self.max_connections, 4 * self.connections)
        # None: from the environment (HUBGET_STALL_TIMEOUT, HUBGET_MIN_SPEED; see hubget.config).
        self.stall_timeout = config.stall_timeout() if stall_timeout is None else stall_timeout
        self.min_speed = config.min_speed() if min_speed is None else min_speed
        self.client = client or HttpClient(read_timeout=self.stall_timeout, pool_maxsize=self.max_connections)
        self.progress = progress or ProgressSink()
        self.split_threshold = split_threshold
        self.min_chunk = min_chunk
        self.max_chunk = max(min_chunk, max_chunk)
        self.steal_min = steal_min
        self.buffer_size = buffer_size
        self.range_retries = range_retries
        self.save_interval = save_interval
        self.save_bytes = save_bytes

    # == the run ==========================================================================

    def run(self, jobs: list[FileJob]) -> list[FileResult]:
        tasks = [FileTask(job, i) for i, job in enumerate(jobs)]
        self._check_disk(tasks)
        self._cv = threading.Condition()
        self._waiting: deque[FileTask] = deque(tasks)
        self._open: list[FileTask] = []
        self._errors: list[HubgetError] = []
        self._results: dict[int, FileResult] = {}
        self._responses: set[Response] = set()
        self._cancelled = False
        self._finish_q: queue.SimpleQueue[FileTask | None] = queue.SimpleQueue()
        self._synced_dirs: set[Path] = set()  # folders whose renames still need an fsync of the folder
        sizes = [t.size for t in tasks]
        self.progress.begin(len(tasks), None if None in sizes else sum(s or 0 for s in sizes))
        large = sum(1 for t in tasks if (t.size or 0) >= self.split_threshold)
        # No more threads than there can be connections in use (see _slots for the small files).
        wanted = large * self.file_connections + min(len(tasks) - large, 2 * self.max_workers)
        nthreads = max(1, min(self.max_connections, wanted))
        # Buffers are allocated on first use and sized so that all of them together stay bounded.
        self._buf_cap = min(self.buffer_size, max(256 * 1024, BUFFER_BUDGET // nthreads))
        workers = [
            threading.Thread(target=self._worker, name=f"hubget-conn-{i}", daemon=True)
            for i in range(nthreads)
        ]
        saver_stop = threading.Event()
        saver = threading.Thread(target=self._saver, args=(saver_stop,), name="hubget-saver", daemon=True)
        finishers = [
            threading.Thread(target=self._finisher, name=f"hubget-finish-{i}", daemon=True)
            for i in range(min(FINISHERS, len(tasks)))
        ]
        try:
            for t in (*workers, *finishers):
                t.start()
            saver.start()
            for w in workers:
                while w.is_alive():
                    w.join(0.25)  # short joins keep the main thread responsive to Ctrl-C
            for _ in finishers:
                self._finish_q.put(None)
            for f in finishers:
                while f.is_alive():
                    f.join(0.25)
        except KeyboardInterrupt:
            self._interrupt(workers)
            raise
        finally:
            saver_stop.set()
            self._sync_dirs()
            for task in tasks:  # a task left open by an abandoned run must not look like a live writer
                task.release_owner()
            self.progress.end()
        if self._errors:
            raise self._errors[0]
        return [self._results[i] for i in sorted(self._results)]

    # == scheduling =======================================================================

    def _worker(self) -> None:
        buf = bytearray(0)  # grown to what a segment needs, up to the cap (small files need little)
        while True:
            item = self._next()
            if item is None:
                return
            kind, task, seg = item
            if kind == "open":
                self._open_task(task)
            elif kind == "cleanup":
                self._cleanup(task)
            elif seg is not None:
                if len(buf) < self._buf_cap and len(buf) < seg.end - seg.start:
                    buf = bytearray(min(self._buf_cap, max(64 * 1024, seg.end - seg.start)))
                self._run_segment(task, seg, buf)

    def _next(self) -> tuple[str, FileTask, Segment | None] | None:
        with self._cv:
            while True:
                if self._cancelled:
                    return None
                now = time.monotonic()
                wake = now + 0.5
                for task in self._open:
                    if task.status == "failed" and not task.active and task.stale == 0:
                        task.status = "failed-closing"
                        return "cleanup", task, None
                    if task.status != "active":
                        continue
                    if len(task.active) >= task.max_conns and not self._widen(task, now):
                        continue
                    seg, when = self._take(task, now)
                    if seg is not None:
                        return "work", task, seg
                    if when is not None:
                        wake = min(wake, when)
                if self._waiting and self._slots(self._waiting[0]):
                    task = self._waiting.popleft()
                    task.status = "preparing"
                    self._open.append(task)
                    return "open", task, None
                if not self._open and not self._waiting:
                    return None
                self._cv.wait(max(0.0, wake - now))

    def _slots(self, task: FileTask) -> bool:
        """Whether ``task`` may be opened now (engine lock held).

        ``max_workers`` large files download at once, or twice as many small ones (a small file
        holds one connection, and its latency, not bandwidth, is what overlapping hides). Files
        being finished (verify, fsync, rename) hold no slot, up to a bounded backlog.
        """
        weight = 0
        finishing = 0
        for t in self._open:
            if t.status == "finishing":
                finishing += 1
            else:
                weight += 2 if t.ranged or (t.size or 0) >= self.split_threshold else 1
        need = 2 if (task.size or 0) >= self.split_threshold else 1
        return weight + need <= 2 * self.max_workers and finishing < 4 * self.max_workers

    def _widen(self, task: FileTask, now: float) -> bool:
        """Give a ranged file more connections when its own are slow and the run has some to spare
        (engine lock held). Only while no file waits to be opened, after ``WIDEN_AFTER`` seconds of
        measurement, and again only if the previous widening raised the file's rate (a per-connection
        cap keeps each connection's rate flat; a busy CPU or a full link does not)."""
        if not task.ranged or not task.pending or self._waiting or task.max_conns >= self.file_connections:
            return False
        elapsed = now - task.mark_time
        if elapsed < WIDEN_AFTER:
            return False
        in_use = sum(len(t.active) for t in self._open)
        if in_use >= self.max_connections:
            return False
        rate = (task.bytes_fetched - task.mark_bytes) / elapsed
        if task.mark_rate and rate < 1.5 * task.mark_rate:
            task.mark_time = now + 3600 * 24  # the last widening did not pay: stay at this width
            return False
        if rate / task.max_conns >= self.slow_connection:
            return False
        task.max_conns = min(self.file_connections, task.max_conns + self.connections)
        task.mark_time, task.mark_bytes, task.mark_rate = now, task.bytes_fetched, rate
        return True

    def _take(self, task: FileTask, now: float) -> tuple[Segment | None, float | None]:
        """The next ready segment, a stolen tail, or the time the next one becomes ready."""
        soonest: float | None = None
        for i, seg in enumerate(task.pending):
            if seg.not_before <= now:
                del task.pending[i]
                seg.taken = now
                task.active.add(seg)
                return seg, None
            soonest = seg.not_before if soonest is None else min(soonest, seg.not_before)
        if task.pending or not task.ranged or not task.active:
            return None, soonest
        victim = max(task.active, key=lambda s: s.remaining)
        if victim.remaining < 2 * self.steal_min:
            return None, None
        # A cut drops the victim's connection and what is already in its socket buffers (a few MB
        # on a fast link): cut a middling remainder only when the victim would take long for it.
        rate = (victim.pos - victim.start) / max(1e-3, now - victim.taken) if victim.taken else 0.0
        if victim.remaining < 4 * self.steal_min and rate * STEAL_WORTH > victim.remaining:
            return None, None
        mid = victim.end - victim.remaining // 2
        stolen = Segment(mid, victim.end, taken=now)
        victim.end = mid  # its worker stops at mid and drops that connection's unread tail
        task.active.add(stolen)
        return stolen, None

    # == opening and finishing files ======================================================

    def _open_task(self, task: FileTask) -> None:
        try:
            task.open()
            task.plan(self.split_threshold, self.connections, self.min_chunk, self.max_chunk)
        except HubgetError as e:
            with self._cv:
                self._fail(task, e)
            self._cleanup(task)
            return
        self.progress.file_started(task.label, task.size, task.resumed_from)
        with self._cv:
            task.status = "active"
            task.mark_time, task.mark_bytes = time.monotonic(), task.bytes_fetched
            if task.ranged:
                task.hash_thread = threading.Thread(
                    target=self._hash_loop, args=(task,), name=f"hubget-hash-{task.index}", daemon=True
                )
                task.hash_thread.start()
            finish = not task.pending and task.complete()
            if finish:
                task.status = "finishing"
            # This worker takes the first segment itself; the others are for whoever waits.
            elif len(task.pending) > 1:
                self._cv.notify(len(task.pending) - 1)
        if finish:
            self._finish_q.put(task)

    def _finisher(self) -> None:
        while True:
            task = self._finish_q.get()
            if task is None:
                return
            try:
                self._finish(task)
            except Exception as e:  # never leave a task "finishing" forever: the run would not end
                with self._cv:
                    self._fail(task, HubgetError(f"{task.label}: {e}"))
                self._cleanup(task)

    def _sync_dirs(self) -> None:
        """Make the renames of this run durable: one fsync per folder, not one per file."""
        with self._cv:
            folders, self._synced_dirs = self._synced_dirs, set()
        for folder in folders:
            try:
                dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                os.fsync(dfd)
            except OSError:
                pass  # the files are in place and their data is on disk; only the names may lag
            finally:
                os.close(dfd)

    def _finish(self, task: FileTask) -> None:
        self._stop_hasher(task)
        try:
            task.finalize(task.size_seen, sync_dir=False)
        except HubgetError as e:
            with self._cv:
                self._fail(task, e)
            self._cleanup(task)
            return
        except OSError as e:
            with self._cv:
                self._fail(task, DiskError(f"{task.label}: {e}"))
            self._cleanup(task)
            return
        self.progress.file_done(task.label)
        with self._cv:
            task.status = "finished"
            self._results[task.index] = FileResult(
                job=task.job,
                path=task.job.dest,
                bytes_fetched=task.bytes_fetched,
                resumed_from=task.resumed_from,
                sources=dict(task.sources),
            )
            self._synced_dirs.add(task.job.dest.parent)
            self._open.remove(task)
            if self._waiting:
                self._cv.notify()  # a slot is free: one worker may open the next file
            else:
                self._cv.notify_all()  # winding down: idle workers may exit now

    def _fail(self, task: FileTask, error: HubgetError) -> None:
        """Mark ``task`` failed (engine lock held); its other segments stop at their next read."""
        if task.status == "failed":
            return
        if not str(error).startswith(f"{task.label}:"):
            named = type(error)(f"{task.label}: {error}")
            named.__cause__ = error
            error = named
        task.status = "failed"
        task.error = error
        task.pending.clear()
        self._errors.append(error)
        task.hash_wake.set()
        self._cv.notify_all()

    def _cleanup(self, task: FileTask) -> None:
        """After a failure: keep the partial for resume unless its data is known to be bad."""
        self._stop_hasher(task)
        if isinstance(task.error, IntegrityError):
            task.close()
        else:
            with self._cv:
                done = IntervalSet(task.done.as_list())
            try:
                task.save(done)
            except (HubgetError, OSError):
                pass  # the file already failed; the resume state is a best effort now
            task.close()
        with self._cv:
            if task in self._open:
                self._open.remove(task)
            self._cv.notify_all()

    # == one segment ======================================================================

    def _run_segment(self, task: FileTask, seg: Segment, buf: bytearray) -> None:
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
        if seg.source >= 0:
            nbytes = att.seg.pos - (start_pos if att.seg is seg else att.seg.start)
            fatal = self._source_outcome(task, seg.source, error, fatal, time.monotonic() - started, nbytes)
        with self._cv:
            action = self._segment_exit(task, att.seg, att.gen, error, fatal, again)
        if action == "finish":
            self._finish_q.put(task)
        elif action == "cleanup":
            self._cleanup(task)

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

    def _segment_exit(
        self, task: FileTask, seg: Segment, gen: int, error: HubgetError | None, fatal: bool, again: bool
    ) -> str | None:
        """Bookkeeping after a segment ends (engine lock held); returns what the caller must do next."""
        if gen != task.generation:
            task.stale -= 1  # this worker belonged to a restarted file: its segment no longer exists
        else:
            task.active.discard(seg)
            if error is not None and fatal:
                self._fail(task, error)
            elif (error is not None or again) and task.status == "active" and not self._cancelled:
                if seg.pos < seg.end:
                    progressed = seg.pos - seg.start >= MiB
                    attempts = 0 if progressed or again else seg.attempts + 1
                    several = len(task.urls) > 1
                    if attempts > self.range_retries + len(task.urls) - 1:
                        assert error is not None
                        self._fail(task, error)
                    else:
                        # Another source ready to take the range: no reason to wait.
                        elsewhere = several and task.source_ready()
                        # Each attempt already had the client's quick retry: wait longer than it did.
                        delay = 0.0 if again or progressed or elsewhere else self.client.backoff(attempts + 1)
                        ready = time.monotonic() + delay
                        task.pending.append(Segment(seg.pos, seg.end, attempts=attempts, not_before=ready))
                        task.pending.sort(key=lambda s: s.start)
                single = len(task.urls) == 1  # with several sources the bad one is dropped instead
                if isinstance(error, ProtocolError) and task.ranged and task.bad_answers >= 2 and single:
                    self._restart(task, None)  # this server's ranges cannot be trusted: one plain stream
        if gen != task.generation or error is not None or again:
            self._cv.notify_all()  # stale writers, requeued ranges, failures: wake everyone concerned
        else:
            self._cv.notify()  # one connection slot is free
        if task.status == "active" and not task.active and not task.pending and task.complete():
            task.status = "finishing"
            return "finish"
        if task.status == "failed" and not task.active and task.stale == 0:
            task.status = "failed-closing"
            return "cleanup"
        return None

    def _restart(self, task: FileTask, current: Segment | None) -> Segment:
        """Start the file over as one plain stream from byte 0 (engine lock held).

        Used when a server answers a Range with 200 (whole body) or keeps sending bad ranges:
        the data on disk cannot be trusted to match, and nothing is ever appended to it.
        """
        task.generation += 1
        task.stale += len(task.active) - (1 if current in task.active else 0)
        task.active.clear()
        task.pending.clear()
        task.done.clear()
        task.ranged = False
        task.max_conns = 1
        task.needs_hash_reset = True
        task.hash_wake.set()
        whole = Segment(0, task.size if task.size is not None else UNKNOWN_END)
        if current is not None:
            task.active.add(whole)
        else:
            task.pending.append(whole)
        self.progress.message(f"{task.label}: the server does not serve byte ranges correctly; one stream")
        return whole

    def _fetch(self, task: FileTask, att: _Attempt, buf: bytearray) -> None:
        """Download ``att.seg``; a restart switches ``att`` to the new generation's segment."""
        seg = att.seg
        url, headers = task.url_for(seg)
        whole = seg.start == 0 and seg.end in (task.size, UNKNOWN_END) and not task.ranged
        hdrs = dict(headers)
        if not whole:
            hdrs["Range"] = f"bytes={seg.start}-{seg.end - 1}"
        # Retries do not nest: the engine tries a range up to ``range_retries + 1`` times (each
        # resuming at the byte reached), and each try gets at most RANGE_CLIENT_RETRIES quick
        # retries from the client (for a lone 503 or a Retry-After), so a 503 storm costs at most
        # (3 + 1) x (1 + 1) = 8 requests per range with the defaults, not 6 x 6 = 36. With several
        # sources a failing one is left at once: the segment moves to another.
        retries = 0 if len(task.urls) > 1 else min(self.client.retries, RANGE_CLIENT_RETRIES)
        resp = self.client.request(
            "GET", url, headers=hdrs, stream=True, read_timeout=self.stall_timeout, retries=retries
        )
        with self._cv:
            if self._cancelled:
                resp.close()
                raise _Aborted
            self._responses.add(resp)
        try:
            self._check_answer(task, att, resp, url, whole)
            self._prepare_write(task, att.seg, att.gen)
            self._read_body(task, att.seg, resp, buf, att.gen)
        finally:
            with self._cv:
                self._responses.discard(resp)
            # Keep the connection only after a body read to its end. After a failure or a stolen
            # tail, close: reading the rest first would go at the pace of a failing server.
            if resp.body_complete():
                resp.release()
            else:
                resp.close()

    def _check_answer(self, task: FileTask, att: _Attempt, resp: Response, url: str, whole: bool) -> None:
        seg = att.seg
        host = host_of(resp.url)
        status = resp.status
        if status in (403, 410):
            self._refresh(task, url, resp.url, status, host)
        if status == 401 or status == 403:
            raise _Fatal(AuthError(f"{task.label}: HTTP {status} from {host} (not authorised)"))
        if status == 404:
            raise _Fatal(EntryNotFoundError(f"{task.label}: HTTP 404 from {host} (not found)"))
        if status == 416:
            raise _Fatal(ProtocolError(f"{task.label}: {host} refused byte range {seg.start}- (HTTP 416)"))
        if status not in (200, 206):
            raise NetworkError(f"{task.label}: HTTP {status} from {host}")
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise ProtocolError(f"{task.label}: {host} sent a {encoding}-encoded body, identity was asked")
        length = resp.headers.get("Content-Length")
        if status == 200:
            if task.size is not None and length is not None and length.isdigit() and int(length) != task.size:
                raise ProtocolError(
                    f"{task.label}: {host} announces {length} bytes, the hub said {task.size}"
                )
            if not whole:
                with self._cv:  # the server ignored Range: this body is the whole file, from byte 0
                    if att.gen != task.generation or task.status != "active":
                        raise _Aborted
                    att.seg = self._restart(task, seg)
                    att.gen = task.generation
            return
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
        if not match:
            task.bad_answers += 1
            raise ProtocolError(f"{task.label}: {host} answered 206 without a valid Content-Range")
        first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
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
            with self._cv:  # a shorter answer is allowed; the rest is queued again
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
            self.progress.message(f"{task.label}: download URL expired (HTTP {status}); got a fresh one")
        raise _Again

    def _prepare_write(self, task: FileTask, seg: Segment, gen: int) -> None:
        with self._cv:
            # After a restart, wait for the older generation's writers: none may write after us.
            while task.stale > 0 and not self._cancelled and task.generation == gen:
                self._cv.wait(0.2)
            if self._cancelled or task.generation != gen or task.status != "active":
                raise _Aborted
            reset = task.needs_hash_reset
            task.needs_hash_reset = False
        if reset:
            self._stop_hasher(task)
            task.hasher.reset()
        if not task.ranged and task.fd is not None and task.hasher.hashed < seg.start:
            with self._cv:
                contiguous = task.done.covers(task.hasher.hashed, seg.start)
            if contiguous:  # hash the resumed prefix now, so the stream can be hashed as it arrives
                task.hasher.catch_up(task.fd, seg.start)

    def _read_body(self, task: FileTask, seg: Segment, resp: Response, buf: bytearray, gen: int) -> None:
        view = memoryview(buf)
        bufsize = len(buf)
        inline_hash = not task.ranged
        origin = FileTask.origin_label(resp.url)
        label = task.label
        pos = seg.pos
        window_start, window_bytes = time.monotonic(), 0
        while True:
            end = seg.end
            if pos >= end:
                break
            n = resp.readinto(view[: min(bufsize, end - pos)])
            if n == 0:
                break
            with self._cv:
                if self._cancelled or task.generation != gen or task.status != "active":
                    raise _Aborted
                n = min(n, seg.end - pos)  # the tail may have been handed to another worker meanwhile
                seg.claimed = pos + n
            if n <= 0:
                break
            chunk = view[:n]
            task.write(chunk, pos)
            if inline_hash:
                task.hasher.feed(pos, chunk)
            with self._cv:
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
        if pos < seg.end:
            if seg.end == UNKNOWN_END:
                task.size_seen = pos  # no size was announced: the end of the body is the end of the file
                seg.end = pos
                return
            raise NetworkError(
                f"{label}: {host_of(resp.url)} closed the connection after {pos - seg.start} of "
                f"{seg.end - seg.start} bytes"
            )

    # == hashing and resume state =========================================================

    def _hash_loop(self, task: FileTask) -> None:
        buf = bytearray(4 * MiB)
        while True:
            task.hash_wake.wait(0.5)
            task.hash_wake.clear()
            with self._cv:
                if not task.ranged or task.status != "active" or task.fd is None or self._cancelled:
                    return
                prefix = task.done.prefix_end()
                fd = task.fd
            if prefix > task.hasher.hashed:
                try:
                    task.hasher.catch_up(fd, prefix, buf)
                except OSError:
                    return  # finalize reads the rest itself and reports a real failure

    def _stop_hasher(self, task: FileTask, timeout: float | None = None) -> None:
        thread = task.hash_thread
        if thread is not None and thread is not threading.current_thread():
            task.hash_wake.set()
            thread.join(timeout)
            task.hash_thread = None

    def _saver(self, stop: threading.Event) -> None:
        """Persist resume state every ``save_interval`` seconds or ``save_bytes`` bytes per file.

        A kill loses at most that much of finished ranges. Each save fdatasyncs the partial before
        its record (data first); that costs the disk writeback the kernel would do anyway, on this
        thread, not the workers' (measured here: about 1.5 s per GB whether every 64 or 256 MiB)."""
        while not stop.wait(0.1):
            due: list[tuple[FileTask, IntervalSet]] = []
            now = time.monotonic()
            with self._cv:
                for task in self._open:
                    if task.status != "active" or not task.dirty:
                        continue
                    if task.dirty >= self.save_bytes or now - task.last_save >= self.save_interval:
                        due.append((task, IntervalSet(task.done.as_list())))
                        task.dirty = 0
                        task.last_save = now
            for task, done in due:
                try:
                    task.save(done)
                except DiskError as e:
                    with self._cv:
                        self._fail(task, e)

    def _interrupt(self, workers: list[threading.Thread]) -> None:
        """Ctrl-C: stop every connection now, wait briefly for workers, save resume state."""
        with self._cv:
            self._cancelled = True
            responses = list(self._responses)
            self._cv.notify_all()
        for resp in responses:
            resp.abort()
        deadline = time.monotonic() + 5
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        with self._cv:
            snapshot = [(t, IntervalSet(t.done.as_list())) for t in self._open if t.status == "active"]
        for task, done in snapshot:
            self._stop_hasher(task, timeout=1.0)
            try:
                task.save(done)
            except (HubgetError, OSError):
                pass
            task.close()

    # == before anything starts ===========================================================

    def _check_disk(self, tasks: list[FileTask]) -> None:
        """Fail fast when a destination's filesystem cannot hold what remains to download."""
        need: dict[int, tuple[Path, int]] = {}
        for task in tasks:
            if not task.size:
                continue
            folder = task.partial.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            try:
                dev = os.stat(folder).st_dev
            except OSError:
                continue
            remaining = task.size - task.peek_resumable()
            prev = need.get(dev, (folder, 0))
            need[dev] = (prev[0], prev[1] + remaining)
        for folder, nbytes in need.values():
            try:
                st = os.statvfs(folder)
            except OSError:
                continue
            free = st.f_bavail * st.f_frsize
            if nbytes > free:
                raise DiskError(
                    f"not enough free space in {folder}: {_fmt(nbytes)} to download, {_fmt(free)} free"
                )


def _fmt(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1000
    return f"{n} B"
