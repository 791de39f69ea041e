"""Streaming remote files into objects: ranged GETs in, multipart uploads out, no local copy.

``Uploader.run(jobs)`` moves every job's bytes from its URL into its key. A file up to one part goes
in a single PutObject; a larger one becomes a multipart upload whose parts are fetched and uploaded
by a pool of ``connections`` workers, several parts of a file in flight at once. The sha256 (and the
git blob sha1 for a file the hub knows by that) is computed in part order while the parts stream by;
an upload is completed only when the hashes are the hub's, and aborted when they are not, so a key
never holds unverified bytes. Memory is bounded: a part is read into one of ``connections +
SPARE_BUFFERS`` reused buffers, taken before it is fetched and given back once it is uploaded and
hashed, and parts are handed out in order, so the part the hash waits for is always in flight.
An interrupted upload resumes from its record (``objectstore.resume``).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from hubget.errors import HubgetError, IntegrityError
from hubget.objectstore.localread import PartReader
from hubget.objectstore.resume import UploadRecord, drop_record, load_record, save_record
from hubget.objectstore.s3 import NoSuchUpload, S3Bucket
from hubget.transfer.hashstate import StreamHash
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import ProgressSink
from hubget.transfer.rangeget import RangeReader

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
SPARE_BUFFERS = 4
SAVE_EVERY = 1.0  # seconds between writes of a resume record


def part_size_for(size: int, base: int) -> int:
    """``base``, or more (whole MiB) when ``size`` would need more than MAX_PARTS parts."""
    need = math.ceil(size / MAX_PARTS)
    return max(base, math.ceil(need / MiB) * MiB)


@dataclass
class ObjectJob:
    """Put the bytes at ``url`` (``size`` of them) into ``key``; ``sha256`` / ``git_sha1``: what the
    hub says they hash to (verified when given; both are computed, sha1 when ``git_sha1`` is given)."""

    key: str
    size: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    git_sha1: str | None = None
    label: str = ""
    rate_bucket: str | None = None
    # Where the bytes come from when they are not at ``url``: a local file, bytes in memory
    # (``objectstore.localread``); called once, when the file's upload starts.
    open: Callable[[], PartReader] | None = None


@dataclass
class ObjectResult:
    job: ObjectJob
    sha256: str = ""
    git_sha1: str | None = None
    bytes_fetched: int = 0
    parts: int = 0  # parts of the object (1 for a single PutObject)
    parts_uploaded: int = 0  # in this run
    parts_reused: int = 0  # already in the store from an earlier run
    resumed: bool = False
    error: HubgetError | None = None


class BufferPool:
    """At most ``count`` buffers, made when first needed and reused after: a fixed footprint, and no
    churn of multi-MiB allocations (which glibc may keep in the heap rather than give back)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._free: list[bytearray] = []
        self._made = 0
        self._cv = threading.Condition()

    def take(self, size: int, timeout: float) -> bytearray | None:
        """A buffer of at least ``size`` bytes, or None if none came free within ``timeout``."""
        with self._cv:
            if not self._free and self._made >= self.count:
                self._cv.wait(timeout)
            for i, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(i)
            if self._free:  # only smaller ones are free: replace one
                self._free.pop()
                self._made -= 1
            if self._made < self.count:
                self._made += 1
                return bytearray(size)
            return None

    def give(self, buf: bytearray) -> None:
        with self._cv:
            self._free.append(buf)
            self._cv.notify()


class _FileRun:
    """The state of one multipart file in flight: etags, parts waiting for the in-order hash."""

    def __init__(
        self, job: ObjectJob, record: UploadRecord, hasher: StreamHash, listed: dict[int, tuple[int, str]]
    ):
        self.job = job
        self.record = record
        self.hasher = hasher
        self.listed = listed
        self.count = math.ceil(job.size / record.part_size)
        self.etags: list[str | None] = [None] * (self.count + 1)
        self.pending: dict[int, tuple[bytearray, int]] = {}  # part -> (buffer, length)
        self.next_hash = record.hashed + 1
        self.lock = threading.Lock()
        self.hash_lock = threading.Lock()
        self.saved_at = 0.0
        self.save_lock = threading.Lock()

        self.failed = threading.Event()

    def span(self, number: int) -> tuple[int, int]:
        start = (number - 1) * self.record.part_size
        return start, min(self.job.size, start + self.record.part_size)


