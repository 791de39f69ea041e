"""A repo served from a git repository (work tree or bare): real commits, branches and tags.

LFS pointer files are resolved to ``{git common dir}/lfs/objects/..``; other blobs are read from git.
Everything here shells out to the real ``git`` (no library re-implements its object store correctly).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

from hubget.errors import EntryNotFoundError, HubgetError, RevisionNotFoundError
from hubget.models import RepoType
from hubget.server.repo import Body, CommitInfo, Entry, Ref, Repo, check_revision

POINTER_MAX_SIZE = 1024  # git-lfs never treats a larger blob as a pointer
_POINTER = re.compile(
    rb"^version https://(?:git-lfs\.github\.com/spec/v1|hawser\.github\.com/spec/v1)\n"
    rb"(?:ext-[^\n]*\n)*oid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n?$"
)
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_LISTING_CACHE_SIZE = 64


class GitError(HubgetError):
    pass


def git_base_command(git_dir: Path) -> list[str]:
    """``git`` bound to one repository; safe.directory=* because the served tree may belong to another
    user (the server only reads it)."""
    return ["git", "-c", "safe.directory=*", f"--git-dir={git_dir}"]


def blob_command(git_dir: Path, blob: str) -> list[str]:
    """The command that writes a blob's bytes on stdout (the server streams it)."""
    return [*git_base_command(git_dir), "cat-file", "blob", blob]


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(sha256, size) if ``data`` is a git-lfs pointer file."""
    if len(data) > POINTER_MAX_SIZE:
        return None
    m = _POINTER.match(data)
    return (m.group(1).decode(), int(m.group(2))) if m else None


class GitRepo(Repo):
    def __init__(self, folder: Path, repo_type: RepoType, repo_id: str) -> None:
        super().__init__()
        self.root = folder
        self.repo_type = repo_type
        self.repo_id = repo_id
        out = (
            self._run_in(folder, "rev-parse", "--absolute-git-dir", "--git-common-dir").decode().splitlines()
        )
        self.git_dir = Path(out[0])
        common = Path(out[1])
        self.common_dir = common if common.is_absolute() else (folder / common).resolve()
        self.lfs_objects = self.common_dir / "lfs" / "objects"
        self._listings: OrderedDict[str, list[Entry]] = OrderedDict()
        self._dates: dict[str, float] = {}
        self._last_commits: OrderedDict[str, dict[str, CommitInfo]] = OrderedDict()
        self._lock = threading.Lock()

    # -- git plumbing -------------------------------------------------------------------------
    @staticmethod
    def _run_in(folder: Path, *args: str) -> bytes:
        proc = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(folder), *args], capture_output=True, check=False
        )
        if proc.returncode != 0:
            raise GitError(
                f"git {args[0]} failed in {folder}: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def _git(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes | None:
        proc = subprocess.run(
            [*git_base_command(self.git_dir), *args], input=input, capture_output=True, check=False
        )
        if proc.returncode != 0:
            if check:
                raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
            return None
        return proc.stdout

    # -- Repo API -----------------------------------------------------------------------------
    @property
    def default_branch(self) -> str:  # type: ignore[override]
        if self._git("show-ref", "--verify", "-q", "refs/heads/main", check=False) is not None:
            return "main"
        head = self._git("symbolic-ref", "-q", "--short", "HEAD", check=False)
        return head.decode().strip() if head else "main"

    def resolve(self, revision: str | None = None) -> str:
        revision = check_revision(revision or "main")
        out = self._git(
            "rev-parse", "--verify", "-q", "--end-of-options", f"{revision}^{{commit}}", check=False
        )
        if out is None and revision in ("main", "master"):
            # HF clients ask for main, ModelScope clients for master: both mean the default branch.
            out = self._git("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
        if out is None:
            raise RevisionNotFoundError(f"revision {revision!r} not found in {self.repo_id}")
        commit = out.decode().strip()
        if not _SHA1.match(commit):
            raise RevisionNotFoundError(f"revision {revision!r} not found in {self.repo_id}")
        return commit

    def list_files(self, commit: str) -> list[Entry]:
        with self._lock:
            if (hit := self._listings.get(commit)) is not None:
                self._listings.move_to_end(commit)
                return hit
        entries = self._read_tree(commit)
        with self._lock:
            self._listings[commit] = entries
            while len(self._listings) > _LISTING_CACHE_SIZE:
                self._listings.popitem(last=False)
        return entries

    def _read_tree(self, commit: str) -> list[Entry]:
        raw = self._git("ls-tree", "-r", "-l", "-z", "--full-tree", commit)
        assert raw is not None
        blobs: list[tuple[str, str, int]] = []  # (path, sha1, size)
        for record in raw.split(b"\0"):
            if not record:
                continue
            meta, _, path_b = record.partition(b"\t")
            mode, kind, sha, size = meta.split()
            # Symlinks (120000) and submodules are not files a hub serves.
            if kind != b"blob" or mode == b"120000":
                continue
            blobs.append((path_b.decode("utf-8", "surrogateescape"), sha.decode(), int(size)))
        small = [sha for _, sha, size in blobs if size <= POINTER_MAX_SIZE]
        pointers = self._read_pointers(small) if small else {}
        entries = []
        for path, sha, size in blobs:
            pointer = pointers.get(sha)
            if pointer:
                entries.append(Entry(path, pointer[1], sha, pointer[0], True))
            else:
                entries.append(Entry(path, size, sha))
        entries.sort(key=lambda e: e.path)
        return entries

    def _read_pointers(self, shas: list[str]) -> dict[str, tuple[str, int]]:
        unique = list(dict.fromkeys(shas))
        out = self._git("cat-file", "--batch", input="".join(f"{s}\n" for s in unique).encode())
        assert out is not None
        found: dict[str, tuple[str, int]] = {}
        pos = 0
        for sha in unique:
            header_end = out.index(b"\n", pos)
            header = out[pos:header_end].split()
            size = int(header[2])
            data = out[header_end + 1 : header_end + 1 + size]
            pos = header_end + 1 + size + 1
            if pointer := parse_lfs_pointer(data):
                found[sha] = pointer
        return found

    def _body(self, commit: str, entry: Entry) -> Body:
        if entry.is_lfs and entry.sha256:
            oid = entry.sha256
            obj = self.lfs_objects / oid[0:2] / oid[2:4] / oid
            try:
                size = os.stat(obj).st_size
            except OSError:
                raise EntryNotFoundError(
                    f"{entry.path}: LFS object {oid} is not stored on this server"
                ) from None
            if size != entry.size:
                raise EntryNotFoundError(f"{entry.path}: LFS object {oid} is incomplete on this server")
            return Body(size=size, path=obj)
        return Body(size=entry.size, git_dir=self.git_dir, blob=entry.git_sha1)

    def lfs_object_path(self, oid: str) -> Path | None:
        """The stored LFS object with this sha256, if present (for the LFS batch API)."""
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            return None
        obj = self.lfs_objects / oid[0:2] / oid[2:4] / oid
        return obj if obj.is_file() else None

    def refs(self) -> list[Ref]:
        fmt = "%(refname)%00%(objectname)%00%(*objectname)%00%(committerdate:unix)%00%(*committerdate:unix)"
        out = self._git("for-each-ref", f"--format={fmt}", "refs/heads", "refs/tags")
        assert out is not None
        refs = []
        for line in out.decode("utf-8", "replace").splitlines():
            name, obj, peeled, date, peeled_date = line.split("\0")
            commit, when = (peeled, peeled_date) if peeled else (obj, date)
            if name.startswith("refs/heads/"):
                refs.append(Ref(name[len("refs/heads/") :], "branch", commit, float(when or 0)))
            elif name.startswith("refs/tags/"):
                refs.append(Ref(name[len("refs/tags/") :], "tag", commit, float(when or 0)))
        return refs

    def commit_date(self, commit: str) -> float:
        if commit not in self._dates:
            out = self._git("show", "-s", "--format=%ct", commit)
            assert out is not None
            self._dates[commit] = float(out.decode().strip())
        return self._dates[commit]

    def last_commits(self, commit: str) -> dict[str, CommitInfo]:
        with self._lock:
            if (hit := self._last_commits.get(commit)) is not None:
                return hit
        wanted = {e.path for e in self.list_files(commit)}
        found: dict[str, CommitInfo] = {}
        # One walk down the history: the first commit (newest) naming a file is its last change.
        raw = self._git(
            "-c",
            "core.quotePath=false",
            "log",
            "--no-renames",
            "--format=%x01%H%x02%ct%x02%s",
            "--name-only",
            "-z",
            commit,
            "--",
        )
        assert raw is not None
        current: CommitInfo | None = None
        for token in raw.decode("utf-8", "surrogateescape").split("\0"):
            token = token.strip("\n")
            if "\x01" in token:
                head, _, first_path = token.partition("\n")
                sha, date, title = head.lstrip("\x01").split("\x02", 2)
                current = CommitInfo(sha, title, float(date))
                token = first_path.strip("\n")
            if token and current is not None and token in wanted and token not in found:
                found[token] = current
            if len(found) == len(wanted):
                break
        fallback = CommitInfo(commit, "", self.commit_date(commit))
        result = {path: found.get(path, fallback) for path in wanted}
        with self._lock:
            self._last_commits[commit] = result
            while len(self._last_commits) > _LISTING_CACHE_SIZE:
                self._last_commits.popitem(last=False)
        return result
