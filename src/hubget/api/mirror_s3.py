"""`hubget serve --upstream URL --store s3://bucket/root`: the pull-through mirror with a bucket as its
store, shared by any number of mirror processes on any number of machines.

    ROOT/.hubget-mirror/blobs/{sha256 or git sha1}   each blob, plain bytes, verified before it exists
    ROOT/.hubget-mirror/meta/{models--org--name}/... what upstream said (``mirror_meta``'s files)
    ROOT/.hubget-mirror/fills/{sha256 or git sha1}   the lock of the process filling that blob
    ROOT/.hubget-mirror/.hubget/uploads/...          resume records of unfinished multipart uploads

A blob is streamed from upstream into a multipart upload by the staging machinery
(``objectstore.upload``: several parts in flight, hashed in order, CompleteMultipartUpload only when
the hash is upstream's), then served as a 302 to a presigned GET of its object, as `hubget serve
--store` serves staged repos. A client asking for a blob that is not complete yet is answered once
it is (its HEAD or GET waits for the fill).

Who fills a blob: the process that creates its lock object with a conditional PUT (``If-None-Match:
*``, which AWS S3, MinIO and SeaweedFS honour; the loser gets 412 and waits for the object). The lock
names its owner and an expiry, renewed (``If-Match`` its ETag) while the fill runs; a lock past its
expiry (its owner died) is taken over with ``If-Match`` on the ETag that was read, so exactly one
process takes it, and the new owner resumes the dead one's multipart upload from its record. After
winning, the owner reads the lock back and goes on only if it names itself (a store that ignored the
condition is caught when the two writes are apart). Branch -> commit answers are kept per process
for the TTL, as in a local mirror; commit listings are read from the bucket before upstream is asked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import NoReturn

from hubget.api.mirror import DEFAULT_REVISION_TTL, Mirror
from hubget.api.mirror_access import PUBLIC
from hubget.api.mirror_meta import MirrorMeta
from hubget.errors import HubgetError
from hubget.layouts.hf_cache import repo_folder_name
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.objectstore.s3 import S3Bucket, S3Url
from hubget.objectstore.upload import ObjectJob, Uploader
from hubget.transfer.http import HttpClient

log = logging.getLogger("hubget.serve")
MIRROR_PREFIX = ".hubget-mirror"
LEASE = 30.0  # seconds a fill lock is good for without renewal
RENEW_EVERY = LEASE / 3
POLL = 0.25  # seconds between looks at another process's fill
PRESENT_KEPT = 65536  # blob keys known complete, remembered per process


class BucketMeta(MirrorMeta):
    """``MirrorMeta``'s files as objects under ``prefix`` (one bucket shared by all replicas)."""

    def __init__(self, bucket: S3Bucket, prefix: S3Url) -> None:
        super().__init__(Path("/nonexistent"))  # (no folder: every read and write is an object)
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, repo_type: str, repo_id: str, name: str) -> str:
        return self.prefix.key(repo_folder_name(repo_id, repo_type), name)

    def _read(self, repo_type: str, repo_id: str, name: str) -> str | None:
        got = self.bucket.get_bytes(self._key(repo_type, repo_id, name))
        return got[0].decode("utf-8", "replace") if got else None

    def _write(self, repo_type: str, repo_id: str, name: str, text: str) -> None:
        self.bucket.put_bytes(self._key(repo_type, repo_id, name), text.encode())


