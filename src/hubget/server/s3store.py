"""`hubget serve --store s3://bucket/root`: repos staged in a bucket, served without holding a byte.

A repo is ``ROOT/{models,datasets,spaces}/{owner}/{name}/`` (or ``.../{name}/``) with its manifest
``.hubget/manifest.json`` (``hubget.objectstore.manifest``, written by `hubget download --to s3://`).
Listings come from the manifest; a file's bytes are a redirect (302) to a presigned GET of its object,
valid ``presign_ttl`` seconds, so clients download from the object store directly, Range and all.
Nothing here is state that matters: manifests are cached for ``manifest_ttl`` seconds (then asked
again with If-None-Match), so any number of server processes on one store answer alike.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hubget.errors import RepoNotFoundError, RevisionNotFoundError
from hubget.models import RepoType
from hubget.objectstore.manifest import MANIFEST_NAME, Manifest
from hubget.objectstore.s3 import S3Bucket, S3Url
from hubget.server.hashcache import HashCache
from hubget.server.repo import Body, Entry, Ref, Repo, check_revision
from hubget.server.store import TYPE_DIRS, Store, split_repo_id

DEFAULT_PRESIGN_TTL = 900
DEFAULT_MANIFEST_TTL = 5.0


class S3Repo(Repo):
    """One staged repo: one revision (the staged commit, under the names it was staged as)."""

    def __init__(self, store: S3Store, prefix: S3Url, manifest: Manifest, etag: str) -> None:
        super().__init__()
        self.store = store
        self.prefix = prefix
        self.repo_type = manifest.repo_type  # type: ignore[assignment]
        self.repo_id = manifest.repo_id
        self.root = Path("/s3", prefix.bucket, prefix.prefix)  # no local folder: a key for caches
        self.manifest = manifest
        self.etag = etag
        self.default_branch = manifest.revisions[0] if manifest.revisions else "main"
        self._entries = [
            Entry(path=f.path, size=f.size, git_sha1=f.git_sha1, sha256=f.sha256, is_lfs=f.lfs)
            for f in sorted(manifest.files.values(), key=lambda f: f.path)
        ]

    def resolve(self, revision: str | None = None) -> str:
        commit = self.manifest.commit
        if revision is None:
            return commit
        check_revision(revision)
        names = set(self.manifest.revisions) | {self.default_branch}
        if revision in names or revision == commit:
            return commit
        raise RevisionNotFoundError(f"revision {revision!r} is not staged for {self.repo_id}")

    def list_files(self, commit: str) -> list[Entry]:
        if commit != self.manifest.commit:
            raise RevisionNotFoundError(f"commit {commit} is not staged for {self.repo_id}")
        return self._entries

    def refs(self) -> list[Ref]:
        date = self.manifest.staged_at
        names = self.manifest.revisions or [self.default_branch]
        return [Ref(name, "branch", self.manifest.commit, date) for name in names]

    def commit_date(self, commit: str) -> float:
        return self.manifest.staged_at

    def _body(self, commit: str, entry: Entry) -> Body:
        key = self.prefix.key(entry.path)
        return Body(size=entry.size, url=self.store.bucket.presign_get(key, self.store.presign_ttl))


class S3Store(Store):
    """Finds staged repos under ``s3://bucket/root`` (the ``Store`` API the routes use)."""

    def __init__(
        self,
        url: S3Url,
        *,
        bucket: S3Bucket | None = None,
        endpoint: str | None = None,
        presign_endpoint: str | None = None,
        presign_ttl: int = DEFAULT_PRESIGN_TTL,
        manifest_ttl: float = DEFAULT_MANIFEST_TTL,
    ) -> None:
        # Store's own __init__ looks at a folder; none here.
        self.url = url
        self.root = Path("/")
        self.hf_cache = None
        self.bucket = bucket or S3Bucket(url.bucket, endpoint=endpoint, presign_endpoint=presign_endpoint)
        self.presign_ttl = presign_ttl
        self.manifest_ttl = manifest_ttl
        self.hashes = HashCache(None)  # every staged file has its sha256 in the manifest
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, S3Repo | None, str]] = {}  # key -> (checked, repo, etag)

    def find_for(self, repo_type: RepoType, repo_id: str, token: str | None) -> Repo:
        """``find`` for a client presenting ``token`` (the routes' call; a bucket has no upstream)."""
        return self.find(repo_type, repo_id)

    def find(
        self, repo_type: RepoType, repo_id: str, *, upstream: bool = True, token: str | None = None
    ) -> Repo:
        """The repo, or RepoNotFoundError (``upstream`` and ``token`` as ``Store.find``: no upstream here)."""
        if repo_type not in TYPE_DIRS:
            raise RepoNotFoundError(f"unknown repo type {repo_type!r}")
        parts = split_repo_id(repo_id)
        prefix = self.url.child(TYPE_DIRS[repo_type], *parts)
        repo = self._load(prefix)
        if repo is None or repo.repo_type != repo_type:
            raise RepoNotFoundError(f"repository {repo_id!r} ({repo_type}) not found")
        return repo

    def _load(self, prefix: S3Url) -> S3Repo | None:
        key = prefix.key(MANIFEST_NAME)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.manifest_ttl:
            return cached[1]
        old_repo, old_etag = (cached[1], cached[2]) if cached is not None else (None, "")
        got = self.bucket.get_bytes(key, if_none_match=old_etag or None)
        if got is None:
            repo = None
            etag = ""
        elif old_repo is not None and got[1] == old_etag and not got[0]:
            repo, etag = old_repo, old_etag  # unchanged (304)
        else:
            data, etag = got
            repo = S3Repo(self, prefix, Manifest.from_json(data), etag)
        with self._lock:
            self._cache[key] = (now, repo, etag)
            while len(self._cache) > 4096:
                self._cache.pop(next(iter(self._cache)))
        return repo

    def list_repos(self) -> list[tuple[RepoType, str]]:
        found: list[tuple[RepoType, str]] = []
        for repo_type, dirname in TYPE_DIRS.items():
            base = self.url.key(dirname)
            for owner in self.bucket.list_folders(base):
                owner_key = f"{base}/{owner}" if base else owner
                for name in self.bucket.list_folders(owner_key):
                    if name == ".hubget":
                        found.append((repo_type, owner))  # type: ignore[arg-type]
                    elif self.bucket.head(f"{owner_key}/{name}/{MANIFEST_NAME}") is not None:
                        found.append((repo_type, f"{owner}/{name}"))  # type: ignore[arg-type]
        return sorted(found)

    def close(self) -> None:
        self.hashes.close()
