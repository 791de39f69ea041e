"""What a served repo is, whatever stores it: entries (files with their hashes), bodies (where the
bytes are), refs, and the ``Repo`` base class that the git, folder and HF-cache backends implement."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hubget.errors import EntryNotFoundError, RevisionNotFoundError, UnsafePathError
from hubget.folderfiles import lfs_pointer
from hubget.models import RepoType
from hubget.paths import safe_relpath
from hubget.server.upstream import Growing

__all__ = ["Body", "CommitInfo", "Entry", "EntryIndex", "Ref", "Repo", "check_revision", "lfs_pointer"]

CACHE_DIR_NAME = ".hubget-cache"
_REVISION_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|^-|^/|/$|//")


@dataclass(frozen=True)
class Entry:
    """One file of a revision. ``sha256`` is set for LFS (large) files; ``git_sha1`` is the git blob id
    of what git stores (for an LFS file: of its pointer), as the Hugging Face tree API reports it."""

    path: str
    size: int
    git_sha1: str
    sha256: str | None = None
    is_lfs: bool = False

    @property
    def etag(self) -> str:
        """What the hub sends as ETag and the HF cache names the blob by."""
        return self.sha256 if self.is_lfs and self.sha256 else self.git_sha1

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256 or "", self.size)) if self.is_lfs else 0


@dataclass(frozen=True)
class Body:
    """Where the bytes of an entry are: a file on disk (sent with sendfile), a git blob (streamed), a
    blob still arriving from an upstream hub (``growing``), or elsewhere at ``url`` (an object
    store's presigned URL: the client is redirected there). ``whole_only``: answer Range requests
    with the whole file (see ``Upstream.whole_only``)."""

    size: int
    path: Path | None = None
    git_dir: Path | None = None
    blob: str | None = None
    url: str | None = None
    growing: Growing | None = None
    whole_only: bool = False


@dataclass(frozen=True)
class CommitInfo:
    id: str
    title: str
    date: float


@dataclass(frozen=True)
class Ref:
    name: str
    kind: Literal["branch", "tag"]
    commit: str
    date: float  # unix time of the commit (or of the newest file for plain folders)


def check_revision(revision: str) -> str:
    """Refuse revisions that could be read as options or odd git syntax before they reach a backend."""
    if not revision or len(revision) > 255 or _REVISION_BAD.search(revision):
        raise RevisionNotFoundError(f"invalid revision: {revision!r}")
    return revision


class EntryIndex:
    """``path -> Entry`` of the last few listings, so finding one file of a commit is a dict lookup.
    An index is reused only while the backend hands out the very same listing object for the commit
    (backends cache their listings), so a re-read listing is never answered from a stale index."""

    def __init__(self, size: int = 8) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._by_commit: OrderedDict[str, tuple[list[Entry], dict[str, Entry]]] = OrderedDict()

    def lookup(self, commit: str, entries: list[Entry]) -> dict[str, Entry]:
        with self._lock:
            hit = self._by_commit.get(commit)
            if hit is not None and hit[0] is entries:
                self._by_commit.move_to_end(commit)
                return hit[1]
        index = {e.path: e for e in entries}
        with self._lock:
            self._by_commit[commit] = (entries, index)
            self._by_commit.move_to_end(commit)
            while len(self._by_commit) > self._size:
                self._by_commit.popitem(last=False)
        return index


class Repo:
    """A served repo. Backends: ``GitRepo``, ``FolderRepo``, ``HfCacheRepo``. Methods may block
    (git, hashing): the server calls them from worker threads."""

    repo_type: RepoType
    repo_id: str
    root: Path
    git_dir: Path | None = None  # set for git-backed repos (smart HTTP and LFS are served from it)
    default_branch: str = "main"

    def __init__(self) -> None:
        self._entry_index = EntryIndex()

    def resolve(self, revision: str | None = None) -> str:
        """The 40-hex commit for a branch, tag or commit sha (None: the default branch)."""
        raise NotImplementedError

    def list_files(self, commit: str) -> list[Entry]:
        """Every file of the commit, sorted by path."""
        raise NotImplementedError

    def refs(self) -> list[Ref]:
        """Branches and tags."""
        raise NotImplementedError

    def commit_date(self, commit: str) -> float:
        raise NotImplementedError

    def last_commits(self, commit: str) -> dict[str, CommitInfo]:
        """For each file of ``commit``, the newest commit that changed it (the hub's ``lastCommit``).
        Backends without history answer with ``commit`` itself for every file."""
        info = CommitInfo(commit, "", self.commit_date(commit))
        return {e.path: info for e in self.list_files(commit)}

    def open_file(self, commit: str, path: str) -> tuple[Entry, Body]:
        """The entry and where its bytes are; EntryNotFoundError if the commit has no such file.
        A dict lookup once the commit is listed (callers may open every file of a listing)."""
        entry = self.entry(commit, path)
        return entry, self._body(commit, entry)

    def entry(self, commit: str, path: str) -> Entry:
        try:
            safe_relpath(path)
        except UnsafePathError as exc:
            raise EntryNotFoundError(str(exc)) from None
        entry = self._entry_index.lookup(commit, self.list_files(commit)).get(path)
        if entry is None:
            raise EntryNotFoundError(f"{path} not found in {self.repo_id} at {commit}")
        return entry

    def _body(self, commit: str, entry: Entry) -> Body:
        raise NotImplementedError
