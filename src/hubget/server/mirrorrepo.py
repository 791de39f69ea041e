"""A repo served from an upstream hub (`hubget serve --upstream`): metadata and blobs come through an
``Upstream`` (server/upstream.py), which caches them in the mirror's store.

Entries are the upstream listing of the commit, so the routes answer as for any repo: trees without
``xetHash``, no ``X-Xet-*`` headers, pagination links to this server, file bodies sent by this server
(from the verified blob, or streamed from the fill while it arrives), never a redirect upstream; with
a bucket as the store, a redirect to the verified object's presigned URL.
A gated or private repo is served only to a client whose own upstream token (``bound``) is accepted.
"""

from __future__ import annotations

import copy
import re
import threading
from collections import OrderedDict
from pathlib import Path

from hubget.errors import EntryNotFoundError
from hubget.models import RemoteFile, RepoType, Snapshot
from hubget.server.folderrepo import pointer_sha1
from hubget.server.repo import Body, Entry, Ref, Repo, check_revision
from hubget.server.upstream import Growing, Upstream

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
KEPT_COMMITS = 16


def entry_of(file: RemoteFile) -> Entry:
    size = file.size or 0
    if file.sha256:
        return Entry(file.path, size, pointer_sha1(file.sha256, size), file.sha256, True)
    return Entry(file.path, size, file.git_sha1 or "")


class MirrorRepo(Repo):
    def __init__(
        self, upstream: Upstream, repo_type: RepoType, repo_id: str, root: Path, default_branch: str = "main"
    ) -> None:
        super().__init__()
        self.default_branch = default_branch
        self.upstream = upstream
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.root = root
        self.git_dir = None
        self.token: str | None = None  # the client's own upstream token (see ``bound``)
        self._lock = threading.Lock()
        # commit -> (snapshot, its entries, its files by path); the same list object each time, so the
        # EntryIndex of the base class stays valid.
        self._commits: OrderedDict[str, tuple[Snapshot, list[Entry], dict[str, RemoteFile]]] = OrderedDict()

    def bound(self, token: str | None) -> MirrorRepo:
        """This repo as seen by a client presenting ``token`` (the caches are shared)."""
        if token == self.token:
            return self
        view = copy.copy(self)
        view.token = token
        return view

    def _remember(self, snap: Snapshot) -> tuple[Snapshot, list[Entry], dict[str, RemoteFile]]:
        with self._lock:
            known = self._commits.get(snap.commit)
            if known is None:
                files = sorted(snap.files, key=lambda f: f.path)
                known = (snap, [entry_of(f) for f in files], {f.path: f for f in files})
                self._commits[snap.commit] = known
            self._commits.move_to_end(snap.commit)
            while len(self._commits) > KEPT_COMMITS:
                self._commits.popitem(last=False)
            return known

    def _commit(self, commit: str) -> tuple[Snapshot, list[Entry], dict[str, RemoteFile]]:
        with self._lock:
            known = self._commits.get(commit)
        if known is not None:
            return known
        return self._remember(self.upstream.snapshot(self.repo_type, self.repo_id, commit, self.token))

    def resolve(self, revision: str | None = None) -> str:
        """The commit, once the client may see the repo (every route resolves first)."""
        revision = check_revision(revision or self.default_branch)
        snap = self._remember(self.upstream.snapshot(self.repo_type, self.repo_id, revision, self.token))[0]
        self.upstream.authorize(self.repo_type, self.repo_id, snap.commit, self.token, files=False)
        return snap.commit

    def list_files(self, commit: str) -> list[Entry]:
        return self._commit(commit)[1]

    def refs(self) -> list[Ref]:
        known = self.upstream.known_revisions(self.repo_type, self.repo_id)
        if not known:
            self.resolve()  # (asks upstream, and whether the client may see the repo)
            known = self.upstream.known_revisions(self.repo_type, self.repo_id)
        else:
            commit = next(iter(known.values()))
            self.upstream.authorize(self.repo_type, self.repo_id, commit, self.token, files=False)
        out = []
        for name, commit in sorted(known.items()):
            if not _SHA1.match(name):
                out.append(Ref(name, "branch", commit, self.commit_date(commit)))
        return out

    def commit_date(self, commit: str) -> float:
        return self.upstream.commit_date(self.repo_type, self.repo_id, commit)

    def _body(self, commit: str, entry: Entry) -> Body:
        snap, _, by_path = self._commit(commit)
        file = by_path.get(entry.path)
        if file is None:
            raise EntryNotFoundError(f"{entry.path} not found in {self.repo_id} at {commit}")
        self.upstream.authorize(self.repo_type, self.repo_id, commit, self.token, files=True)
        url = self.upstream.blob_url(snap, file, self.token)
        if url is not None:  # the store is a bucket: the client fetches the verified object itself
            return Body(size=entry.size, url=url)
        whole_only = self.upstream.whole_only(snap, file)
        blob = self.upstream.blob(snap, file)
        if blob is not None:
            return Body(size=entry.size, path=blob, whole_only=whole_only)
        upstream, token = self.upstream, self.token
        return Body(
            size=entry.size, growing=Growing(lambda: upstream.fill(snap, file, token)), whole_only=whole_only
        )
