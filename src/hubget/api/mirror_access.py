"""Who may read a gated or private repo through the mirror: only a client whose own token upstream
accepts for that repo. Asked upstream (one HEAD of a file's resolve URL, with the client's token, as
the hub gates files) and remembered per hash of the token for ``ACCESS_TTL`` seconds; tokens
themselves are kept in memory only while in use, never on disk.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from hubget.errors import AuthError, GatedRepoError, HubgetError, NotFoundError, RepoNotFoundError
from hubget.models import RepoRef, Snapshot
from hubget.sources.huggingface import HfSource
from hubget.transfer.http import HttpClient

ACCESS_TTL = 60.0
PUBLIC, GATED, PRIVATE = "public", "gated", "private"


def access_of(info: dict[str, Any]) -> str:
    """What a repo-info answer says of who may read the repo."""
    if info.get("private"):
        return PRIVATE
    return GATED if info.get("gated") not in (None, False, "", "false") else PUBLIC


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccessChecks:
    def __init__(self, endpoint: str, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client
        self._lock = threading.Lock()
        # (repo type, repo id, token hash) -> (when checked, the refusal or None)
        self._seen: dict[tuple[str, str, str], tuple[float, HubgetError | None]] = {}
        self._asking: dict[tuple[str, str, str], threading.Lock] = {}
        self.checks = 0  # asked upstream

    def source_for(self, token: str) -> HfSource:
        return HfSource(self.endpoint, token, client=self.client)

    def check(self, snapshot: Snapshot, access: str, token: str | None) -> None:
        """Raise unless ``token`` may read the files of ``snapshot``'s repo upstream."""
        ref = snapshot.ref
        what = f"{ref.repo_type} {ref.repo_id}"
        if not token:
            if access == PRIVATE:
                raise RepoNotFoundError(f"repository {ref.repo_id!r} not found (or it needs your token)")
            raise GatedRepoError(
                f"Access to {what} is restricted: send your Hugging Face token (the mirror serves this "
                "repo only to clients whose own token the hub accepts for it)"
            )
        key = (ref.repo_type, ref.repo_id, token_key(token))
        with self._lock:
            asking = self._asking.setdefault(key, threading.Lock())
        with asking:  # one question upstream for all the client's requests at once
            self._check(snapshot, access, token, key)

    def _check(self, snapshot: Snapshot, access: str, token: str, key: tuple[str, str, str]) -> None:
        ref = snapshot.ref
        with self._lock:
            seen = self._seen.get(key)
        if seen is not None and time.monotonic() - seen[0] < ACCESS_TTL:
            if seen[1] is not None:
                raise seen[1]
            return
        if not snapshot.files:
            raise RepoNotFoundError(f"repository {ref.repo_id!r} has no file to check access with")
        probe = min(snapshot.files, key=lambda f: (f.size or 0, f.path))
        refusal: HubgetError | None = None
        self.checks += 1
        try:
            self.source_for(token).head(RepoRef(ref.repo_id, ref.repo_type, snapshot.commit), probe.path)
        except (AuthError, NotFoundError) as exc:
            refusal = (
                RepoNotFoundError(str(exc))
                if access == PRIVATE and not isinstance(exc, GatedRepoError)
                else exc
            )
        with self._lock:
            self._seen[key] = (time.monotonic(), refusal)
            if len(self._seen) > 4096:  # forget the oldest answers
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:1024]:
                    del self._seen[old]
                    self._asking.pop(old, None)
        if refusal is not None:
            raise refusal
