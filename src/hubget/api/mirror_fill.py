"""One blob fetched from upstream into the mirror's store, by the client pipeline (``fetch_snapshot``:
source -> engine -> HF-cache layout), in a thread of its own; every client of the blob follows it.

An LFS file is located first (one HEAD of its resolve URL: the signed CDN URL it redirects to) and the
engine fetches its ranges from there, so the blob costs one resolver call; the same URL serves the
ranges a client wants far ahead of the fill (``open_direct``). It is located anew only when the CDN
refuses it (expired). Progress is read from the engine's resume state beside the partial file (the
byte ranges written and synced), so it is the same whether this process or a killed one wrote them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from hubget.api.pipeline import LOCK_WAIT_SECONDS, fetch_snapshot
from hubget.errors import HubgetError, IntegrityError, ProtocolError
from hubget.layouts.hf_cache import HfCacheLayout
from hubget.layouts.locks import try_lock, wait_lock
from hubget.models import FillProgress, FillState, RemoteFile, Snapshot
from hubget.sources.huggingface import HfSource
from hubget.sources.modelscope import ModelScopeSource
from hubget.transfer.http import HttpClient, Response, origin_of
from hubget.transfer.partial import load_state, state_path

log = logging.getLogger("hubget.serve")
MiB = 1024 * 1024
PARTIAL_SUFFIX = ".hubget-partial"
FILL_LOCK_SUFFIX = ".fill.lock"
PROGRESS_EVERY = 0.05  # seconds between reads of the resume state, whatever the number of clients
# The engine's settings for fills: resume state saved often (clients stream what it names), ranges
# small enough that the bytes on disk grow from the start of the file at a steady pace.
FILL_ENGINE: dict[str, Any] = {
    "save_interval": 0.2,
    "split_threshold": 8 * MiB,
    "min_chunk": 4 * MiB,
    "max_chunk": 16 * MiB,
}


def partial_of(blob: Path) -> Path:
    return blob.with_name(blob.name + PARTIAL_SUFFIX)


def hash_algo(file: RemoteFile) -> str:
    return "sha256" if file.sha256 else "git-sha1"


def resumable(blob: Path, file: RemoteFile) -> bool:
    """Whether a fill would resume the partial file there (what the engine checks before reusing it)."""
    partial = partial_of(blob)
    state = load_state(state_path(partial))
    if state is None or not state.matches(file.etag, hash_algo(file), file.size):
        return False
    try:
        return partial.stat().st_size == file.size
    except OSError:
        return False


class UpstreamFill:
    """Implements ``hubget.server.upstream.BlobFill``."""

    def __init__(
        self,
        snapshot: Snapshot,
        file: RemoteFile,
        layout: HfCacheLayout,
        *,
        source: HfSource | ModelScopeSource,
        client: HttpClient,
        connections: int,
        locate: bool = True,
        lineage: Callable[[Path], int],
        disown: Callable[[Path], None],
        finished: Callable[[UpstreamFill], None] = lambda fill: None,
    ) -> None:
        self.snapshot = snapshot
        self.file = file
        self.layout = layout
        self.source = source
        self.client = client
        self.connections = connections
        self._locates = locate  # False: ``file.url`` itself serves the bytes (ModelScope)
        self._lineage = lineage
        self._disown = disown
        self._finished = finished
        self.locates = 0  # resolver calls made (one, plus one per expired signed URL)
        self.bytes_fetched = 0  # by the engine (resumed bytes not counted)
        self.direct_reads = 0  # ranges fetched for a client straight from upstream
        self.size = file.size or 0
        self.blob = layout.blob(file)
        self.partial = partial_of(self.blob)
        self.state: FillState = "waiting"
        self.error: HubgetError | None = None
        self.ended = 0.0  # monotonic, once done or failed
        self.last_request = time.time()  # the latest client request for the blob: its last use
        self._end_lineage = 0
        self._lock = threading.Lock()
        self._location: tuple[str, dict[str, str]] | None = None  # where the bytes are, and its headers
        self._done: tuple[tuple[int, int], ...] = ()
        self._done_read = 0.0

    @property
    def label(self) -> str:
        return f"{self.snapshot.ref.repo_id}/{self.file.path}"

    def start(self) -> UpstreamFill:
        threading.Thread(target=self._run, name=f"hubget-fill-{self.file.path[-40:]}", daemon=True).start()
        return self

    # -- the fill -------------------------------------------------------------------------------
    def _run(self) -> None:
        started = time.monotonic()
        turn = None
        try:
            turn = self._take_turn()
            if self.layout.is_complete(self.snapshot, self.file):
                self.layout.commit(self.snapshot, self.file)  # (the snapshot link, as a fill makes it)
                self._finish("done", None)  # it arrived since the caller looked: no call upstream
                return
            job_file = self.file
            if not self._locates:
                self._location = (self.file.url, dict(self.file.headers))
            elif self.file.sha256:  # an LFS file: its bytes are behind the hub's redirect
                url, headers = self._locate()
                if url != self.file.url:
                    job_file = dataclasses.replace(self.file, url=url, headers=headers, rate_bucket=None)
            self.state = "running"
            log.info("mirror: fetching %s (%d bytes) from %s", self.label, self.size, self.source.endpoint)
            snap = Snapshot(
                self.snapshot.ref, self.snapshot.commit, [job_file], self.source.name, self.source.endpoint
            )
            report = fetch_snapshot(
                self.source,
                snap.ref,
                self.layout,
                snapshot=snap,
                filenames=[job_file.path],
                max_workers=1,
                connections=self.connections,
                engine_options={"client": self.client, **FILL_ENGINE},
                refresher=self._refresh,
            )
            self.bytes_fetched = sum(f.bytes_fetched for f in report.files)
            log.info("mirror: %s verified in %.1f s", self.label, time.monotonic() - started)
            self._finish("done", None)
        except HubgetError as exc:
            if isinstance(exc, IntegrityError):
                self._disown(self.blob)  # before the failure shows: no client may take new bytes for old
            log.warning("mirror: fetching %s failed: %s", self.label, exc)
            self._finish("failed", exc)
        except Exception as exc:  # a bug must fail the fill, not leave its clients waiting forever
            log.exception("mirror: fetching %s failed", self.label)
            self._finish("failed", HubgetError(f"{self.label}: {exc!r}"))
        finally:
            if turn is not None:
                turn.release()

    def _take_turn(self) -> FileLock:
        """The blob's fill lock (``.locks/{repo}/X.fill.lock``, beside the lock the download pipeline
        takes for the blob while it writes it): one fill per blob across the worker
        processes of a mirror (``--workers``). While another process holds it, this fill follows that
        one (its clients stream what the other writes, as the resume state beside the partial file
        tells) instead of asking upstream."""
        lock_path = self.layout.lock_path(self.file).with_suffix(FILL_LOCK_SUFFIX)
        turn = try_lock(lock_path)
        if turn is not None:
            return turn
        self.state = "running"
        log.info("mirror: %s is being fetched by another worker; following it", self.label)
        turn = wait_lock(lock_path, LOCK_WAIT_SECONDS)
        if not self.layout.is_complete(self.snapshot, self.file):
            # That fill failed, and its bytes may have been wrong: clients that got some get no more.
            self._disown(self.blob)
        return turn

    def _finish(self, state: FillState, error: HubgetError | None) -> None:
        with self._lock:
            self._end_lineage = self._lineage(self.blob)  # what its clients keep seeing
            self.error = error
            self.ended = time.monotonic()
            self.state = state
        try:
            self._finished(self)  # eviction, counters
        except Exception:  # noqa: BLE001 - bookkeeping must not fail a fill
            log.exception("mirror: after fetching %s", self.label)

    def _locate(self) -> tuple[str, dict[str, str]]:
        """One HEAD of the resolve URL: the URL the hub sends the bytes from (no credentials for a
        CDN on another origin), checked against the listing."""
        ref = self.snapshot.ref
        self.locates += 1
        info, _, location = self.source.locate(ref, self.file.path, self.snapshot.commit)
        if info.etag != self.file.etag or (info.size is not None and info.size != self.file.size):
            raise ProtocolError(
                f"{self.label}: upstream describes it as {info.etag} ({info.size} bytes), its listing "
                f"said {self.file.etag} ({self.file.size} bytes)"
            )
        if location is None:
            found = (self.file.url, dict(self.file.headers))
        elif origin_of(location) == origin_of(self.file.url):
            found = (location, dict(self.file.headers))
        else:
            found = (location, {})
        self._location = found
        return found

    def _refresh(self, _file: RemoteFile) -> tuple[str, dict[str, str]] | None:
        """The engine's URL stopped working (a signed URL expired): locate the file again."""
        try:
            if self._locates and self.file.sha256:
                return self._locate()
            return (self.file.url, dict(self.file.headers))
        except HubgetError as exc:
            log.warning("mirror: cannot locate %s again: %s", self.label, exc)
            return None

    # -- what clients see -----------------------------------------------------------------------
    def progress(self) -> FillProgress:
        with self._lock:
            state, error = self.state, self.error
        if state == "done":
            return FillProgress(state, self._end_lineage)  # (the blob's lineage may start anew later)
        lineage = self._lineage(self.blob)
        if state == "failed":
            return FillProgress(state, lineage, error=error)
        now = time.monotonic()
        if now - self._done_read >= PROGRESS_EVERY:
            saved = load_state(state_path(self.partial))
            if saved is not None and saved.matches(self.file.etag, hash_algo(self.file), self.file.size):
                self._done = tuple(saved.done.as_list())
            else:
                self._done = ()
            self._done_read = now
        done = self._done
        return FillProgress(state, lineage, done, self.partial if done else None)

    def open_direct(self, start: int, end: int) -> Response | None:
        """Bytes ``[start, end)`` from where the fill fetches them (LFS files only)."""
        location = self._location
        if location is None or end <= start:
            return None
        for attempt in range(2):
            url, headers = location
            try:
                resp = self.client.request(
                    "GET",
                    url,
                    headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                    stream=True,
                    retries=1,
                )
            except HubgetError:
                return None
            if resp.status == 206 and (resp.headers.get("Content-Range") or "").startswith(
                f"bytes {start}-{end - 1}/"
            ):
                self.direct_reads += 1
                return resp
            resp.close()
            if resp.status not in (403, 410) or attempt:
                return None
            fresh = self._refresh(self.file)  # expired: the fill would need a fresh URL too
            if fresh is None:
                return None
            location = fresh
        return None