class _Fill:
    """This process's wait for one blob (its own fill, or another process's): clients share it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: HubgetError | None = None


class BucketMirror(Mirror):
    """A ``Mirror`` whose blobs and metadata are objects in a bucket; files are presigned redirects."""

    def __init__(
        self,
        store: S3Url,
        endpoint: str,
        *,
        bucket: S3Bucket | None = None,
        s3_endpoint: str | None = None,
        presign_endpoint: str | None = None,
        presign_ttl: int = 900,
        token: str | None = None,
        revision_ttl: float = DEFAULT_REVISION_TTL,
        connections: int = 8,
        fill_client: HttpClient | None = None,
        owner: str | None = None,
    ) -> None:
        super().__init__(
            Path("/nonexistent"),
            endpoint,
            token=token,
            revision_ttl=revision_ttl,
            connections=connections,
            fill_client=fill_client,
        )
        self.store = store.child(MIRROR_PREFIX)
        self.bucket = bucket or S3Bucket(
            store.bucket,
            endpoint=s3_endpoint,
            presign_endpoint=presign_endpoint,
            max_connections=connections * 4 + 8,
        )
        self.meta = BucketMeta(self.bucket, self.store.child("meta"))
        self.presign_ttl = presign_ttl
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._waits: dict[str, _Fill] = {}
        self._present: dict[str, None] = {}  # keys seen complete (an insertion-ordered set)

    # -- where a blob is ------------------------------------------------------------------------
    def blob_key(self, file: RemoteFile) -> str:
        return self.store.key("blobs", file.etag)

    def _lock_key(self, file: RemoteFile) -> str:
        return self.store.key("fills", file.etag)

    def _is_present(self, key: str, file: RemoteFile) -> bool:
        with self._lock:
            if key in self._present:
                return True
        head = self.bucket.head(key)
        if head is None or head["size"] != (file.size or 0):
            return False
        with self._lock:
            self._present[key] = None
            while len(self._present) > PRESENT_KEPT:
                self._present.pop(next(iter(self._present)))
        return True

    def blob(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        return None  # never on this machine: see blob_url

    def whole_only(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        return False  # a client only ever gets a verified object

    def _write_ref(self, ref: RepoRef, commit: str) -> None:
        pass  # no local cache to keep refs in

    def blob_url(self, snapshot: Snapshot, file: RemoteFile, token: str | None = None) -> str:
        """A presigned GET of the blob's object, once it is complete (filled from upstream first, by
        this process or another one, when it is not)."""
        key = self.blob_key(file)
        if self._is_present(key, file):
            self._count("store_hits")
        else:
            self._count("store_misses")
            self._wait_for(snapshot, file, key, token)
        return self.bucket.presign_get(key, self.presign_ttl)

    def _wait_for(self, snapshot: Snapshot, file: RemoteFile, key: str, token: str | None) -> None:
        with self._lock:
            wait = self._waits.get(key)
            first = wait is None
            if wait is None:
                wait = self._waits[key] = _Fill()
        if first:
            threading.Thread(
                target=self._drive,
                args=(snapshot, file, key, token, wait),
                name=f"hubget-s3-fill-{file.path[-40:]}",
                daemon=True,
            ).start()
        wait.done.wait()
        if wait.error is not None:
            raise wait.error

    # -- filling --------------------------------------------------------------------------------
    def _drive(self, snapshot: Snapshot, file: RemoteFile, key: str, token: str | None, wait: _Fill) -> None:
        try:
            self._until_present(snapshot, file, key, token)
        except HubgetError as exc:
            wait.error = exc
        except Exception as exc:  # a bug must fail the wait, not leave clients waiting forever
            log.exception("mirror: filling %s failed", file.path)
            wait.error = HubgetError(f"{file.path}: {exc!r}")
        finally:
            with self._lock:
                self._waits.pop(key, None)
            wait.done.set()

    def _until_present(self, snapshot: Snapshot, file: RemoteFile, key: str, token: str | None) -> None:
        lock_key = self._lock_key(file)
        while not self._is_present(key, file):
            etag = self._take_lock(lock_key)
            if etag is None:
                time.sleep(POLL)  # another process fills it (or its lock is not expired yet)
                continue
            try:
                if not self._is_present(key, file):  # (completed just before the lock was taken)
                    self._fill(snapshot, file, key, token, lock_key, etag)
            finally:
                self.bucket.delete(lock_key)
            return

    def _lock_body(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + LEASE}).encode()

    def _take_lock(self, lock_key: str) -> str | None:
        """The lock's ETag once this process holds it; None while another one does."""
        etag = self.bucket.put_if(lock_key, self._lock_body(), absent=True)
        if etag is None:
            got = self.bucket.get_bytes(lock_key)
            if got is None:
                return None  # released meanwhile: ask again at once (after the poll)
            try:
                expires = float(json.loads(got[0])["expires"])
            except (ValueError, KeyError, TypeError):
                expires = 0.0  # unreadable: as good as expired
            if expires > time.time():
                return None
            etag = self.bucket.put_if(lock_key, self._lock_body(), etag=got[1])
            if etag is None:
                return None  # another process took it over first
            log.warning("mirror: took over the expired fill lock %s", lock_key)
        got = self.bucket.get_bytes(lock_key)  # read back: it must name this process
        try:
            mine = got is not None and json.loads(got[0]).get("owner") == self.owner
        except ValueError:
            mine = False
        return (got[1] if got else None) if mine else None

    def _fill(
        self, snapshot: Snapshot, file: RemoteFile, key: str, token: str | None, lock_key: str, etag: str
    ) -> None:
        headers = dict(file.headers)
        if token and self.meta.access(snapshot.ref.repo_type, snapshot.ref.repo_id) != PUBLIC:
            headers = {"Authorization": f"Bearer {token}"}  # the authorized client's own token
        job = ObjectJob(
            key=key,
            size=file.size or 0,
            url=file.url,
            headers=headers,
            sha256=file.sha256,
            git_sha1=file.git_sha1,
            label=f"{snapshot.ref.repo_id}/{file.path}",
            rate_bucket=file.rate_bucket,
        )
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lock_key, etag, stop), daemon=True)
        renewer.start()
        started = time.monotonic()
        log.info("mirror: fetching %s (%d bytes) from %s into the bucket", job.label, job.size, self.endpoint)
        try:
            uploader = Uploader(
                self.bucket, self.fill_client, state_prefix=self.store.key(), connections=self.connections
            )
            result = uploader.run([job])[0]
        finally:
            stop.set()
            renewer.join()
        self._count("upstream_locate")
        self._count("upstream_bytes", result.bytes_fetched)
        if result.error is not None:
            self._count("fills_failed")
            log.warning("mirror: fetching %s failed: %s", job.label, result.error)
            raise result.error
        self._count("fills_done")
        with self._lock:
            self._present[key] = None
        log.info("mirror: %s verified and stored in %.1f s", job.label, time.monotonic() - started)

    def _renew(self, lock_key: str, etag: str, stop: threading.Event) -> None:
        while not stop.wait(RENEW_EVERY):
            try:
                renewed = self.bucket.put_if(lock_key, self._lock_body(), etag=etag)
            except HubgetError as exc:
                log.warning("mirror: cannot renew the fill lock %s: %s", lock_key, exc)
                continue
            if renewed is None:
                log.warning("mirror: lost the fill lock %s to another process", lock_key)
                return
            etag = renewed

    def fill(self, snapshot: Snapshot, file: RemoteFile, token: str | None = None) -> NoReturn:
        raise HubgetError("a mirror on a bucket serves blobs by redirect (blob_url), not by streaming")

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        with self._lock:
            active = len(self._waits)
        return [m for m in super().metrics() if m[0] != "hubget_mirror_fills_active"] + [
            ("hubget_mirror_fills_active", "gauge", "Blob fills waited for.", {}, active)
        ]

    def close(self) -> None:
        self.fill_client.clear()
