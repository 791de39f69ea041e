"""What a Hugging Face cache holds, read the way huggingface_hub's ``scan_cache_dir()`` reads it.

One pass per repo folder with ``os.scandir``: refs, every snapshot's symlinks (kept at their first
hop, as huggingface_hub keeps them, so a repo blob that points into its cache-wide shared store
still counts as the repo's blob), and one ``stat`` per distinct blob. The numbers built from this
(``hubget.cache.scan``) are the ones ``scan_cache_dir()`` reports.

huggingface_hub 2.4 may keep Xet payloads in a cache-wide store ``{cache}/blobs/{xx}/{hash}``
(marked by ``.huggingface-shared-blobs``) with per-repo ``blobs/{etag}`` symlinks into it; hubget
reads that store for sizes and never deletes from it (``hf cache prune`` sweeps it).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from hubget.layouts.fsutil import list_dir
from hubget.layouts.hf_cache import blob_lock_path

SHARED_STORE = "blobs"
SHARED_STORE_MARKER = ".huggingface-shared-blobs"
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1_NAME = re.compile(r"^[0-9a-f]{40}$")
# Temp files beside the blobs: huggingface_hub's ``{etag}.incomplete`` (and ``{etag}.{uuid}.incomplete``),
# hubget's ``{etag}.hubget-partial``, its ``.json`` resume state and ``{etag}.{token}.hubget-partial``.
PARTIAL_MARKERS = (".incomplete", ".hubget-partial")


def hash_algo_of(etag: str) -> str | None:
    """The hash a blob's name is: sha256 (LFS files), git blob sha1 (the others), or None."""
    if SHA256_NAME.match(etag):
        return "sha256"
    if GIT_SHA1_NAME.match(etag):
        return "git-sha1"
    return None


def is_partial_name(name: str) -> bool:
    return name.endswith(".incomplete") or ".hubget-partial" in name


def partial_etag(name: str) -> str:
    """The etag a temp file in ``blobs/`` belongs to (its lock is that blob's lock)."""
    return name.split(".", 1)[0]


@dataclass
class HfFile:
    """One snapshot entry. Paths are kept as strings (a cache of 200 repos is thousands of entries:
    building Path objects was most of a scan's time)."""

    path: str  # inside the snapshot, with "/"
    link_s: str  # snapshots/{commit}/{path}
    blob_s: str  # the first symlink hop (absolute, normalised), or ``link_s`` when it is a plain file

    @property
    def link(self) -> Path:
        return Path(self.link_s)

    @property
    def blob(self) -> Path:
        return Path(self.blob_s)

    @property
    def etag(self) -> str:
        return os.path.basename(self.blob_s)


@dataclass
class HfRevision:
    commit: str
    path: Path
    files: list[HfFile]
    refs: set[str] = field(default_factory=set)


@dataclass
class HfRepo:
    cache_dir: Path
    path: Path
    repo_type: str
    repo_id: str
    revisions: list[HfRevision]
    refs: dict[str, str]  # ref name -> commit
    blob_stats: dict[str, os.stat_result]  # every blob a snapshot links to, by blob_s (stat follows links)
    problems: list[str] = field(default_factory=list)  # what scan_cache_dir() would call corrupted

    @property
    def folder(self) -> str:
        return self.path.name

    def lock_path(self, etag: str) -> Path:
        return blob_lock_path(self.cache_dir, self.folder, etag)

    def blobs_dir(self) -> Path:
        return self.path / "blobs"

    def revision(self, commit: str) -> HfRevision | None:
        return next((r for r in self.revisions if r.commit == commit), None)


def parse_folder_name(name: str) -> tuple[str, str] | None:
    """``models--org--name`` -> ("model", "org/name"); None for anything else."""
    prefix, sep, rest = name.partition("--")
    if not sep or prefix not in REPO_TYPES or not rest:
        return None
    return REPO_TYPES[prefix], rest.replace("--", "/")


def shared_store_dir(cache_dir: Path) -> Path | None:
    store = cache_dir / SHARED_STORE
    try:
        return store if (store / SHARED_STORE_MARKER).read_text() == "1\n" else None
    except OSError:
        return None


def shared_store_payloads(cache_dir: Path) -> dict[Path, int]:
    """Payload files of the shared store and their sizes (none when there is no marked store)."""
    store = shared_store_dir(cache_dir)
    out: dict[Path, int] = {}
    if store is None:
        return out
    for prefix in list_dir(store):
        if not re.fullmatch(r"[0-9a-f]{2}", prefix.name) or not prefix.is_dir(follow_symlinks=False):
            continue
        for entry in list_dir(Path(prefix.path)):
            if SHA256_NAME.match(entry.name) and entry.name.startswith(prefix.name):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_file(follow_symlinks=False):
                    out[Path(entry.path)] = st.st_size
    return out