def _span_len(number: int, part_size: int, size: int) -> int:
    start = (number - 1) * part_size
    return max(0, min(size, start + part_size) - start)


class Uploader:
    """Runs ObjectJobs into one bucket; resume records go under ``state_prefix``."""

    def __init__(
        self,
        bucket: S3Bucket,
        client: HttpClient,
        *,
        state_prefix: str,
        connections: int = 8,
        max_files: int = 8,
        part_size: int = DEFAULT_PART_SIZE,
        progress: ProgressSink | None = None,
        on_done: Callable[[ObjectResult], None] | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size {part_size} is below S3's minimum of {MIN_PART_SIZE}")
        self.bucket = bucket
        self.client = client
        self.state_prefix = state_prefix
        self.connections = connections
        self.max_files = max_files
        self.part_size = part_size
        self.progress = progress or ProgressSink()
        self.on_done = on_done
        self.buffers = BufferPool(connections + SPARE_BUFFERS)
        self.cancelled = threading.Event()
        self._readers: set[PartReader] = set()
        self._lock = threading.Lock()

    def run(self, jobs: list[ObjectJob]) -> list[ObjectResult]:
        """Every job, largest first; failures are in each result's ``error`` (an interrupt raises)."""
        order = sorted(jobs, key=lambda j: -j.size)
        self.progress.begin(len(order), sum(j.size for j in order))
        results: list[ObjectResult] = []
        with (
            ThreadPoolExecutor(self.connections, thread_name_prefix="hubget-s3-part") as self.parts,
            ThreadPoolExecutor(self.max_files, thread_name_prefix="hubget-s3-file") as files,
        ):
            futures = [files.submit(self._one, job) for job in order]
            try:
                for fut in futures:
                    results.append(fut.result())
            except BaseException:
                self.cancel()
                raise
        return results

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            for reader in self._readers:
                reader.cancelled.set()

    # -- one file -----------------------------------------------------------------------------
    def _one(self, job: ObjectJob) -> ObjectResult:
        result = ObjectResult(job)
        reader: PartReader
        if job.open is not None:
            try:
                reader = job.open()
            except HubgetError as exc:
                result.error = exc
                if self.on_done is not None:
                    self.on_done(result)
                return result
        else:
            reader = RangeReader(
                self.client,
                job.url,
                job.headers,
                size=job.size,
                label=job.label or job.key,
                rate_bucket=job.rate_bucket,
            )
        with self._lock:
            self._readers.add(reader)
            if self.cancelled.is_set():
                reader.cancelled.set()
        self.progress.file_started(job.label or job.key, job.size, 0)
        try:
            if job.size <= self.part_size:
                self._single(job, reader, result)
            else:
                self._multipart(job, reader, result)
        except HubgetError as exc:
            result.error = exc
        except InterruptedError as exc:
            result.error = HubgetError(str(exc))
        finally:
            with self._lock:
                self._readers.discard(reader)
        if result.error is None:
            self.progress.file_done(job.label or job.key)
        if self.on_done is not None:
            self.on_done(result)
        return result

    def _single(self, job: ObjectJob, reader: PartReader, result: ObjectResult) -> None:
        pooled = self._take_buffer(job.size, None)
        if pooled is None:
            raise InterruptedError(f"{job.label or job.key}: stopped")
        try:
            buf = memoryview(pooled)[: job.size]
            if job.size:
                self.parts.submit(reader.read_into, 0, buf).result()
            self.progress.advance(job.label or job.key, job.size)
            result.bytes_fetched = job.size
            hasher = StreamHash(size=job.size, git_sha1=job.git_sha1 is not None)
            hasher.update(buf)
            self._verify(job, hasher, result)
            self.bucket.put_bytes(job.key, buf, metadata=self._metadata(result))
            result.parts = result.parts_uploaded = 1
        finally:
            del buf
            self.buffers.give(pooled)

    def _multipart(self, job: ObjectJob, reader: PartReader, result: ObjectResult) -> None:
        run = self._open(job, result)
        result.parts = run.count
        futures: list[Future[None]] = []
        for number in range(1, run.count + 1):
            if number <= run.record.hashed:
                run.etags[number] = run.listed[number][1]
                result.parts_reused += 1
                start, end = run.span(number)
                self.progress.advance(job.label or job.key, end - start)
                continue
            start, end = run.span(number)
            buf = self._take_buffer(end - start, run)
            if buf is None:
                break
            futures.append(self.parts.submit(self._part, run, reader, number, buf, result))
        wait(futures)
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors or run.failed.is_set() or any(e is None for e in run.etags[1:]):
            reader.cancelled.set()
            with run.lock:  # parts that will never be hashed give their buffers back
                stranded, run.pending = list(run.pending.values()), {}
            for buf, _ in stranded:
                self.buffers.give(buf)
            self._save(run, force=True)
            err = next((e for e in errors if isinstance(e, HubgetError)), None)
            raise err or HubgetError(f"{job.label or job.key}: interrupted")
        try:
            self._verify(job, run.hasher, result)
        except IntegrityError:
            # Never completed: the parts go, and so does the record, so a rerun starts clean.
            self.bucket.abort_upload(job.key, run.record.upload_id)
            drop_record(self.bucket, self.state_prefix, job.key)
            raise
        self.bucket.complete_upload(job.key, run.record.upload_id, [e or "" for e in run.etags[1:]])
        drop_record(self.bucket, self.state_prefix, job.key)

    def _take_buffer(self, size: int, run: _FileRun | None) -> bytearray | None:
        """A buffer for ``size`` bytes; None when the run (or the file) stopped meanwhile."""

        def stopped() -> bool:
            return self.cancelled.is_set() or (run is not None and run.failed.is_set())

        while True:
            if stopped():
                return None
            buf = self.buffers.take(size, 0.2)
            if buf is not None:
                if stopped():
                    self.buffers.give(buf)
                    return None
                return buf

    def _open(self, job: ObjectJob, result: ObjectResult) -> _FileRun:
        """The file's upload: the one its record names, if the store still has it, else a new one."""
        git = job.git_sha1 is not None
        record = load_record(self.bucket, self.state_prefix, job.key)
        if record is not None and record.describes(job.key, job.size, job.sha256, job.git_sha1):
            try:
                listed = self.bucket.list_parts(job.key, record.upload_id)
            except NoSuchUpload:
                record = None
        else:
            record = None
        if record is not None:
            result.resumed = True
            hashed_ok = record.hash_state is not None and all(
                listed.get(n, (-1, ""))[0] == _span_len(n, record.part_size, job.size)
                for n in range(1, record.hashed + 1)
            )
            hasher: StreamHash | None = None
            if hashed_ok:
                try:
                    hasher = StreamHash(size=job.size, git_sha1=git, state=record.hash_state)
                except ValueError:  # a state of another length: from another libcrypto
                    hasher = None
            if hasher is None or not hasher.resumable:
                record.hashed, record.hash_state = 0, None  # hash from the first byte; parts still reused
                hasher = StreamHash(size=job.size, git_sha1=git)
            return _FileRun(job, record, hasher, listed)
        record = UploadRecord(
            key=job.key,
            upload_id=self.bucket.create_upload(job.key, self._metadata_expected(job)),
            size=job.size,
            part_size=part_size_for(job.size, self.part_size),
            sha256=job.sha256,
            git_sha1=job.git_sha1,
        )
        save_record(self.bucket, self.state_prefix, record)
        return _FileRun(job, record, StreamHash(size=job.size, git_sha1=git), {})

    def _part(
        self, run: _FileRun, reader: PartReader, number: int, pooled: bytearray, result: ObjectResult
    ) -> None:
        """Fetch part ``number``, upload it unless the store has these very bytes, hand it to the hash."""
        handed = False
        try:
            if run.failed.is_set() or self.cancelled.is_set():
                raise InterruptedError(f"{run.job.label}: stopped")
            start, end = run.span(number)
            buf = memoryview(pooled)[: end - start]
            reader.read_into(start, buf)
            with run.lock:
                result.bytes_fetched += len(buf)
            self.progress.advance(run.job.label or run.job.key, len(buf))
            have = run.listed.get(number)
            if (
                have is not None
                and have[0] == len(buf)
                and have[1].strip('"') == hashlib.md5(buf).hexdigest()
            ):
                etag = have[1]
                with run.lock:
                    result.parts_reused += 1
            else:
                etag = self.bucket.upload_part(run.job.key, run.record.upload_id, number, buf)
                with run.lock:
                    result.parts_uploaded += 1
            run.etags[number] = etag
            del buf
            with run.lock:
                run.pending[number] = (pooled, end - start)
            handed = True
            self._hash_ready(run)
        except BaseException:
            run.failed.set()
            reader.cancelled.set()  # the file has failed: its other parts stop too
            raise
        finally:
            if not handed:
                self.buffers.give(pooled)

    def _hash_ready(self, run: _FileRun) -> None:
        """Hash the parts that are next in order (one thread at a time; others leave theirs pending)."""
        while run.hash_lock.acquire(blocking=False):
            try:
                while True:
                    with run.lock:
                        item = run.pending.pop(run.next_hash, None)
                    if item is None:
                        break
                    run.hasher.update(memoryview(item[0])[: item[1]])
                    self.buffers.give(item[0])
                    with run.lock:
                        run.record.hashed = run.next_hash
                        run.record.hash_state = run.hasher.state()
                        run.next_hash += 1
            finally:
                run.hash_lock.release()
            with run.lock:
                if run.next_hash not in run.pending:
                    break  # else a part arrived while the lock was being let go: hash it too
        self._save(run)

    def _save(self, run: _FileRun, *, force: bool = False) -> None:
        if run.record.hash_state is None and not force:
            return
        if not run.save_lock.acquire(blocking=force):
            return
        try:
            now = time.monotonic()
            if not force and now - run.saved_at < SAVE_EVERY:
                return
            run.saved_at = now
            with run.lock:
                snapshot = UploadRecord(**{**vars(run.record)})
            try:
                save_record(self.bucket, self.state_prefix, snapshot)
            except HubgetError as exc:
                self.progress.message(f"{run.job.label}: resume record not saved ({exc})")
        finally:
            run.save_lock.release()

    # -- verification ---------------------------------------------------------------------------
    def _verify(self, job: ObjectJob, hasher: StreamHash, result: ObjectResult) -> None:
        result.sha256 = hasher.sha256()
        result.git_sha1 = hasher.git_sha1()
        label = job.label or job.key
        if job.sha256 is not None and result.sha256 != job.sha256:
            raise IntegrityError(f"{label}: sha256 {result.sha256} is not the hub's {job.sha256}; not stored")
        if job.git_sha1 is not None and result.git_sha1 != job.git_sha1:
            raise IntegrityError(
                f"{label}: git sha1 {result.git_sha1} is not the hub's {job.git_sha1}; not stored"
            )

    @staticmethod
    def _metadata_expected(job: ObjectJob) -> dict[str, str]:
        meta = {}
        if job.sha256:
            meta["sha256"] = job.sha256
        if job.git_sha1:
            meta["git-sha1"] = job.git_sha1
        return meta

    @staticmethod
    def _metadata(result: ObjectResult) -> dict[str, str]:
        meta = {"sha256": result.sha256}
        if result.git_sha1:
            meta["git-sha1"] = result.git_sha1
        return meta
