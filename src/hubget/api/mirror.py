"""`hubget serve ROOT --upstream URL`: a pull-through mirror of a Hugging Face endpoint (huggingface.co,
a mirror of it, or another `hubget serve`). Implements ``hubget.server.upstream.Upstream``.

    ROOT/.hubget-mirror/hub/    an HF cache (blobs by sha256 / git sha1, snapshots, refs), filled by
                                the client pipeline one blob at a time (``mirror_fill.UpstreamFill``)
    ROOT/.hubget-mirror/meta/   what upstream said: branch/tag -> commit with when it was asked,
                                every listed commit's files (``mirror_meta.MirrorMeta``)

Upstream calls: a branch or tag is asked again once ``revision_ttl`` is over (a commit never is); a
commit is listed once, ever; a blob is located once (one resolver call) and fetched once, whatever
the number of clients (single flight). When upstream is unreachable or failing, a branch keeps its
last known commit (logged), so what is cached keeps being served. A gated or private repo is served
only to clients whose own token upstream accepts for it (``mirror_access``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Hashable
from pathlib import Path

from hubget.api.mirror_access import GATED, PRIVATE, PUBLIC, AccessChecks, access_of
from hubget.api.mirror_budget import BlobBudget
from hubget.api.mirror_fill import UpstreamFill, resumable
from hubget.api.mirror_meta import MirrorMeta, StoredFile, Tree
from hubget.errors import AuthError, NetworkError, RepoNotFoundError, UnsafePathError
from hubget.layouts.fsutil import atomic_write_text
from hubget.layouts.hf_cache import HfCacheLayout
from hubget.models import RemoteFile, RepoRef, RepoType, Snapshot
from hubget.paths import join_inside
from hubget.sources.huggingface import RESOLVE_BUCKET, HfSource
from hubget.transfer.http import HttpClient

log = logging.getLogger("hubget.serve")
MIRROR_DIR = ".hubget-mirror"
DEFAULT_REVISION_TTL = 300.0
# After upstream failed to answer, branches use their last known commit this long before asking again
# (so a dead upstream costs one timeout now and then, not one per request).
UNREACHABLE_PAUSE = 30.0
FAILED_FILL_HOLD = 2.0  # a failed fill is what clients get for this long, then a new one starts
DISOWNED_WINDOW = 600.0  # Range requests get the whole file this long after a blob's bytes were disowned
KEPT_SNAPSHOTS = 32  # commits whose listing is kept in memory as a Snapshot
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class Mirror:
    """The Hugging Face side; ``hubget.api.mirror_ms.ModelScopeMirror`` is the ModelScope one, which
    overrides where the metadata comes from (``_make_source``, ``_info``, ``_list``, ``_remote``)."""

    store_subdir = ""  # under ROOT/.hubget-mirror
    locates_blobs = True  # an LFS file's bytes are behind a redirect: one resolver call finds them
    metric_labels: dict[str, str] = {}

    def __init__(
        self,
        root: Path,
        endpoint: str,
        *,
        token: str | None = None,
        revision_ttl: float = DEFAULT_REVISION_TTL,
        connections: int = 8,
        max_size: int | None = None,
        meta_client: HttpClient | None = None,
        fill_client: HttpClient | None = None,
        budget: BlobBudget | None = None,
    ) -> None:
        self.folder = Path(root) / MIRROR_DIR / self.store_subdir
        self.cache_dir = self.folder / "hub"
        self.meta = MirrorMeta(self.folder / "meta")
        self.revision_ttl = revision_ttl
        self.connections = connections
        # Metadata calls fail fast (few retries): a branch then falls back to its last known commit.
        self.source = self._make_source(
            endpoint, token, meta_client or HttpClient(retries=2, connect_timeout=5.0)
        )
        self.endpoint = self.source.endpoint
        self.fill_client = fill_client or HttpClient(pool_maxsize=64)
        self._lock = threading.Lock()
        self._keys: dict[Hashable, threading.Lock] = {}
        self._fills: dict[Path, UpstreamFill] = {}
        self._lineage: dict[Path, int] = {}
        self._disowned: dict[Path, float] = {}
        self._unreachable_until = 0.0  # monotonic
        self._snapshots: OrderedDict[tuple[str, str, str], Snapshot] = OrderedDict()
        self.access = AccessChecks(self.endpoint, self.source.client)
        if budget is not None:  # (made by the caller: one for the mirrors of both hubs)
            budget.scan(self.cache_dir)
        self.budget = budget or (BlobBudget(self.cache_dir, max_size) if max_size else None)
        self.counts: Counter[str] = Counter()  # what /metrics shows (see ``metrics``)

    def _make_source(self, endpoint: str, token: str | None, client: HttpClient) -> HfSource:
        return HfSource(endpoint, token or False, client=client)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def _key(self, key: Hashable) -> threading.Lock:
        """One lock per upstream question, so that clients asking at once cause one call."""
        with self._lock:
            return self._keys.setdefault(key, threading.Lock())

    # -- metadata -------------------------------------------------------------------------------
    def snapshot(
        self, repo_type: RepoType, repo_id: str, revision: str, token: str | None = None
    ) -> Snapshot:
        ref = RepoRef(repo_id, repo_type, revision)
        if not _COMMIT.match(revision):
            commit = self._commit(ref, token)
        else:
            commit = revision
            if self.meta.access(repo_type, repo_id) is None:
                self._info(ref, token)  # whether the repo is gated or private must be known
        key = (repo_type, repo_id, commit)
        with self._lock:
            snap = self._snapshots.get(key)
            if snap is not None:
                self._snapshots.move_to_end(key)
                return snap
        tree = self._tree(ref, commit, token)
        at_commit = RepoRef(repo_id, repo_type, commit)
        files = [self._remote(at_commit, commit, f) for f in tree.files]
        snap = Snapshot(at_commit, commit, files, self.source.name, self.endpoint)
        with self._lock:
            self._snapshots[key] = snap
            while len(self._snapshots) > KEPT_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return snap

    def _info(self, ref: RepoRef, token: str | None) -> str:
        """Ask upstream for ``ref``'s commit (and whether the repo is gated or private); with the
        client's token when the mirror's own cannot see the repo."""
        self._count("upstream_revision")
        try:
            commit, info = self.source.resolve_info(ref)
            access = access_of(info)
        except (RepoNotFoundError, AuthError):
            if not token:
                raise
            commit, info = self.access.source_for(token).resolve_info(ref)
            access = GATED if access_of(info) == GATED else PRIVATE  # hidden from the mirror itself
        self.meta.set_access(ref.repo_type, ref.repo_id, access)
        return commit

    def _commit(self, ref: RepoRef, token: str | None = None) -> str:
        assert ref.revision is not None
        args = (ref.repo_type, ref.repo_id, ref.revision)
        known = self.meta.revision(*args)
        if known is not None and (self._fresh(known[1]) or time.monotonic() < self._unreachable_until):
            return known[0]
        with self._key(("revision", *args)):
            known = self.meta.revision(*args)
            if known is not None and self._fresh(known[1]):
                return known[0]  # another client asked just now
            try:
                commit = self._info(ref, token)
            except NetworkError as exc:
                if known is None:
                    raise
                self._unreachable_until = time.monotonic() + UNREACHABLE_PAUSE
                self._count("revision_fallbacks")
                log.warning(
                    "mirror: upstream %s failed (%s); serving %s@%s at its last known commit %s",
                    self.endpoint,
                    exc,
                    ref.repo_id,
                    ref.revision,
                    known[0][:12],
                )
                return known[0]
            self.meta.set_revision(*args, commit)
            self._write_ref(ref, commit)
            return commit

    def _fresh(self, checked: float) -> bool:
        return time.time() - checked < self.revision_ttl

    def _write_ref(self, ref: RepoRef, commit: str) -> None:
        """refs/{revision} in the mirror's HF cache, as huggingface_hub keeps it."""
        assert ref.revision is not None
        layout = HfCacheLayout(ref, self.cache_dir)
        try:
            atomic_write_text(join_inside(layout.repo_dir / "refs", ref.revision), commit)
        except (OSError, UnsafePathError) as exc:
            log.warning("mirror: cannot record %s@%s: %s", ref.repo_id, ref.revision, exc)

    def _tree(self, ref: RepoRef, commit: str, token: str | None) -> Tree:
        args = (ref.repo_type, ref.repo_id, commit)
        tree = self.meta.tree(*args)
        if tree is not None:
            return tree
        with self._key(("tree", *args)):
            tree = self.meta.tree(*args)
            if tree is None:
                self._count("upstream_tree")
                tree = self.meta.set_tree(*args, sorted(self._list(ref, commit, token), key=lambda f: f.path))
            return tree

    def _list(self, ref: RepoRef, commit: str, token: str | None) -> list[StoredFile]:
        """Every file of ``commit``, asked upstream (all pages)."""
        try:
            listed = self.source.list_tree(ref, commit)
        except (RepoNotFoundError, AuthError):
            if not token:
                raise
            listed = self.access.source_for(token).list_tree(ref, commit)
        return [StoredFile(f.path, f.size, f.sha256, f.git_sha1) for f in listed]

    def _remote(self, ref: RepoRef, commit: str, f: StoredFile) -> RemoteFile:
        token = self.source.token
        return RemoteFile(
            path=f.path,
            size=f.size,
            url=self.source.resolve_url(ref, commit, f.path),
            sha256=f.sha256,
            git_sha1=f.git_sha1,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            rate_bucket=RESOLVE_BUCKET,
        )

    def authorize(
        self, repo_type: RepoType, repo_id: str, commit: str, token: str | None, *, files: bool
    ) -> None:
        """Raise unless the client's ``token`` may read this repo (its ``files``, or anything)."""
        access = self.meta.access(repo_type, repo_id) or PRIVATE
        if access == PUBLIC or (access == GATED and not files):
            return  # (the hub lists a gated repo's files to anyone, and gates their bytes)
        self.access.check(self.snapshot(repo_type, repo_id, commit, token), access, token)

    def known_revisions(self, repo_type: RepoType, repo_id: str) -> dict[str, str]:
        return self.meta.revisions(repo_type, repo_id)

    def commit_date(self, repo_type: RepoType, repo_id: str, commit: str) -> float:
        tree = self.meta.tree(repo_type, repo_id, commit)
        return tree.seen if tree is not None else 0.0

    # -- blobs ----------------------------------------------------------------------------------
    def _layout(self, snapshot: Snapshot) -> HfCacheLayout:
        return HfCacheLayout(snapshot.ref, self.cache_dir)  # (the ref names the commit: no refs written)

    def blob(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        layout = self._layout(snapshot)
        if not layout.is_complete(snapshot, file):
            self._count("store_misses")
            return None
        self._count("store_hits")
        blob = layout.blob(file)
        if self.budget is not None:
            self.budget.used(blob)
        return blob

    def blob_url(self, snapshot: Snapshot, file: RemoteFile, token: str | None = None) -> str | None:
        return None  # the blobs are files of this machine, sent by this process

    def fill(self, snapshot: Snapshot, file: RemoteFile, token: str | None = None) -> UpstreamFill:
        """The fill of ``file``'s blob under way (joined), or a new one. A gated or private repo's
        blob is fetched with the token of the (authorized) client that asked first."""
        layout = self._layout(snapshot)
        source = self.source
        if token and self.meta.access(snapshot.ref.repo_type, snapshot.ref.repo_id) != PUBLIC:
            source = self.access.source_for(token)
            file = dataclasses.replace(file, headers={"Authorization": f"Bearer {token}"})
        blob = layout.blob(file)
        with self._lock:
            current = self._fills.get(blob)
            if current is not None:
                current.last_request = time.time()
                if current.state in ("waiting", "running") or (
                    current.state == "failed" and time.monotonic() - current.ended < FAILED_FILL_HOLD
                ):
                    return current
                if current.state == "done" and layout.is_complete(snapshot, file):
                    return current
            lineage = self._lineage.get(blob, 0)
            if not resumable(blob, file):
                if lineage:
                    self._disowned[blob] = time.time()  # bytes an earlier fill had written are gone
                lineage += 1
            self._lineage[blob] = max(1, lineage)
            fill = UpstreamFill(
                snapshot,
                file,
                layout,
                source=source,
                client=self.fill_client,
                connections=self.connections,
                locate=self.locates_blobs,
                lineage=self.lineage,
                disown=self.disown,
                finished=self._fill_finished,
            )
            self._fills[blob] = fill
        return fill.start()

    def _fill_finished(self, fill: UpstreamFill) -> None:
        with self._lock:
            self.counts["fills_done" if fill.error is None else "fills_failed"] += 1
            self.counts["upstream_locate"] += fill.locates
            self.counts["upstream_bytes"] += fill.bytes_fetched
            self.counts["direct_reads"] += fill.direct_reads
            busy = {
                f.blob for f in self._fills.values() if f.state in ("waiting", "running") and f is not fill
            }
            if fill.error is None and self._fills.get(fill.blob) is fill:
                del self._fills[fill.blob]  # the blob is in the store now (its clients hold the fill)
                self._lineage.pop(fill.blob, None)  # verified: a later fill (after eviction) starts clean
        if fill.error is None and self.budget is not None:
            self.budget.added(fill.blob, busy, used_at=fill.last_request)

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        """(name, type, help, labels, value) of what the mirror did since it started."""
        c = self.counts
        with self._lock:
            active = sum(1 for f in self._fills.values() if f.state in ("waiting", "running"))
        out: list[tuple[str, str, str, dict[str, str], float]] = []
        calls = "Calls to the upstream hub."
        for kind in ("revision", "tree", "locate"):
            out.append(
                (
                    "hubget_mirror_upstream_calls_total",
                    "counter",
                    calls,
                    {"kind": kind},
                    c[f"upstream_{kind}"],
                )
            )
        out.append(
            ("hubget_mirror_upstream_calls_total", "counter", calls, {"kind": "access"}, self.access.checks)
        )
        out += [
            (
                "hubget_mirror_upstream_bytes_total",
                "counter",
                "Blob bytes fetched by fills.",
                {},
                c["upstream_bytes"],
            ),
            (
                "hubget_mirror_direct_reads_total",
                "counter",
                "Ranges fetched for a client directly.",
                {},
                c["direct_reads"],
            ),
            (
                "hubget_mirror_fills_total",
                "counter",
                "Blob fills by outcome.",
                {"result": "done"},
                c["fills_done"],
            ),
            (
                "hubget_mirror_fills_total",
                "counter",
                "Blob fills by outcome.",
                {"result": "failed"},
                c["fills_failed"],
            ),
            ("hubget_mirror_fills_active", "gauge", "Blob fills under way.", {}, active),
            (
                "hubget_mirror_blob_requests_total",
                "counter",
                "Blob answers by where the blob was.",
                {"from": "store"},
                c["store_hits"],
            ),
            (
                "hubget_mirror_blob_requests_total",
                "counter",
                "Blob answers by where the blob was.",
                {"from": "upstream"},
                c["store_misses"],
            ),
            (
                "hubget_mirror_revision_fallbacks_total",
                "counter",
                "Branches served at their last known commit because upstream failed.",
                {},
                c["revision_fallbacks"],
            ),
        ]
        if self.budget is not None:
            out += [
                (
                    "hubget_mirror_store_bytes",
                    "gauge",
                    "Bytes of the blobs kept.",
                    {},
                    self.budget.used_bytes,
                ),
                (
                    "hubget_mirror_store_max_bytes",
                    "gauge",
                    "The --max-size budget.",
                    {},
                    self.budget.max_bytes,
                ),
                (
                    "hubget_mirror_evictions_total",
                    "counter",
                    "Blobs evicted to stay under --max-size.",
                    {},
                    self.budget.evicted,
                ),
            ]
        if self.metric_labels:
            out = [(n, kind, text, {**self.metric_labels, **labels}, v) for n, kind, text, labels, v in out]
        return out

    def lineage(self, blob: Path) -> int:
        with self._lock:
            return self._lineage.get(blob, 0)

    def disown(self, blob: Path) -> None:
        """The bytes written for ``blob`` were wrong: clients that got some must not get the rest."""
        with self._lock:
            self._lineage[blob] = self._lineage.get(blob, 0) + 1
            self._disowned[blob] = time.time()

    def whole_only(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        blob = self._layout(snapshot).blob(file)
        with self._lock:
            since = self._disowned.get(blob, -math.inf)
        return time.time() - since < DISOWNED_WINDOW

    def close(self) -> None:
        self.fill_client.clear()