def repo_folders(cache_dir: Path) -> list[Path]:
    """The repo folders of a cache, in name order (the shared store, locks and tags left out)."""
    out = []
    for entry in list_dir(cache_dir):
        if entry.name in IGNORED_NAMES or entry.name in (".locks", "CACHEDIR.TAG", SHARED_STORE):
            continue
        out.append(Path(entry.path))
    return sorted(out)


def read_repo(cache_dir: Path, path: Path) -> HfRepo | None:
    """One repo folder; None when the name is not a repo folder's at all."""
    parsed = parse_folder_name(path.name)
    if parsed is None or not path.is_dir():
        return None
    repo = HfRepo(cache_dir, path, parsed[0], parsed[1], [], {}, {})
    repo.refs = _read_refs(path / "refs", repo.problems)
    snapshots = path / "snapshots"
    if not snapshots.is_dir():
        repo.problems.append(f"no snapshots folder in {path}")
        return repo
    for entry in list_dir(snapshots):
        if entry.name in IGNORED_NAMES:
            continue
        if not entry.is_dir():
            repo.problems.append(f"a file among the snapshots: {entry.path}")
            continue
        files: list[HfFile] = []
        _walk_snapshot(entry.path, "", files)
        kept = []
        for f in files:
            st = repo.blob_stats.get(f.blob_s)
            if st is None:
                try:
                    st = os.stat(f.blob_s)
                except OSError:
                    repo.problems.append(f"blob missing (broken symlink): {f.blob_s}")
                    kept.append(f)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    continue  # huggingface_hub skips what is a folder once followed
                repo.blob_stats[f.blob_s] = st
            kept.append(f)
        repo.revisions.append(HfRevision(entry.name, Path(entry.path), kept))
    by_commit = {r.commit: r for r in repo.revisions}
    for name, commit in repo.refs.items():
        if commit in by_commit:
            by_commit[commit].refs.add(name)
        else:
            repo.problems.append(f"ref {name} names a commit that is not cached: {commit}")
    repo.revisions.sort(key=lambda r: r.commit)
    return repo


def read_cache(cache_dir: Path) -> list[HfRepo]:
    repos = []
    for path in repo_folders(cache_dir):
        repo = read_repo(cache_dir, path)
        if repo is not None:
            repos.append(repo)
    return repos


def partial_files(repo_path: Path) -> list[Path]:
    """Temp files of unfinished downloads in a repo's ``blobs/``."""
    return sorted(
        Path(e.path) for e in list_dir(repo_path / "blobs") if is_partial_name(e.name) and e.is_file()
    )


def revisions_named(repo: HfRepo, revision: str | None) -> list[HfRevision]:
    """The revisions ``revision`` names: a ref, a commit (or a prefix of one), or all when None."""
    if revision is None:
        return list(repo.revisions)
    commit = repo.refs.get(revision, revision)
    exact = [r for r in repo.revisions if r.commit == commit]
    if exact:
        return exact
    if len(revision) >= 7:
        return [r for r in repo.revisions if r.commit.startswith(revision)][:1]
    return []


def referenced_etags(repo: HfRepo) -> set[str]:
    return {f.etag for r in repo.revisions for f in r.files}


def _read_refs(refs_dir: Path, problems: list[str]) -> dict[str, str]:
    refs: dict[str, str] = {}
    if not refs_dir.exists():
        return refs
    if not refs_dir.is_dir():
        problems.append(f"refs is a file: {refs_dir}")
        return refs
    for dirpath, _dirs, names in os.walk(refs_dir):
        for name in names:
            if name in IGNORED_NAMES or name.startswith(".") and name.endswith(".tmp"):
                continue  # (hubget writes refs through a hidden temp file)
            full = os.path.join(dirpath, name)
            try:
                with open(full, encoding="utf-8") as f:
                    commit = f.read().strip()
            except OSError:
                continue
            refs[os.path.relpath(full, refs_dir).replace(os.sep, "/")] = commit
    return refs


def _walk_snapshot(folder: str, prefix: str, out: list[HfFile]) -> None:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if entry.is_symlink():
            try:
                target = os.readlink(entry.path)
            except OSError:
                continue
            out.append(HfFile(rel, entry.path, os.path.abspath(os.path.join(folder, target))))
        elif entry.is_dir():
            _walk_snapshot(entry.path, f"{rel}/", out)
        else:
            out.append(HfFile(rel, entry.path, entry.path))
