"""The Xet download engine: files rebuilt from xorb ranges, fetched in parallel, decoded, verified.

Each file is asked for in batches of ``batch_bytes`` (``XetJob.reconstruct``: the CAS's reconstruction
of that byte range, with signed URLs); a batch becomes units (``xetplan.plan_units``), one xorb byte
range each. A fixed pool of threads takes units from every open file, fetches each range with the
shared ``HttpClient`` (its pools, retries, rate limits), decodes its chunks as they arrive
(``xetdecode.ChunkStream``) and ``pwrite``s every term's bytes at its offset. The file on disk is a
``FileTask``: the same partial file, resume state and verified rename as the HTTP engine, so a kill
loses at most the terms finished since the last save, and a file the Xet path gives up on can be
resumed by the HTTP bridge from the very same partial. A hasher per file hashes the contiguous prefix
as it grows; the sha256 decides, as for every file: nothing unverified reaches ``dest``.

Signed xorb URLs that expire (or are refused, 403) are replaced by asking for the batch again, once
for all of its units; a range that arrives damaged (``XetDataError``) or short is fetched again.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
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
from hubget.transfer.filetask import FileTask
from hubget.transfer.http import HttpClient, Response, host_of, origin_url
from hubget.transfer.jobs import FileJob, FileResult, ProgressSink
from hubget.transfer.locations import REFRESH_FRACTION, REFRESH_MARGIN, signed_url_lifetime
from hubget.transfer.ranges import IntervalSet
from hubget.transfer.xetdecode import ChunkStream, XetDataError
from hubget.transfer.xetplan import XetReconstruction, XetUnit, plan_units
from hubget.transfer.xetstore import XetChunkIndex

MiB = 1024 * 1024
# File bytes asked for per reconstruction request. A CAS answers a range with the chunks that hold
# it, so this also bounds a unit (one request): smaller means more parallel requests per file, more
# reconstruction calls (one per 64 MiB: 16 per GB).
BATCH_BYTES = 64 * MiB
# A file smaller than ``connections`` batches is asked for in smaller ones (not below this), so that
# it, too, is fetched on every connection: what decides the speed where a CDN caps each connection.
MIN_BATCH = 4 * MiB
MAX_OPEN_FILES = 4
MAX_REFRESHES = 3  # refreshes of a batch in a row that bring no byte: the refusal is not about expiry


@dataclass
class XetJob:
    """Rebuild a Xet file of ``size`` bytes at ``dest``, verified against ``sha256``.

    ``reconstruct(start, end)`` returns the CAS's reconstruction of file bytes ``[start, end)``
    (fresh signed URLs each call; the caller's source refreshes its CAS token as needed).
    ``partial`` is where the partial file and its resume state live (as ``FileJob.partial``)."""

    dest: Path
    size: int
    sha256: str
    label: str
    reconstruct: Callable[[int, int], XetReconstruction]
    partial: Path | None = None

    def file_job(self) -> FileJob:
        return FileJob(
            url=f"xet:{self.label}",
            dest=self.dest,
            size=self.size,
            expected_hash=self.sha256,
            hash_algo="sha256",
            label=self.label,
            partial=self.partial,
        )


class _Refresh(Exception):
    """The unit's signed URL expired or was refused: the batch needs fresh URLs."""


class _Aborted(Exception):
    """The file failed meanwhile, or the run was interrupted."""


@dataclass(eq=False)
class _File:
    job: XetJob
    task: FileTask
    batches: list[tuple[int, int]] = field(default_factory=list)  # file ranges asked for, in order
    cursor: int = 0  # where the next batch starts: the end of the terms the last one returned
    planning: int = 0  # batches being asked for right now
    pending: deque[XetUnit] = field(default_factory=deque)
    active: int = 0
    status: str = "waiting"  # waiting, open, finishing, finished, failed, closed
    error: HubgetError | None = None
    generation: list[int] = field(default_factory=list)  # per batch: URLs replaced so many times
    refresh_at: list[float] = field(default_factory=list)  # per batch (monotonic): ask again from here
    refreshing: set[int] = field(default_factory=set)
    refreshes: Counter[int] = field(default_factory=Counter)  # per batch, in a row without progress
    net_bytes: int = 0
    origins: Counter[str] = field(default_factory=Counter)
    runs: dict[str, list[tuple[int, int, list[int]]]] = field(default_factory=dict)  # for the store
    reused: int = 0  # file bytes copied from chunks already on disk
    saved: int = 0  # xorb bytes not fetched thanks to them
    hash_thread: threading.Thread | None = None


class XetEngine:
    """Runs lists of ``XetJob``s; files that fail are reported, not raised (the caller falls back)."""

    def __init__(
        self,
        client: HttpClient | None = None,
        *,
        connections: int = 16,
        progress: ProgressSink | None = None,
        batch_bytes: int = BATCH_BYTES,
        max_open_files: int = MAX_OPEN_FILES,
        unit_retries: int = 3,
        stall_timeout: float | None = None,
        save_interval: float = 0.5,
        store: XetChunkIndex | None = None,
    ) -> None:
        self.connections = max(1, connections)
        self.stall_timeout = config.stall_timeout() if stall_timeout is None else stall_timeout
        self.client = client or HttpClient(read_timeout=self.stall_timeout, pool_maxsize=self.connections)
        self.progress = progress or ProgressSink()
        self.batch_bytes = max(1, batch_bytes)
        self.max_open_files = max(1, max_open_files)
        self.unit_retries = unit_retries
        self.save_interval = save_interval
        self.store = store  # chunks already on disk, reused instead of fetched
        self.saved: dict[str, int] = {}  # label -> xorb bytes not fetched (reused from disk)

    # -- the run --------------------------------------------------------------------------------

    def run(self, jobs: list[XetJob]) -> tuple[list[FileResult], dict[str, HubgetError]]:
        """Download every job: (results of the files now verified in place, errors by label)."""
        self.cv = threading.Condition()
        self.cancelled = False
        self.responses: set[Response] = set()
        self.files = [_File(job, FileTask(job.file_job(), i)) for i, job in enumerate(jobs)]
        self.waiting = deque(self.files)
        self.results: dict[int, FileResult] = {}
        self.errors: dict[str, HubgetError] = {}
        self.progress.begin(len(jobs), sum(j.size for j in jobs))
        threads = [
            threading.Thread(target=self._worker, name=f"hubget-xet-{i}", daemon=True)
            for i in range(min(self.connections, max(1, 4 * len(jobs))))
        ]
        self.client.limiter.add_listener(self.progress.message)
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.25)
        except KeyboardInterrupt:
            self._interrupt(threads)
            raise
        finally:
            self.client.limiter.remove_listener(self.progress.message)
            for f in self.files:
                f.task.release_owner()
            self.progress.end()
        return [self.results[i] for i in sorted(self.results)], dict(self.errors)

    def _next(self) -> tuple[str, _File, XetUnit | None] | None:
        with self.cv:
            while True:
                if self.cancelled:
                    return None
                now = time.monotonic()
                wake = now + 0.5
                opened = [f for f in self.files if f.status in ("open", "finishing")]
                for f in opened:
                    if f.status != "open":
                        continue
                    # Ask for the next batch while this one still has work: no worker waits for it.
                    if not f.planning and f.cursor < f.job.size and len(f.pending) < self.connections:
                        f.planning += 1
                        return "plan", f, None
                    for i, unit in enumerate(f.pending):
                        if unit.not_before <= now:
                            del f.pending[i]
                            f.active += 1
                            return "unit", f, unit
                        wake = min(wake, unit.not_before)
                if self.waiting and len(opened) < self.max_open_files:
                    f = self.waiting.popleft()
                    f.status = "open"
                    f.planning += 1
                    return "open", f, None
                if not self.waiting and all(f.status in ("finished", "closed") for f in self.files):
                    return None
                self.cv.wait(max(0.01, wake - now))

    def _worker(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            kind, f, unit = item
            try:
                if kind in ("open", "plan"):
                    self._plan(f, open_first=kind == "open")
                elif unit is not None:
                    self._run_unit(f, unit)
            except HubgetError as e:
                self._fail(f, e)
            except OSError as e:
                self._fail(f, DiskError(f"{f.task.label}: {e}"))
            self._maybe_finish(f)

    # -- files ----------------------------------------------------------------------------------

    def _open(self, f: _File) -> None:
        f.task.open()
        self.progress.file_started(f.task.label, f.task.size, f.task.resumed_from)
        f.hash_thread = threading.Thread(
            target=self._hash_loop, args=(f,), name=f"hubget-xet-hash-{f.task.index}", daemon=True
        )
        f.hash_thread.start()

    def _plan(self, f: _File, open_first: bool = False) -> None:
        """Ask for the file's next batch (opening the file first); ``planning`` was counted up."""
        try:
            if open_first:
                self._open(f)
            with self.cv:
                if f.status != "open":
                    return
                # From the first byte not on disk (a resumed file skips what it has) to the end of that
                # gap, at most ``batch_bytes``.
                gap = next(((s, e) for s, e in f.task.done.missing(f.job.size) if e > f.cursor), None)
                if gap is None:
                    f.cursor = f.job.size
                    return
                start = max(gap[0], f.cursor)
                f.batches.append((start, min(gap[1], start + self._batch_for(f.job.size))))
                f.generation.append(0)
                f.refresh_at.append(math.inf)
                batch = len(f.batches) - 1
            self._load_batch(f, batch)
        finally:
            with self.cv:
                f.planning -= 1
                self.cv.notify_all()

    def _batch_for(self, size: int) -> int:
        return min(self.batch_bytes, max(MIN_BATCH, -(-size // self.connections)))

    def _load_batch(self, f: _File, batch: int) -> None:
        """Ask for ``batch`` and queue its units that still have bytes to write."""
        start, end = f.batches[batch]
        recon = f.job.reconstruct(start, end)
        units, stop = plan_units(recon, start, end, batch)
        if self.store is not None:
            for u in units:
                u.local = self.store.find(u.fetch.xorb, u.fetch.chunk_start, u.fetch.chunk_end)
        lifetimes = [t for u in units if (t := signed_url_lifetime(u.fetch.url)) is not None]
        now = time.monotonic()
        with self.cv:
            if lifetimes:
                left = min(lifetimes)
                f.refresh_at[batch] = now + max(0.0, left - min(REFRESH_MARGIN, REFRESH_FRACTION * left))
            f.generation[batch] += 1
            f.cursor = max(f.cursor, min(stop, f.job.size))
            # Units still queued for this batch carry stale URLs: the fresh plan replaces them.
            f.pending = deque(u for u in f.pending if u.batch != batch)
            for u in units:
                u.url_generation = f.generation[batch]
                if not all(f.task.done.covers(*p.interval) for p in u.placements):
                    f.pending.append(u)
            self.cv.notify_all()

    def _refresh(self, f: _File, unit: XetUnit) -> None:
        """New URLs for the unit's batch, once for all of its units (the others wait for them)."""
        with self.cv:
            while unit.batch in f.refreshing and f.status == "open":
                self.cv.wait(0.2)
            if f.status != "open" or f.generation[unit.batch] != unit.url_generation:
                return  # another worker already did it; the fresh plan covers this unit
            f.refreshes[unit.batch] += 1
            if f.refreshes[unit.batch] > MAX_REFRESHES:
                raise AuthError(f"{f.task.label}: xorb URLs keep being refused even when fresh")
            f.refreshing.add(unit.batch)
        try:
            self.progress.message(f"{f.task.label}: signed xorb URLs expired; asking for fresh ones")
            self._load_batch(f, unit.batch)
        finally:
            with self.cv:
                f.refreshing.discard(unit.batch)
                self.cv.notify_all()

    def _fail(self, f: _File, error: HubgetError) -> None:
        with self.cv:
            if f.status in ("failed", "closed", "finished"):
                return
            if not str(error).startswith(f"{f.task.label}:"):
                named = type(error)(f"{f.task.label}: {error}")
                named.__cause__ = error
                error = named
            f.status, f.error = "failed", error
            f.pending.clear()
            self.errors[f.task.label] = error
            self.cv.notify_all()

    def _maybe_finish(self, f: _File) -> None:
        with self.cv:
            idle = not f.active and not f.planning and not f.pending
            if f.status == "failed" and idle and not f.refreshing:
                f.status = "closed"
                close = True
            elif f.status == "open" and idle and f.cursor >= f.job.size:
                if not f.task.complete():  # (the bridge resumes it from what is on disk)
                    f.error = ProtocolError(f"{f.task.label}: the reconstruction left bytes unwritten")
                    self.errors[f.task.label] = f.error
                    f.status, close = "closed", True
                else:
                    f.status, close = "finishing", False
            else:
                return
        if close:
            self._close_failed(f)
        else:
            self._finish(f)
        with self.cv:
            self.cv.notify_all()

    def _finish(self, f: _File) -> None:
        self._stop_hasher(f)
        task = f.task
        try:
            task.finalize(task.size)
        except HubgetError as e:
            with self.cv:
                f.status, f.error = "closed", e
                self.errors[task.label] = e
            task.close()
            return
        except OSError as e:
            with self.cv:
                f.status, f.error = "closed", DiskError(f"{task.label}: {e}")
                self.errors[task.label] = f.error
            task.close()
            return
        self.progress.file_done(task.label)
        if self.store is not None and f.runs:
            try:
                self.store.record(task.job.dest, f.runs)
            except OSError:
                pass  # the file is in place; only a later reuse of its chunks is lost
        sources = dict(f.origins)
        if f.reused:
            sources["local chunks"] = f.reused
        result = FileResult(
            job=task.job,
            path=task.job.dest,
            bytes_fetched=f.net_bytes,
            resumed_from=task.resumed_from,
            sources=sources,
        )
        with self.cv:
            f.status = "finished"
            self.results[task.index] = result
            self.saved[task.label] = f.saved

    def _close_failed(self, f: _File) -> None:
        """Keep what is on disk for a later run (or the HTTP bridge), unless it is known bad."""
        self._stop_hasher(f)
        if not isinstance(f.error, IntegrityError) and f.task.fd is not None:
            self._save(f)
        f.task.close()

    def _save(self, f: _File) -> None:
        with self.cv:
            done = IntervalSet(f.task.done.as_list())
            f.task.dirty = 0
            f.task.last_save = time.monotonic()
        try:
            f.task.save(done)
        except (HubgetError, OSError):
            pass  # resume state is a best effort; the download itself goes on

    def _stop_hasher(self, f: _File) -> None:
        f.task.hash_wake.set()
        if f.hash_thread is not None and f.hash_thread is not threading.current_thread():
            f.hash_thread.join()
            f.hash_thread = None

    def _hash_loop(self, f: _File) -> None:
        buf = bytearray(4 * MiB)
        task = f.task
        while True:
            task.hash_wake.wait(0.5)
            task.hash_wake.clear()
            with self.cv:
                if f.status != "open" or task.fd is None or self.cancelled:
                    return
                prefix, fd = task.done.prefix_end(), task.fd
            if prefix > task.hasher.hashed:
                try:
                    task.hasher.catch_up(fd, prefix, buf)
                except OSError:
                    return  # finalize reads the rest itself and reports a real failure

    # -- units ----------------------------------------------------------------------------------

    def _run_unit(self, f: _File, unit: XetUnit) -> None:
        requeue = False
        try:
            with self.cv:
                stale = time.monotonic() >= f.refresh_at[unit.batch]
            if unit.local is not None and self._copy_local(f, unit):
                pass
            elif stale:
                raise _Refresh
            else:
                self._fetch(f, unit)
            with self.cv:
                f.refreshes[unit.batch] = 0
        except _Aborted:
            pass
        except _Refresh:
            self._refresh(f, unit)  # the batch's fresh units replace this one
        except (XetDataError, NetworkError) as e:
            if isinstance(e, ProtocolError) and not isinstance(e, XetDataError) and unit.attempts >= 1:
                raise
            unit.attempts += 1
            if unit.attempts > self.unit_retries:
                raise
            self.progress.message(f"{f.task.label}: xorb range failed ({e}); fetching it again")
            requeue = True
        finally:
            with self.cv:
                f.active -= 1
                current = unit.url_generation == f.generation[unit.batch]
                if requeue and current and f.status == "open":
                    unit.not_before = time.monotonic() + self.client.backoff(unit.attempts - 1)
                    f.pending.appendleft(unit)
                self.cv.notify_all()

    def _fetch(self, f: _File, unit: XetUnit) -> None:
        fetch = unit.fetch
        headers = {"Range": f"bytes={fetch.byte_start}-{fetch.byte_end - 1}"}
        resp = self.client.request(
            "GET", fetch.url, headers=headers, stream=True, read_timeout=self.stall_timeout, retries=1
        )
        with self.cv:
            if self.cancelled:
                resp.close()
                raise _Aborted
            self.responses.add(resp)
        try:
            self._check(f, unit, resp)
            self._read(f, unit, resp)
        finally:
            with self.cv:
                self.responses.discard(resp)
            if resp.body_complete():
                resp.release()
            else:
                resp.close()

    def _check(self, f: _File, unit: XetUnit, resp: Response) -> None:
        host = host_of(resp.url)
        label = f.task.label
        if resp.status in (401, 403, 410):
            raise _Refresh
        if resp.status == 404:
            raise EntryNotFoundError(f"{label}: xorb {unit.fetch.xorb[:12]} not found at {host}")
        if resp.status == 200:
            raise ProtocolError(f"{label}: {host} ignored the Range of a xorb request")
        if resp.status != 206:
            raise NetworkError(f"{label}: HTTP {resp.status} from {host}")
        want = f"bytes {unit.fetch.byte_start}-{unit.fetch.byte_end - 1}/"
        if not (resp.headers.get("Content-Range") or "").strip().startswith(want):
            answered = resp.headers.get("Content-Range")
            raise ProtocolError(f"{label}: {host} answered {answered!r} when {want} was asked")

    def _read(self, f: _File, unit: XetUnit, resp: Response) -> None:
        fetch = unit.fetch
        stream = ChunkStream(fetch.chunk_start, fetch.chunk_end - fetch.chunk_start)
        cursors = [p.file_pos for p in unit.placements]
        sizes: list[list[int]] = [[] for _ in unit.placements]
        origin = origin_url(resp.url)
        label = f.task.label
        received = 0
        while True:
            n = resp.readinto(stream.space())
            if n == 0:
                break
            stream.wrote(n)
            received += n
            with self.cv:
                if self.cancelled or f.status != "open":
                    raise _Aborted
                f.net_bytes += n
                f.origins[origin] += n
            for index, data in stream.chunks():
                self._place(f, unit, index, memoryview(data), cursors, sizes)
        expected = fetch.byte_end - fetch.byte_start
        if received != expected:
            raise NetworkError(f"{label}: {host_of(resp.url)} sent {received} of {expected} bytes")
        stream.finish()
        for p, cursor in zip(unit.placements, cursors, strict=True):
            if cursor - p.file_pos != p.length:
                raise XetDataError(f"{label}: a term decoded to {cursor - p.file_pos} bytes, not {p.length}")
        self._note_runs(f, unit, sizes)

    def _copy_local(self, f: _File, unit: XetUnit) -> bool:
        """Write the unit from chunks already on disk; False when they are not there any more (the
        unit is then fetched). What is copied is verified with the rest of the file."""
        assert unit.local is not None
        cursors = [p.file_pos for p in unit.placements]
        sizes: list[list[int]] = [[] for _ in unit.placements]
        fds: dict[str, int] = {}
        try:
            for i, (path, offset, size) in enumerate(unit.local):
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY)
                data = os.pread(fds[path], size, offset)
                if len(data) != size:
                    raise OSError(f"short read of {path}")
                with self.cv:
                    if self.cancelled or f.status != "open":
                        raise _Aborted
                self._place(f, unit, unit.fetch.chunk_start + i, memoryview(data), cursors, sizes)
        except (OSError, XetDataError) as e:
            self.progress.message(f"{f.task.label}: chunks on disk unusable ({e}); fetching them")
            unit.local = None
            return False
        finally:
            for fd in fds.values():
                os.close(fd)
        self._note_runs(f, unit, sizes)
        with self.cv:
            f.reused += unit.output_bytes
            f.saved += unit.fetch.byte_end - unit.fetch.byte_start
        return True

    def _note_runs(self, f: _File, unit: XetUnit, sizes: list[list[int]]) -> None:
        """Remember which whole terms this unit wrote where, for the chunk store."""
        if self.store is None:
            return
        with self.cv:
            for p, got in zip(unit.placements, sizes, strict=True):
                whole = p.lo <= p.file_pos and p.file_pos + p.length <= p.hi
                if whole and len(got) == p.chunk_end - p.chunk_start:
                    f.runs.setdefault(unit.fetch.xorb, []).append((p.chunk_start, p.file_pos, got))

    def _place(
        self,
        f: _File,
        unit: XetUnit,
        index: int,
        data: memoryview,
        cursors: list[int],
        sizes: list[list[int]],
    ) -> None:
        """Write chunk ``index`` wherever the unit's terms use it; a term whose last chunk this is is
        now on disk: record it (resume state, hasher, progress)."""
        task = f.task
        for i, p in enumerate(unit.placements):
            if not p.chunk_start <= index < p.chunk_end:
                continue
            at = cursors[i]
            lo, hi = max(at, p.lo), min(at + len(data), p.hi)
            if hi > lo:
                task.write(data[lo - at : hi - at], lo)
            cursors[i] = at + len(data)
            sizes[i].append(len(data))
            if index != p.chunk_end - 1:
                continue
            if cursors[i] - p.file_pos != p.length:
                got = cursors[i] - p.file_pos
                raise XetDataError(f"{task.label}: a term decoded to {got} bytes, not {p.length}")
            start, end = p.interval
            with self.cv:
                fresh = not task.done.covers(start, end)
                task.done.add(start, end)
                due = fresh and time.monotonic() - task.last_save >= self.save_interval
            if fresh:
                self.progress.advance(task.label, end - start)
                task.hash_wake.set()
            if due:
                self._save(f)

    def _interrupt(self, threads: list[threading.Thread]) -> None:
        """Ctrl-C: stop every connection, wait briefly for the workers, save resume state."""
        with self.cv:
            self.cancelled = True
            responses = list(self.responses)
            self.cv.notify_all()
        for resp in responses:
            resp.abort()
        deadline = time.monotonic() + 5
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for f in self.files:
            if f.status == "open" and f.task.fd is not None:
                self._stop_hasher(f)
                self._save(f)
                f.task.close()
