"""The download engine: many files at once, large files as parallel byte ranges, resumable, verified.

A fixed pool of worker threads (one connection each; sockets, ``pwrite`` and hashlib release the
GIL) takes work from the run's ``Scheduler``: open the next file, or fetch the next segment of an
open file (``RangeFetcher``). Each segment is read into the worker's own buffer and written with
``os.pwrite`` at its offset into one preallocated partial file (ranged files over plain HTTP: spliced
from the socket, no copy through the buffer). A hasher thread per large file hashes the contiguous
prefix as it grows, from the page cache through a mapping, so verification is done moments after
the last byte arrives; finisher threads verify, fsync and rename finished files off the workers' path; a saver
thread persists resume state.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

from hubget import config
from hubget.errors import DiskError, HubgetError, IntegrityError
from hubget.transfer.connection import RangeFetcher
from hubget.transfer.filetask import FileTask
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import FileJob, FileResult, ProgressSink
from hubget.transfer.owners import sweep_folder
from hubget.transfer.ranges import IntervalSet
from hubget.transfer.scheduler import SMALL_WEIGHT, SPLIT_MIN, Limits, Scheduler

MiB = 1024 * 1024
MAX_CONNECTIONS = 64  # default ceiling on the connections of one run (all files together)
BUFFER_BUDGET = 48 * MiB  # read buffers of all workers together, at most
# Files from this size up start as one stream that idle connections may split when it is slow.
STREAM_SPLIT = 2 * SPLIT_MIN
# Threads that verify, fsync and rename finished files, off the download workers' path. Many, for
# many small files: the journal commits fsyncs that wait at the same time together (measured on
# ext4 here: 4.3 ms per file one at a time, 1.6 ms with 4 threads, 0.4 ms with 16).
FINISHERS = 16


class Engine:
    """Downloads a list of ``FileJob``s; one Engine may run several lists, one after another."""

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

    def limits(self) -> Limits:
        """The knobs the scheduler reads, as one value."""
        return Limits(
            max_workers=self.max_workers,
            connections=self.connections,
            max_connections=self.max_connections,
            file_connections=self.file_connections,
            split_threshold=self.split_threshold,
            steal_min=self.steal_min,
            slow_connection=self.slow_connection,
            range_retries=self.range_retries,
        )

    def run(self, jobs: list[FileJob]) -> list[FileResult]:
        """Download every job; returns their results in order, or raises the first file's error
        once every other file has finished or failed (what finished stays in place)."""
        tasks = [FileTask(job, i) for i, job in enumerate(jobs)]
        self._check_disk(tasks)
        # Files without resume state write under private names: what killed runs left, one listing.
        for folder in {t.partial.parent for t in tasks if not t.can_resume()}:
            sweep_folder(folder)
        self._sched = Scheduler(tasks, self.limits(), self.progress, self.client.backoff)
        self._fetcher = RangeFetcher(
            self._sched,
            self.client,
            self.progress,
            stall_timeout=self.stall_timeout,
            min_speed=self.min_speed,
        )
        self._finish_q: queue.SimpleQueue[FileTask | None] = queue.SimpleQueue()
        self._synced_dirs: set[Path] = set()  # folders whose renames still need an fsync of the folder
        sizes = [t.size for t in tasks]
        self.progress.begin(len(tasks), None if None in sizes else sum(s or 0 for s in sizes))
        # No more threads than there can be connections in use: all of them for a large file, a few
        # for a middling one (split when connections turn out slow), one for a small one.
        per_file = [self._threads_for(t.size or 0) for t in tasks]
        singles = sum(1 for n in per_file if n == 1)
        wanted = sum(n for n in per_file if n > 1) + min(singles, SMALL_WEIGHT * self.max_workers)
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
        say = self.progress.message  # rate-limit pauses are said on the progress display
        self.client.limiter.add_listener(say)
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
            self.client.limiter.remove_listener(say)
            saver_stop.set()
            self._sync_dirs()
            for task in tasks:  # a task left open by an abandoned run must not look like a live writer
                task.release_owner()
            self.progress.end()
        if self._sched.errors:
            raise self._sched.errors[0]
        return [self._sched.results[i] for i in sorted(self._sched.results)]

    def _threads_for(self, size: int) -> int:
        if size >= self.split_threshold:
            return self.file_connections
        return max(1, min(self.connections, size // (2 * MiB)))

    def _worker(self) -> None:
        buf = bytearray(0)  # grown to what a segment needs, up to the cap (small files need little)
        while True:
            item = self._sched.next_work()
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
                action = self._fetcher.run_segment(task, seg, buf)
                if action == "finish":
                    self._finish_q.put(task)
                elif action == "cleanup":
                    self._cleanup(task)

    def _open_task(self, task: FileTask) -> None:
        try:
            task.open()
            split, chunk = self._sched.split_for(self.min_chunk)
            task.plan(split, self.connections, chunk, self.max_chunk, stream_split=STREAM_SPLIT)
        except HubgetError as e:
            with self._sched.cv:
                self._sched.fail(task, e)
            self._cleanup(task)
            return
        self.progress.file_started(task.label, task.size, task.resumed_from)
        with self._sched.cv:
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
                self._sched.cv.notify(len(task.pending) - 1)
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
                if isinstance(e, HubgetError):
                    error = e  # e.g. a cache link refused by on_placed keeps its kind (exit code)
                elif isinstance(e, OSError):
                    error = DiskError(f"{task.label}: {e}")
                else:
                    error = HubgetError(f"{task.label}: {e}")
                with self._sched.cv:
                    self._sched.fail(task, error)
                self._cleanup(task)

    def _sync_dirs(self) -> None:
        """Make the renames of this run durable: one fsync per folder, not one per file."""
        with self._sched.cv:
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
        task.stop_hasher()
        try:
            task.finalize(task.size_seen, sync_dir=False)
        except HubgetError as e:
            with self._sched.cv:
                self._sched.fail(task, e)
            self._cleanup(task)
            return
        except OSError as e:
            with self._sched.cv:
                self._sched.fail(task, DiskError(f"{task.label}: {e}"))
            self._cleanup(task)
            return
        if task.job.on_placed is not None:
            task.job.on_placed()
        self.progress.file_done(task.label)
        result = FileResult(
            job=task.job,
            path=task.job.dest,
            bytes_fetched=task.bytes_fetched,
            resumed_from=task.resumed_from,
            sources=dict(task.sources),
        )
        with self._sched.cv:
            self._synced_dirs.add(task.job.dest.parent)
            self._sched.finished(task, result)

    def _cleanup(self, task: FileTask) -> None:
        """After a failure: keep the partial for resume unless its data is known to be bad."""
        task.stop_hasher()
        if isinstance(task.error, IntegrityError):
            task.close()
        else:
            with self._sched.cv:
                done = IntervalSet(task.done.as_list())
            try:
                task.save(done)
            except (HubgetError, OSError):
                pass  # the file already failed; the resume state is a best effort now
            task.close()
        with self._sched.cv:
            self._sched.closed(task)

    def _hash_loop(self, task: FileTask) -> None:
        buf = bytearray(4 * MiB)
        while True:
            task.hash_wake.wait(0.5)
            task.hash_wake.clear()
            with self._sched.cv:
                if not task.ranged or task.status != "active" or task.fd is None or self._sched.cancelled:
                    return
                prefix = task.done.prefix_end()
                fd = task.fd
            if prefix > task.hasher.hashed:
                try:
                    task.hasher.catch_up(fd, prefix, buf)
                except OSError:
                    return  # finalize reads the rest itself and reports a real failure

    def _saver(self, stop: threading.Event) -> None:
        """Persist resume state every ``save_interval`` seconds or ``save_bytes`` bytes per file.

        A kill loses at most that much of finished ranges. Each save fdatasyncs the partial before
        its record (data first); that costs the disk writeback the kernel would do anyway, on this
        thread, not the workers' (measured here: about 1.5 s per GB whether every 64 or 256 MiB)."""
        while not stop.wait(0.1):
            due: list[tuple[FileTask, IntervalSet]] = []
            now = time.monotonic()
            with self._sched.cv:
                for task in self._sched.open:
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
                    with self._sched.cv:
                        self._sched.fail(task, e)

    def _interrupt(self, workers: list[threading.Thread]) -> None:
        """Ctrl-C: stop every connection now, wait briefly for workers, save resume state."""
        with self._sched.cv:
            self._sched.cancelled = True
            responses = list(self._sched.responses)
            self._sched.cv.notify_all()
        for resp in responses:
            resp.abort()
        deadline = time.monotonic() + 5
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        with self._sched.cv:
            snapshot = [(t, IntervalSet(t.done.as_list())) for t in self._sched.open if t.status == "active"]
        for task, done in snapshot:
            task.stop_hasher(timeout=1.0)
            try:
                task.save(done)
            except (HubgetError, OSError):
                pass
            task.close()

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
