"""What a ModelScope cache holds (PROTOCOLS.md §2, ``hubget.layouts.ms_cache``).

The SDK (1.38+) keeps plain files at ``{root}/{models,datasets}/{owner}--{name}/snapshots/{revision}/``,
and older SDKs at ``{root}/hub/[models/]{owner}/{name}`` (dots in the name written ``___``), with
``.msc``/``.mdl``/``.mv`` index files beside them. Neither layout records a file's hash: only hubget
does, in ``{root}/.hubget/verified/`` (``VerifiedRecords``), for the files it verified itself.

Temp files are left out of the snapshot and listed apart: the SDK's ``{file}.incomplete`` and
``{file}.parallel_tmp`` (written in place, then renamed over ``{file}``), and hubget's
``.hubget-partial/`` folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hubget.layouts.fsutil import list_dir
from hubget.layouts.ms_cache import PARTIAL_DIR, RECORDS_DIR, VerifiedRecords

SEGMENTS = {"models": "model", "datasets": "dataset"}
SDK_PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")
LEGACY_INDEX_FILES = frozenset({".msc", ".mdl", ".mv"})
SKIPPED_DIRS = frozenset({PARTIAL_DIR, "._____temp", ".git"})
LEGACY_REVISION = "(legacy)"


@dataclass
class MsFile:
    path: str  # inside the snapshot, with "/"
    file: Path
    stat: os.stat_result


@dataclass
class MsRevision:
    name: str  # the revision folder's name (master, a tag, a commit), or LEGACY_REVISION
    path: Path
    files: list[MsFile]
    partials: list[Path] = field(default_factory=list)


@dataclass
class MsRepo:
    root: Path
    path: Path  # {root}/models/{owner}--{name}, or the legacy folder itself
    repo_type: str
    repo_id: str
    revisions: list[MsRevision]
    legacy: bool = False
    hubget_partials: list[Path] = field(default_factory=list)  # {repo}/.hubget-partial/*

    def records(self, revision: MsRevision) -> VerifiedRecords:
        """hubget's (size, mtime_ns, sha256) records of the files it verified in this folder."""
        return VerifiedRecords(revision.path, self.root / RECORDS_DIR)


def read_cache(root: Path) -> list[MsRepo]:
    repos: list[MsRepo] = []
    for segment, repo_type in SEGMENTS.items():
        for entry in list_dir(root / segment):
            if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
                continue
            if "--" in entry.name and (Path(entry.path) / "snapshots").is_dir():
                repos.append(_read_current(root, Path(entry.path), repo_type))
            else:  # {root}/models/{owner}/{name}: an older layout
                repos.extend(_read_legacy_owner(root, Path(entry.path), repo_type))
    hub = root / "hub"
    for entry in list_dir(hub):
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        if entry.name in SEGMENTS:
            for owner in list_dir(Path(entry.path)):
                if owner.is_dir(follow_symlinks=False) and not owner.name.startswith("."):
                    repos.extend(_read_legacy_owner(root, Path(owner.path), SEGMENTS[entry.name]))
        else:
            repos.extend(_read_legacy_owner(root, Path(entry.path), "model"))
    repos.sort(key=lambda r: (r.repo_type, r.repo_id.lower(), str(r.path)))
    return repos


def _read_current(root: Path, path: Path, repo_type: str) -> MsRepo:
    owner, _, name = path.name.partition("--")
    repo = MsRepo(root, path, repo_type, f"{owner}/{name}", [])
    for entry in list_dir(path / "snapshots"):
        if entry.is_dir(follow_symlinks=False):
            repo.revisions.append(_read_revision(entry.name, Path(entry.path)))
    repo.revisions.sort(key=lambda r: r.name)
    repo.hubget_partials = sorted(Path(e.path) for e in list_dir(path / PARTIAL_DIR) if e.is_file())
    return repo


def _read_legacy_owner(root: Path, owner_dir: Path, repo_type: str) -> list[MsRepo]:
    out = []
    for entry in list_dir(owner_dir):
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        folder = Path(entry.path)
        revision = _read_revision(LEGACY_REVISION, folder)
        if not revision.files and not revision.partials:
            continue
        repo_id = f"{owner_dir.name}/{entry.name.replace('___', '.')}"
        repo = MsRepo(root, folder, repo_type, repo_id, [revision], legacy=True)
        repo.hubget_partials = sorted(Path(e.path) for e in list_dir(folder / PARTIAL_DIR) if e.is_file())
        out.append(repo)
    return out


def _read_revision(name: str, folder: Path) -> MsRevision:
    revision = MsRevision(name, folder, [])
    _walk(folder, "", revision, top=True)
    revision.files.sort(key=lambda f: f.path)
    return revision


def _walk(folder: Path, prefix: str, revision: MsRevision, *, top: bool) -> None:
    for entry in list_dir(folder):
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in SKIPPED_DIRS:
                _walk(Path(entry.path), f"{prefix}{entry.name}/", revision, top=False)
            continue
        if top and entry.name in LEGACY_INDEX_FILES:
            continue
        if entry.name.endswith(SDK_PARTIAL_SUFFIXES):
            revision.partials.append(Path(entry.path))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.is_file(follow_symlinks=False):
            revision.files.append(MsFile(f"{prefix}{entry.name}", Path(entry.path), st))


def sdk_partial_target(partial: Path) -> Path:
    """The finished file an SDK temp file becomes (``x.bin.incomplete`` -> ``x.bin``)."""
    for suffix in SDK_PARTIAL_SUFFIXES:
        if partial.name.endswith(suffix):
            return partial.with_name(partial.name[: -len(suffix)])
    return partial
