"""The repos `hubget serve` serves, found on disk, behind one small API the routes share.

Layout of a served ROOT (a repo id is ``owner/name`` or a bare ``name``):

    ROOT/models/{owner}/{name}/      model repos (also ROOT/models/{name}/ for an id without owner)
    ROOT/datasets/{owner}/{name}/    dataset repos
    ROOT/spaces/{owner}/{name}/      space repos
    ROOT/{owner}/{name}/             also a model repo, when ``owner`` is not models/datasets/spaces

A repo folder is a git repository (work tree or bare, also found as ``{name}.git``) or a plain folder
of files. ``--hf-cache DIR`` adds the repos of a Hugging Face cache (``models--org--name``); a repo in
ROOT wins over the same id in the cache. With an ``Upstream`` (``--upstream``), any other repo is
served from the upstream hub through a ``MirrorRepo`` (for the Hugging Face API; with an ``ms_upstream``,
``--upstream-modelscope``, the same for the ModelScope API: ``find_modelscope``). Hashes of plain
files are remembered in ``ROOT/.hubget-cache/hashes.sqlite`` (or in memory when ROOT is read-only).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from hubget.errors import RepoNotFoundError
from hubget.models import RepoType
from hubget.server.folderrepo import FolderRepo
from hubget.server.gitrepo import GitRepo
from hubget.server.hashcache import HashCache
from hubget.server.hfcacherepo import HfCacheRepo
from hubget.server.mirrorrepo import MirrorRepo
from hubget.server.repo import CACHE_DIR_NAME, Repo
from hubget.server.upstream import Upstream

TYPE_DIRS: dict[str, str] = {"model": "models", "dataset": "datasets", "space": "spaces"}
HF_CACHE_PREFIX: dict[str, str] = {"model": "models", "dataset": "datasets", "space": "spaces"}
MIRROR_DIR_NAME = ".hubget-mirror"  # where `--upstream` keeps what it fetched (see hubget.api.mirror)
_ID_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def split_repo_id(repo_id: str) -> list[str]:
    parts = repo_id.split("/")
    if not 1 <= len(parts) <= 2 or not all(_ID_PART.match(p) for p in parts):
        raise RepoNotFoundError(f"invalid repo id: {repo_id!r}")
    return parts


def is_git_repo(path: Path) -> bool:
    if (path / ".git").exists():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


class Store:
    """Finds repos under ROOT (and in an HF cache) and keeps one Repo object per folder."""

    upstream: Upstream | None = None  # (class defaults: stores of other kinds have none)
    ms_upstream: Upstream | None = None

    def __init__(
        self,
        root: Path,
        *,
        hf_cache: Path | None = None,
        cache_dir: Path | None = None,
        upstream: Upstream | None = None,
        ms_upstream: Upstream | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.upstream = upstream
        self.ms_upstream = ms_upstream
        self._mirrored: dict[tuple[str, RepoType, str], MirrorRepo] = {}
        self.hf_cache = Path(os.path.realpath(hf_cache)) if hf_cache else None
        db_dir = cache_dir if cache_dir is not None else self.root / CACHE_DIR_NAME
        self.hashes = HashCache(db_dir / "hashes.sqlite" if os.access(self.root, os.W_OK) else None)
        self._repos: dict[Path, Repo] = {}
        self._lock = threading.Lock()

    def find(
        self, repo_type: RepoType, repo_id: str, *, upstream: bool = True, token: str | None = None
    ) -> Repo:
        """The repo, or RepoNotFoundError. ``upstream=False``: only repos on this machine; ``token``:
        the client's own token for the upstream hub (gated and private repos need it)."""
        if repo_type not in TYPE_DIRS:
            raise RepoNotFoundError(f"unknown repo type {repo_type!r}")
        parts = split_repo_id(repo_id)
        for folder in self._candidates(repo_type, parts):
            if self._usable(folder, single=len(parts) == 1):
                return self._repo_for(folder, repo_type, repo_id)
        if self.hf_cache is not None:
            folder = self.hf_cache / f"{HF_CACHE_PREFIX[repo_type]}--{'--'.join(parts)}"
            if (folder / "snapshots").is_dir() and self._inside(folder, self.hf_cache):
                return self._repo_for(folder, repo_type, repo_id, hf_cache=True)
        if self.upstream is not None and upstream:
            return self._mirror_for("hf", repo_type, repo_id).bound(token)
        raise RepoNotFoundError(f"repository {repo_id!r} ({repo_type}) not found")

    def find_modelscope(self, repo_type: RepoType, repo_id: str) -> Repo:
        """``find`` for the ModelScope API: a repo on this machine, else one of ``ms_upstream``."""
        try:
            return self.find(repo_type, repo_id, upstream=False)
        except RepoNotFoundError:
            if self.ms_upstream is None:
                raise
        split_repo_id(repo_id)
        return self._mirror_for("ms", repo_type, repo_id)

    def find_for(self, repo_type: RepoType, repo_id: str, token: str | None) -> Repo:
        """``find`` for a client presenting ``token`` (positional, for executors)."""
        return self.find(repo_type, repo_id, token=token)

    def list_repos(self) -> list[tuple[RepoType, str]]:
        """Every repo that ``find`` would serve (for listings and logs)."""
        found: set[tuple[RepoType, str]] = set()
        for repo_type, dirname in TYPE_DIRS.items():
            base = self.root / dirname
            for folder in _subdirs(base):
                if self._looks_like_repo(folder):
                    found.add((repo_type, _strip_git(folder.name)))  # type: ignore[arg-type]
                    continue
                for sub in _subdirs(folder):
                    found.add((repo_type, f"{folder.name}/{_strip_git(sub.name)}"))  # type: ignore[arg-type]
        for owner in _subdirs(self.root):
            if owner.name in TYPE_DIRS.values() or owner.name.startswith("."):
                continue
            for sub in _subdirs(owner):
                found.add(("model", f"{owner.name}/{_strip_git(sub.name)}"))
        if self.hf_cache is not None:
            for folder in _subdirs(self.hf_cache):
                prefix, _, rest = folder.name.partition("--")
                kinds = {v: k for k, v in HF_CACHE_PREFIX.items()}
                if prefix in kinds and rest and (folder / "snapshots").is_dir():
                    found.add((kinds[prefix], rest.replace("--", "/")))  # type: ignore[arg-type]
        return sorted(found)

    def _candidates(self, repo_type: RepoType, parts: list[str]) -> list[Path]:
        base = self.root / TYPE_DIRS[repo_type]
        rel = "/".join(parts)
        out = [base / rel, base / f"{rel}.git"]
        if repo_type == "model" and len(parts) == 2 and parts[0] not in TYPE_DIRS.values():
            out += [self.root / rel, self.root / f"{rel}.git"]
        return out

    def _usable(self, folder: Path, *, single: bool) -> bool:
        if not folder.is_dir() or not self._inside(folder, self.root):
            return False
        # ROOT/models/{name} may be an owner folder rather than a repo without owner.
        return self._looks_like_repo(folder) if single else True

    @staticmethod
    def _looks_like_repo(folder: Path) -> bool:
        """A folder is a repo (rather than an owner folder) if it is a git repo or holds a file."""
        if is_git_repo(folder):
            return True
        try:
            return any(child.is_file() for child in folder.iterdir())
        except OSError:
            return False

    @staticmethod
    def _inside(path: Path, root: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == root or root in real.parents

    def _repo_for(self, folder: Path, repo_type: RepoType, repo_id: str, *, hf_cache: bool = False) -> Repo:

        key = Path(os.path.realpath(folder))
        with self._lock:
            repo = self._repos.get(key)
            if repo is None or repo.repo_type != repo_type:
                if hf_cache:
                    repo = HfCacheRepo(key, repo_type, repo_id, self.hashes)
                elif is_git_repo(key):
                    repo = GitRepo(key, repo_type, repo_id)
                else:
                    repo = FolderRepo(key, repo_type, repo_id, self.hashes, allowed_root=self.root)
                self._repos[key] = repo
            return repo

    def _mirror_for(self, api: str, repo_type: RepoType, repo_id: str) -> MirrorRepo:
        upstream = self.upstream if api == "hf" else self.ms_upstream
        assert upstream is not None
        with self._lock:
            repo = self._mirrored.get((api, repo_type, repo_id))
            if repo is None:
                sub = repo_type if api == "hf" else f"{api}/{repo_type}"
                folder = self.root / MIRROR_DIR_NAME / sub / repo_id
                # (ModelScope's default branch is master)
                repo = MirrorRepo(upstream, repo_type, repo_id, folder, "main" if api == "hf" else "master")
                self._mirrored[(api, repo_type, repo_id)] = repo
            return repo

    def close(self) -> None:
        self.hashes.close()
        for upstream in (self.upstream, self.ms_upstream):
            if upstream is not None:
                upstream.close()


def _subdirs(base: Path) -> list[Path]:
    try:
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _strip_git(name: str) -> str:
    return name[: -len(".git")] if name.endswith(".git") else name
