"""One file being downloaded: its partial file, the byte ranges done and to do, its hasher.

The Engine owns the scheduling; a FileTask owns the file on disk. Every mutable field is guarded
by the Engine's lock, except the hot path (``pwrite`` into ``fd``), which needs no lock because
workers write disjoint ranges.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hubget.errors import DiskError, IntegrityError
from hubget.hashing import hash_file
from hubget.transfer.http import DEFAULT_SENSITIVE, origin_of
from hubget.transfer.jobs import FileJob
from hubget.transfer.partial import PartialState, discard, load_state, save_state, state_path
from hubget.transfer.ranges import IntervalSet
from hubget.transfer.verify import PrefixHasher

UNKNOWN_END = sys.maxsize  # end of a segment whose file size the hub did not give
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}


@dataclass(eq=False)
class Segment:
    """Bytes ``[start, end)`` for one request; ``end`` shrinks when another worker takes the tail."""

    start: int
    end: int
    attempts: int = 0
    not_before: float = 0.0
    pos: int = -1  # bytes before pos are written
    claimed: int = -1  # bytes before claimed are read and being written (never handed to a thief)
    source: int = -1  # index in FileTask.urls of the URL this segment is being fetched from

    def __post_init__(self) -> None:
        if self.pos < 0:
            self.pos = self.start
        self.claimed = max(self.claimed, self.pos)

    @property
    def remaining(self) -> int:
        return self.end - max(self.pos, self.claimed)


@dataclass
class SourceStats:
    """What one URL of a file has delivered, to choose where its next range goes."""

    active: int = 0  # segments being fetched from it now
    bytes: int = 0
    busy: float = 0.0  # connection-seconds spent on it
    failures: int = 0  # consecutive failures
    cooldown_until: float = 0.0  # not chosen before this time (monotonic) while others can serve
    dead: bool = False  # answered 404/401/403 or broke the Range rules: never chosen again

    def rate(self) -> float | None:
        """Bytes per second per connection, once there is something to measure."""
        return self.bytes / self.busy if self.bytes and self.busy >= 0.05 else None


COOLDOWN_BASE = 0.5
COOLDOWN_MAX = 30.0


def disk_error(e: OSError, what: str, path: Path) -> DiskError:
    reason = os.strerror(e.errno) if e.errno else str(e)
    return DiskError(f"{what} {path}: {reason}")


class FileTask:
    def __init__(self, job: FileJob, index: int) -> None:
        self.job = job
        self.index = index
        self.label = job.label or job.dest.name
        self.size = job.size
        self.partial = job.partial_path
        self.state_file = state_path(self.partial)
        self.fd: int | None = None
        self.done = IntervalSet()
        self.pending: list[Segment] = []
        self.active: set[Segment] = set()
        self.max_conns = 1
        self.ranged = False
        self.hasher = PrefixHasher(job.hash_algo, job.size)
        self.generation = 0
        self.stale = 0  # workers of an older generation still running (must finish before a rewrite)
        self.status = "waiting"  # waiting, preparing, active, finishing, finished, failed
        self.error: BaseException | None = None
        self.bytes_fetched = 0
        self.resumed_from = 0
        self.sources: Counter[str] = Counter()
        self.urls = [job.url, *job.mirrors]
        self.stats = [SourceStats() for _ in self.urls]
        self.stats_lock = threading.Lock()
        self.headers = dict(job.headers)
        self.refreshed = False
        self.bad_answers = 0
        self.dirty = 0
        self.last_save = time.monotonic()
        self.save_lock = threading.Lock()
        self.hash_thread: threading.Thread | None = None
        self.hash_wake = threading.Event()
        self.needs_hash_reset = False
        self.refresh_lock = threading.Lock()
        self.size_seen: int | None = None  # end of body, for a file whose size was not announced

    # -- choosing where to fetch from -----------------------------------------------------

    def url_for(self, seg: Segment) -> tuple[str, dict[str, str]]:
        """A URL for this segment (recorded in ``seg.source``), with the headers it may carry.

        With several URLs serving the same bytes, the segment goes to the one with the most
        throughput to spare (see ``pick_source``). Credentials belong to the primary's origin; a
        mirror on another origin gets none.
        """
        seg.source = self.pick_source()
        url = self.urls[seg.source]
        if url == self.urls[0] or origin_of(url) == origin_of(self.urls[0]):
            return url, self.headers
        return url, {k: v for k, v in self.headers.items() if k.lower() not in DEFAULT_SENSITIVE}

    def pick_source(self) -> int:
        """The URL for a new request: among those not cooling down after a failure, the one whose
        measured per-connection rate divided by its connections (this one included) is highest, so
        ranges spread over the sources in proportion to what each delivers. A source not measured
        yet counts as fast as the best one, so every source gets tried early."""
        if len(self.urls) == 1:
            with self.stats_lock:
                self.stats[0].active += 1
            return 0
        now = time.monotonic()
        with self.stats_lock:
            alive = [i for i, s in enumerate(self.stats) if not s.dead] or list(range(len(self.stats)))
            ready = [i for i in alive if self.stats[i].cooldown_until <= now]
            if not ready:
                ready = [min(alive, key=lambda i: self.stats[i].cooldown_until)]
            known = [r for s in self.stats if (r := s.rate()) is not None]
            default = max(known) if known else 1.0

            def spare(i: int) -> tuple[float, int]:
                s = self.stats[i]
                return (s.rate() or default) / (s.active + 1), -i

            best = max(ready, key=spare)
            self.stats[best].active += 1
            return best

    def source_done(self, index: int, nbytes: int, seconds: float, failed: bool, dead: bool) -> bool:
        """Record how a request to ``urls[index]`` went. A failed source cools down (doubling with
        each failure in a row) so the next ranges go to the others; returns True when this
        failure newly took the source out of use (for a message)."""
        with self.stats_lock:
            s = self.stats[index]
            s.active = max(0, s.active - 1)
            s.bytes += nbytes
            s.busy += seconds
            if not failed:
                if nbytes:
                    s.failures = 0
                return False
            newly = not s.dead and s.cooldown_until <= time.monotonic()
            s.failures += 1
            s.cooldown_until = time.monotonic() + min(COOLDOWN_MAX, COOLDOWN_BASE * 2 ** (s.failures - 1))
            s.dead = s.dead or dead
            return newly

    def other_source_alive(self, index: int) -> bool:
        with self.stats_lock:
            return any(not s.dead for i, s in enumerate(self.stats) if i != index)

    def source_ready(self) -> bool:
        """True when some live URL is not cooling down (a retry there need not wait)."""
        now = time.monotonic()
        with self.stats_lock:
            return any(not s.dead and s.cooldown_until <= now for s in self.stats)

    @staticmethod
    def origin_label(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    # -- opening --------------------------------------------------------------------------

    def can_resume(self) -> bool:
        return self.job.expected_hash is not None and self.size is not None

    def peek_resumable(self) -> int:
        """Bytes a matching partial already holds (for the up-front disk check), without opening it."""
        if not self.can_resume():
            return 0
        state = load_state(self.state_file)
        if state is None or not state.matches(self.job.expected_hash, self.job.hash_algo, self.size):
            return 0
        try:
            st = os.lstat(self.partial)
        except OSError:
            return 0
        return (self.size or 0) if st.st_size == self.size else 0

    def open(self) -> None:
        """Open (resume) or create the preallocated partial file."""
        job = self.job
        try:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            job.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(e, "cannot create the folder of", job.dest) from e
        state = load_state(self.state_file) if self.can_resume() else None
        if state is not None and state.matches(job.expected_hash, job.hash_algo, self.size):
            with contextlib.suppress(OSError):
                fd = os.open(self.partial, os.O_RDWR | os.O_NOFOLLOW)
                if os.fstat(fd).st_size == self.size:
                    self.fd = fd
                    self.done = state.done.clipped(self.size or 0)
                else:
                    os.close(fd)
        if self.fd is None:
            self.done = IntervalSet()
            try:
                discard(self.partial)
                self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise disk_error(e, "cannot create", self.partial) from e
            if self.size:
                self._preallocate(self.size)
        self.resumed_from = self.done.total()
        self.dirty = 0

    def _preallocate(self, size: int) -> None:
        assert self.fd is not None
        try:
            os.posix_fallocate(self.fd, 0, size)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                os.ftruncate(self.fd, size)  # a filesystem without fallocate: a sparse file will do
            else:
                raise disk_error(e, f"cannot reserve {size} bytes for", self.partial) from e

    def plan(self, split_threshold: int, connections: int, min_chunk: int, max_chunk: int) -> None:
        """Cut what is missing into segments; large files get many connections."""
        if self.size is None:
            self.pending = [Segment(0, UNKNOWN_END)]
            return
        self.ranged = self.size >= split_threshold and connections > 1
        self.max_conns = connections if self.ranged else 1
        gaps = self.done.missing(self.size)
        if not self.ranged:
            self.pending = [Segment(s, e) for s, e in gaps]
            return
        parts, smallest = connections * 4, min_chunk
        if len(self.urls) > 1:
            # Several sources: more, smaller ranges, so that once the sources' rates are measured
            # most ranges go to the faster ones (the first few are handed out before any measurement).
            parts, smallest = parts * len(self.urls) * 2, max(1, min_chunk // 4)
        chunk = max(smallest, min(max_chunk, -(-self.size // parts)))
        self.pending = [Segment(pos, min(e, pos + chunk)) for s, e in gaps for pos in range(s, e, chunk)]

    def complete(self) -> bool:
        if self.size is None:
            return self.size_seen is not None
        return self.done.covers(0, self.size) or self.size == 0

    # -- writing --------------------------------------------------------------------------

    def write(self, data: memoryview, offset: int) -> None:
        assert self.fd is not None
        try:
            while data:
                n = os.pwrite(self.fd, data, offset)
                data = data[n:]
                offset += n
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                raise disk_error(e, "cannot write", self.partial) from e
            raise

    # -- resume state ---------------------------------------------------------------------

    def save(self, done: IntervalSet) -> None:
        """Persist ``done`` (a snapshot taken under the engine lock) after the data is on disk."""
        if not self.can_resume():
            return
        with self.save_lock:
            if self.fd is None:
                return
            try:
                # Data first, then the record of it: a crash never leaves a state naming unwritten bytes.
                os.fdatasync(self.fd)
                save_state(
                    self.state_file,
                    PartialState(self.job.expected_hash or "", self.job.hash_algo, self.size or 0, done),
                )
            except OSError as e:
                if e.errno in DISK_ERRNOS:
                    raise disk_error(e, "cannot save resume state for", self.partial) from e
                raise

    def close(self) -> None:
        with self.save_lock:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = None

    # -- finishing ------------------------------------------------------------------------

    def finalize(self, size_seen: int | None) -> None:
        """Verify size and hash, then move the partial onto ``dest``; on a mismatch discard it."""
        assert self.fd is not None
        job = self.job
        size = self.size if self.size is not None else size_seen or 0
        if self.size is None:
            os.ftruncate(self.fd, size)
        actual_size = os.fstat(self.fd).st_size
        if actual_size != size:
            self.close()
            discard(self.partial)
            raise IntegrityError(f"{self.label}: size {actual_size} on disk, expected {size}")
        if self.hasher.algo == "git-sha1" and self.hasher.hexdigest() is None:
            digest = hash_file(self.partial, job.hash_algo)  # size was unknown up front
        else:
            self.hasher.catch_up(self.fd, size)
            digest = self.hasher.hexdigest()
        if job.expected_hash is not None and digest != job.expected_hash.lower():
            self.close()
            discard(self.partial)
            raise IntegrityError(
                f"{self.label}: {job.hash_algo} mismatch (expected {job.expected_hash}, got {digest});"
                " the downloaded data was discarded"
            )
        try:
            os.fsync(self.fd)
            self.close()
            os.replace(self.partial, job.dest)
        except OSError as e:
            raise disk_error(e, "cannot move the verified file to", job.dest) from e
        with contextlib.suppress(OSError):
            self.state_file.unlink()
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(job.dest.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
