"""One file being downloaded: its partial file, the byte ranges done and to do, its hasher.

The Engine owns the scheduling; a FileTask owns the file on disk. Every mutable field is guarded
by the Engine's lock, except the hot path (writes into ``fd``): workers write disjoint ranges.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hubget.errors import DiskError, IntegrityError
from hubget.transfer.http import DEFAULT_SENSITIVE, origin_of, origin_url
from hubget.transfer.jobs import FileJob
from hubget.transfer.locations import Locations
from hubget.transfer.owners import (
    mark_gone,
    mark_live,
    new_owner,
    owner_alive,
    private_name,
    private_token,
    sweep_orphans,
)
from hubget.transfer.partial import PartialState, discard, load_state, save_state, state_path
from hubget.transfer.ranges import IntervalSet
from hubget.transfer.reserve import reserve
from hubget.transfer.verify import PrefixHasher

UNKNOWN_END = sys.maxsize  # end of a segment whose file size the hub did not give
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
NO_SPLICE_ERRNOS = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
NO_RESUME_BELOW = 1024 * 1024  # bytes; smaller files are fetched whole again after an interruption

_log = logging.getLogger(__name__)


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
    taken: float = 0.0  # when a worker took it (monotonic), to estimate how long its rest will take

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
        self.partial = job.partial_path  # becomes a private name when another writer holds this one
        self.state_file = state_path(self.partial)
        self.private = False  # writing under a name of our own: no resume state, removed on close
        self.owner = new_owner()
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
        self.locations = Locations(len(self.urls))  # where each URL's redirects lead (one resolve)
        self.stats = [SourceStats() for _ in self.urls]
        self.stats_lock = threading.Lock()
        self.headers = dict(job.headers)
        self.refreshed = False
        self.bad_answers = 0
        self.dirty = 0
        self.last_save = time.monotonic()
        # Rate measurement for widening (Scheduler.widen): since when, from which byte count, and
        # the rate measured when the file last got more connections (0: never).
        self.mark_time = time.monotonic()
        self.mark_bytes = 0
        self.mark_rate = 0.0
        self.save_lock = threading.Lock()
        self.released = False  # the shared partial and its state are gone: no resume state is written again
        self.hash_thread: threading.Thread | None = None
        self.hash_wake = threading.Event()
        self.needs_hash_reset = False
        self.refresh_lock = threading.Lock()
        self.size_seen: int | None = None  # end of body, for a file whose size was not announced
        self.splice_ok = True  # the partial's filesystem takes os.splice (see write_from_pipe)

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
        return origin_url(url)

    # -- opening --------------------------------------------------------------------------

    def can_resume(self) -> bool:
        """Files below ``NO_RESUME_BELOW`` keep no resume state: fetching one again costs less than
        the state's writes and reads, and it is written under a private name (see ``open``)."""
        return self.job.expected_hash is not None and self.size is not None and self.size >= NO_RESUME_BELOW

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
        """Open (resume) or create the preallocated partial file.

        The shared name (``partial``) is where the next run finds resume state. It is never taken
        over nor deleted while its resume state names a writer that is still alive (a second
        process on the same cache when file locks do not work): then this task writes under a
        private name instead, and fetches the file anew. ``finalize`` never trusts the shared
        name either way.
        """
        job = self.job
        try:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            job.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(e, "cannot create the folder of", job.dest) from e
        mark_live(self.owner)
        if not self.can_resume():
            self._create_private()  # nothing to resume later: a name of our own costs nothing
            return
        state = load_state(self.state_file)
        if state is not None or os.path.lexists(self.partial):
            sweep_orphans(self.partial)
        if state is not None and state.owner and state.owner != self.owner:
            with contextlib.suppress(OSError):
                if owner_alive(state.owner, os.stat(self.state_file).st_mtime):
                    self._create_private()
                    return
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
            except FileExistsError:
                self._create_private()  # another writer created it just now
                return
            except OSError as e:
                raise disk_error(e, "cannot create", self.partial) from e
            if self.size:
                self._preallocate(self.size)
        self._claim()
        self.resumed_from = self.done.total()
        self.dirty = 0

    def _claim(self) -> None:
        """Record this writer as the owner of the shared partial (no bytes named yet: no fsync)."""
        with contextlib.suppress(OSError):
            save_state(
                self.state_file,
                PartialState(
                    self.job.expected_hash or "", self.job.hash_algo, self.size or 0, self.done, self.owner
                ),
                durable=False,
            )

    def _create_private(self) -> None:
        self.partial = private_name(self.job.partial_path, private_token())
        self.state_file = state_path(self.partial)
        self.private = True
        self.done = IntervalSet()
        try:
            self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise disk_error(e, "cannot create", self.partial) from e
        if self.size:
            self._preallocate(self.size)
        self.resumed_from = 0
        self.dirty = 0

    def _preallocate(self, size: int) -> None:
        assert self.fd is not None
        try:
            reserve(self.fd, size)
        except OSError as e:
            raise disk_error(e, f"cannot reserve {size} bytes for", self.partial) from e

    def plan(
        self, split_threshold: int, connections: int, min_chunk: int, max_chunk: int, stream_split: int = 0
    ) -> None:
        """Cut what is missing into segments; large files get many connections.

        A file from ``stream_split`` up to ``split_threshold`` starts as one stream per missing
        stretch, which connections left idle may split (work stealing) when it turns out slow: on
        fast connections it is one request, on connections capped by a CDN it ends with several.
        """
        if self.size is None:
            self.pending = [Segment(0, UNKNOWN_END)]
            return
        self.ranged = connections > 1 and self.size >= split_threshold
        stream_first = connections > 1 and not self.ranged and 0 < stream_split <= self.size
        self.max_conns = connections if self.ranged or stream_first else 1
        gaps = self.done.missing(self.size)
        if stream_first:
            self.ranged = True
            self.pending = [Segment(s, e) for s, e in gaps]
            return
        if not self.ranged:
            self.pending = [Segment(s, e) for s, e in gaps]
            return
        parts, smallest = connections * 4, min_chunk
        if len(self.urls) > 1:
            # Several sources: more, smaller ranges, so that once the sources' rates are measured
            # most ranges go to the faster ones (the first few are handed out before any measurement).
            parts, smallest = parts * len(self.urls) * 2, max(1, min_chunk // 4)
        chunk = max(smallest, min(max_chunk, -(-self.size // parts)))
        # The last ``connections`` x 2 ranges are small: the end of the file then needs few cuts
        # (work stealing), each of which drops a connection with data already in its buffers.
        tail_chunk = max(smallest, chunk // 4)
        tail_start = max(0, self.size - connections * 2 * tail_chunk)
        self.pending = []
        for s, e in gaps:
            pos = s
            while pos < e:
                step = chunk if pos + chunk <= tail_start else tail_chunk
                self.pending.append(Segment(pos, min(e, pos + step)))
                pos += step

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

    def write_from_pipe(self, pipe_r: int, count: int, offset: int) -> None:
        """Move ``count`` bytes waiting in a pipe to ``offset`` (``os.splice``: no user-space copy)."""
        assert self.fd is not None
        try:
            while count:
                try:
                    n = os.splice(pipe_r, self.fd, count, offset_dst=offset)
                except OSError as e:
                    if e.errno not in NO_SPLICE_ERRNOS:
                        raise
                    self.splice_ok = False  # a filesystem that takes no splice: copy these, then pwrite
                    self._write_piped(pipe_r, count, offset)
                    return
                if n <= 0:
                    raise OSError(errno.EIO, f"short splice at {offset}")
                count -= n
                offset += n
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                raise disk_error(e, "cannot write", self.partial) from e
            raise

    def _write_piped(self, pipe_r: int, count: int, offset: int) -> None:
        data = memoryview(bytearray(count))
        while count:
            got = os.readv(pipe_r, [data[:count]])
            if got <= 0:
                raise OSError(errno.EIO, f"short read from a pipe at {offset}")
            self.write(data[:got], offset)
            count -= got
            offset += got

    # -- resume state ---------------------------------------------------------------------

    def save(self, done: IntervalSet) -> None:
        """Persist ``done`` (a snapshot taken under the engine lock) after the data is on disk."""
        if not self.can_resume() or self.private:
            return
        with self.save_lock:
            if self.fd is None or self.released:
                return  # (a save due before the file was finished would leave a stale state behind)
            try:
                # Data first, then the record of it: a crash never leaves a state naming unwritten bytes.
                os.fdatasync(self.fd)
                save_state(
                    self.state_file,
                    PartialState(
                        self.job.expected_hash or "", self.job.hash_algo, self.size or 0, done, self.owner
                    ),
                )
            except OSError as e:
                if e.errno in DISK_ERRNOS:
                    raise disk_error(e, "cannot save resume state for", self.partial) from e
                # (another writer moved the shared name away: only the resume record is lost)
                _log.debug("resume state for %s not saved: %s", self.partial, e)

    def close(self) -> None:
        """Close the partial; a private one is removed (no later run can find it to resume)."""
        with self.save_lock:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = None
                if self.private:
                    with contextlib.suppress(OSError):
                        os.unlink(self.partial)
        self.release_owner()

    def release_owner(self) -> None:
        """This task writes no more (closed, or its engine run is over): its partial may be taken over."""
        mark_gone(self.owner)

    def stop_hasher(self, timeout: float | None = None) -> None:
        """Wake the hasher thread so it sees the file is no longer active, and wait for it."""
        thread = self.hash_thread
        if thread is not None and thread is not threading.current_thread():
            self.hash_wake.set()
            thread.join(timeout)
            self.hash_thread = None

    # -- finishing ------------------------------------------------------------------------

    def finalize(self, size_seen: int | None, *, sync_dir: bool = True) -> None:
        """Verify size and hash of the open descriptor, then put exactly those bytes at ``dest``.

        Everything is read from the descriptor, never from the path: when locks do not work,
        another process may have replaced the file at the shared temp path meanwhile. The data is
        fsynced before the rename that publishes it; ``sync_dir=False`` leaves the fsync of the
        folder (which makes the rename itself durable) to the caller, who batches it per folder.
        """
        assert self.fd is not None
        job = self.job
        size = self.size if self.size is not None else size_seen or 0
        if self.size is None:
            os.ftruncate(self.fd, size)
        actual_size = os.fstat(self.fd).st_size
        if actual_size != size:
            self._drop()
            raise IntegrityError(f"{self.label}: size {actual_size} on disk, expected {size}")
        if self.hasher.algo == "git-sha1" and self.hasher.hexdigest() is None:
            hasher = PrefixHasher(job.hash_algo, size)  # the size was unknown up front
            hasher.catch_up(self.fd, size)
            digest = hasher.hexdigest()
        else:
            self.hasher.catch_up(self.fd, size)
            digest = self.hasher.hexdigest()
        if job.expected_hash is not None and digest != job.expected_hash.lower():
            self._drop()
            raise IntegrityError(
                f"{self.label}: {job.hash_algo} mismatch (expected {job.expected_hash}, got {digest});"
                " the downloaded data was discarded"
            )
        try:
            os.fsync(self.fd)
            placed = self._place(size)
        except OSError as e:
            if not (e.errno == errno.ENOENT and self._dest_matches(size)):
                raise disk_error(e, "cannot move the verified file to", job.dest) from e
            placed = True  # our temp name vanished, yet another writer already put these bytes there
        self._release_shared()
        self.close()
        if placed and sync_dir:
            with contextlib.suppress(OSError):  # make the rename itself durable
                dfd = os.open(job.dest.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    def _same_file(self, path: Path) -> bool:
        """Whether ``path`` (not followed) is the very file our descriptor holds."""
        assert self.fd is not None
        try:
            st = os.lstat(path)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _place(self, size: int) -> bool:
        """Rename the verified bytes onto ``dest``; returns True once they are there."""
        assert self.fd is not None
        dest = self.job.dest
        if self.private:
            os.replace(self.partial, dest)  # a name nobody else writes or deletes
            return True
        # The shared name may now be another writer's file. Give our inode a private name first,
        # by descriptor (no window between checking and renaming), and rename that.
        spare = private_name(self.job.partial_path, private_token())
        try:
            os.link(f"/proc/self/fd/{self.fd}", spare, follow_symlinks=True)
        except OSError:
            if self._same_file(self.partial):
                # No /proc or no hard links here: the shared name still holds our file.
                os.replace(self.partial, dest)
                return True
            self._copy_to(spare, size)  # our file was unlinked by another writer: copy it out
        try:
            os.replace(spare, dest)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(spare)
            raise
        return True

    def _copy_to(self, path: Path, size: int) -> None:
        assert self.fd is not None
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            offset = 0
            while offset < size:
                n = os.copy_file_range(self.fd, out, size - offset, offset, offset)
                if n <= 0:
                    raise OSError(errno.EIO, f"short copy at {offset} of {size} bytes")
                offset += n
            os.fsync(out)
        except BaseException:
            os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(out)

    def _dest_matches(self, size: int) -> bool:
        """Whether ``dest`` already holds a regular file of the expected size and hash."""
        dest = self.job.dest
        try:
            st = os.lstat(dest)
        except OSError:
            return False
        if not os.path.isfile(dest) or os.path.islink(dest) or st.st_size != size:
            return False
        if self.job.expected_hash is None:
            return False
        try:
            fd = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            hasher = PrefixHasher(self.job.hash_algo, size)
            hasher.catch_up(fd, size)
        except OSError:
            return False
        finally:
            os.close(fd)
        return hasher.hexdigest() == self.job.expected_hash.lower()

    def _release_shared(self) -> None:
        """Remove the shared partial and its state, but only while they are still ours."""
        if self.private:
            return
        with self.save_lock:
            self.released = True  # the saver thread may hold a save due from before
        state = load_state(self.state_file)
        if state is not None and state.owner not in ("", self.owner):
            return  # another writer took the name over; its resume state stays
        if self._same_file(self.partial):
            with contextlib.suppress(OSError):
                os.unlink(self.partial)
        with contextlib.suppress(OSError):
            self.state_file.unlink()

    def _drop(self) -> None:
        """Discard data that failed verification (ours only, never another writer's file)."""
        self._release_shared()
        self.close()
