"""What runs next: the shared state of one engine run and every scheduling decision taken on it.

Which file to open (``slots``), which segment a free connection takes (``take``, stealing the tail of
the largest one in flight when a file has nothing left to hand out), when a ranged file may use more
connections (``widen``), what happens after a segment ends (``segment_exit``: done, retried later,
the file failed or restarted as one stream). Everything here runs with ``cv`` held; no I/O.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hubget.errors import HubgetError, ProtocolError
from hubget.transfer.filetask import UNKNOWN_END, FileTask, Segment
from hubget.transfer.http import Response
from hubget.transfer.jobs import FileResult, ProgressSink

MiB = 1024 * 1024
WIDEN_AFTER = 1.0  # seconds a file is measured before it may get more than ``connections`` ranges
STEAL_WORTH = 1.0  # seconds of a victim's remaining transfer that are worth a dropped connection
SPLIT_SECONDS = 1.0  # a file one connection would need longer than this for is fetched as ranges
SPLIT_MIN = 2 * MiB  # ...but never a file smaller than this (latency, not bandwidth, dominates)
CHUNK_MIN = 1 * MiB  # the smallest range a split file is cut into
RATE_SAMPLE_MIN = 512 * 1024  # requests smaller than this say more about latency than bandwidth
SMALL_WEIGHT = 4  # an open large (or ranged) file takes the slots of this many small ones


@dataclass(frozen=True)
class Limits:
    """The knobs scheduling decisions read (see ``Engine`` for their meaning and defaults)."""

    max_workers: int
    connections: int
    max_connections: int
    file_connections: int
    split_threshold: int
    steal_min: int
    slow_connection: int
    range_retries: int


class Scheduler:
    """The state of one run (files waiting and open, errors, results, live responses) and the rules
    that hand out work. ``cv`` guards every field here and every mutable field of the tasks."""

    def __init__(
        self,
        tasks: list[FileTask],
        limits: Limits,
        progress: ProgressSink,
        backoff: Callable[[int], float],
    ) -> None:
        self.limits = limits
        self.progress = progress
        self.backoff = backoff
        self.cv = threading.Condition()
        # Largest first: on links capped per connection the big files decide when the run ends,
        # and the small ones fill the connections they leave free.
        self.waiting: deque[FileTask] = deque(sorted(tasks, key=lambda t: -(t.size or 0)))
        self.open: list[FileTask] = []
        self.errors: list[HubgetError] = []
        self.results: dict[int, FileResult] = {}
        self.responses: set[Response] = set()  # aborted on Ctrl-C, from the main thread
        self.cancelled = False
        self.conn_rate = 0.0  # bytes/s one connection delivers, measured over the run (moving average)

    def note_transfer(self, nbytes: int, seconds: float) -> None:
        """A request delivered ``nbytes`` in ``seconds`` (latency included): what a connection is
        worth, which decides how small a file may be and still be split (``split_for``)."""
        if nbytes < RATE_SAMPLE_MIN or seconds <= 0:
            return
        rate = nbytes / seconds
        with self.cv:
            self.conn_rate = rate if not self.conn_rate else 0.7 * self.conn_rate + 0.3 * rate

    def split_for(self, min_chunk: int) -> tuple[int, int]:
        """(size from which a file is fetched as ranges, smallest range) for a file opened now.

        Unmeasured or fast connections: files from ``split_threshold`` up, ranges from
        ``min_chunk``. Connections that deliver less (a CDN capping each one): every file one
        connection would need more than ``SPLIT_SECONDS`` for, in ranges of about that long, so a
        24 MB file at 8 MB/s takes one second on three connections, not three on one.
        """
        with self.cv:
            rate = self.conn_rate
        if not rate:
            return self.limits.split_threshold, min_chunk
        worth = int(rate * SPLIT_SECONDS)
        split = max(SPLIT_MIN, min(self.limits.split_threshold, 2 * worth))
        return split, max(CHUNK_MIN, min(min_chunk, worth))

    def next_work(self) -> tuple[str, FileTask, Segment | None] | None:
        with self.cv:
            while True:
                if self.cancelled:
                    return None
                now = time.monotonic()
                wake = now + 0.5
                for task in self.open:
                    if task.status == "failed" and not task.active and task.stale == 0:
                        task.status = "failed-closing"
                        return "cleanup", task, None
                    if task.status != "active":
                        continue
                    if len(task.active) >= task.max_conns and not self.widen(task, now):
                        continue
                    seg, when = self.take(task, now)
                    if seg is not None:
                        return "work", task, seg
                    if when is not None:
                        wake = min(wake, when)
                if self.waiting and self.slots(self.waiting[0]):
                    task = self.waiting.popleft()
                    task.status = "preparing"
                    self.open.append(task)
                    return "open", task, None
                if not self.open and not self.waiting:
                    return None
                self.cv.wait(max(0.0, wake - now))

    def slots(self, task: FileTask) -> bool:
        """Whether ``task`` may be opened now (engine lock held).

        ``max_workers`` large files download at once, or four times as many small ones (a small
        file holds one connection, and its latency, not bandwidth, is what overlapping hides: 50 ms
        away, 32 files at once fetch 2,000 in about 3 s). Files being finished (verify, fsync,
        rename) hold no slot, up to a bounded backlog.
        """
        weight = 0
        finishing = 0
        for t in self.open:
            if t.status == "finishing":
                finishing += 1
            else:
                weight += SMALL_WEIGHT if t.ranged or (t.size or 0) >= self.limits.split_threshold else 1
        need = SMALL_WEIGHT if (task.size or 0) >= self.limits.split_threshold else 1
        limit = SMALL_WEIGHT * self.limits.max_workers
        return weight + need <= limit and finishing < limit

    def widen(self, task: FileTask, now: float) -> bool:
        """Give a ranged file more connections when its own are slow and the run has some to spare
        (engine lock held). Only while no file waits to be opened, after ``WIDEN_AFTER`` seconds of
        measurement, and again only if the previous widening raised the file's rate (a per-connection
        cap keeps each connection's rate flat; a busy CPU or a full link does not)."""
        if (
            not task.ranged
            or not task.pending
            or self.waiting
            or task.max_conns >= self.limits.file_connections
        ):
            return False
        elapsed = now - task.mark_time
        if elapsed < WIDEN_AFTER:
            return False
        in_use = sum(len(t.active) for t in self.open)
        if in_use >= self.limits.max_connections:
            return False
        rate = (task.bytes_fetched - task.mark_bytes) / elapsed
        if task.mark_rate and rate < 1.5 * task.mark_rate:
            task.mark_time = now + 3600 * 24  # the last widening did not pay: stay at this width
            return False
        if rate / task.max_conns >= self.limits.slow_connection:
            return False
        task.max_conns = min(self.limits.file_connections, task.max_conns + self.limits.connections)
        task.mark_time, task.mark_bytes, task.mark_rate = now, task.bytes_fetched, rate
        return True

    def take(self, task: FileTask, now: float) -> tuple[Segment | None, float | None]:
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
        if victim.remaining < 2 * self.limits.steal_min:
            return None, None
        # A cut drops the victim's connection and what is already in its socket buffers (a few MB
        # on a fast link): cut a middling remainder only when the victim would take long for it.
        rate = (victim.pos - victim.start) / max(1e-3, now - victim.taken) if victim.taken else 0.0
        if victim.remaining < 4 * self.limits.steal_min and rate * STEAL_WORTH > victim.remaining:
            return None, None
        mid = victim.end - victim.remaining // 2
        stolen = Segment(mid, victim.end, taken=now)
        victim.end = mid  # its worker stops at mid and drops that connection's unread tail
        task.active.add(stolen)
        return stolen, None

    def segment_exit(
        self, task: FileTask, seg: Segment, gen: int, error: HubgetError | None, fatal: bool, again: bool
    ) -> str | None:
        """Bookkeeping after a segment ends (engine lock held); returns what the caller must do next."""
        if gen != task.generation:
            task.stale -= 1  # this worker belonged to a restarted file: its segment no longer exists
        else:
            task.active.discard(seg)
            if error is not None and fatal:
                self.fail(task, error)
            elif (error is not None or again) and task.status == "active" and not self.cancelled:
                if seg.pos < seg.end:
                    progressed = seg.pos - seg.start >= MiB
                    attempts = 0 if progressed or again else seg.attempts + 1
                    several = len(task.urls) > 1
                    if attempts > self.limits.range_retries + len(task.urls) - 1:
                        assert error is not None
                        self.fail(task, error)
                    else:
                        # Another source ready to take the range: no reason to wait.
                        elsewhere = several and task.source_ready()
                        # Each attempt already had the client's quick retry: wait longer than it did.
                        delay = 0.0 if again or progressed or elsewhere else self.backoff(attempts + 1)
                        ready = time.monotonic() + delay
                        task.pending.append(Segment(seg.pos, seg.end, attempts=attempts, not_before=ready))
                        task.pending.sort(key=lambda s: s.start)
                single = len(task.urls) == 1  # with several sources the bad one is dropped instead
                if isinstance(error, ProtocolError) and task.ranged and task.bad_answers >= 2 and single:
                    self.restart(task, None)  # this server's ranges cannot be trusted: one plain stream
        if gen != task.generation or error is not None or again:
            self.cv.notify_all()  # stale writers, requeued ranges, failures: wake everyone concerned
        else:
            self.cv.notify()  # one connection slot is free
        if task.status == "active" and not task.active and not task.pending and task.complete():
            task.status = "finishing"
            return "finish"
        if task.status == "failed" and not task.active and task.stale == 0:
            task.status = "failed-closing"
            return "cleanup"
        return None

    def restart(self, task: FileTask, current: Segment | None) -> Segment:
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

    def fail(self, task: FileTask, error: HubgetError) -> None:
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
        self.errors.append(error)
        task.hash_wake.set()
        self.cv.notify_all()

    def finished(self, task: FileTask, result: FileResult) -> None:
        """``task`` is verified and in place (``cv`` held): its slot goes to the next file."""
        task.status = "finished"
        self.results[task.index] = result
        self.open.remove(task)
        if self.waiting:
            self.cv.notify()  # a slot is free: one worker may open the next file
        else:
            self.cv.notify_all()  # winding down: idle workers may exit now

    def closed(self, task: FileTask) -> None:
        """``task`` failed and its partial is closed (``cv`` held)."""
        if task in self.open:
            self.open.remove(task)
        self.cv.notify_all()
