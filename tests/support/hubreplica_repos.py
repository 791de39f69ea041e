"""Repos as the hub replica (tests/support/hubreplica.py) stores them: files with their git blob oid,
sha256, LFS pointer size and Xet hash; tree listings, repo info, gating."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.repos import git_blob_sha1, sha256_hex

LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".gguf",
    ".model",
    ".onnx",
    ".h5",
    ".msgpack",
    ".parquet",
)
POINTER_TEMPLATE = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def is_lfs_path(path: str, data: bytes) -> bool:
    """The hub's default .gitattributes tracks weights and archives with LFS; big files go there too."""
    return path.endswith(LFS_SUFFIXES) or len(data) > 10 * 1024 * 1024


def xet_hash_of(data: bytes) -> str:
    """A 64-hex content hash standing in for the Xet merkle hash (clients treat it as opaque)."""
    return hashlib.blake2b(data, digest_size=32, person=b"xet-file-hash").hexdigest()


@dataclass
class ReplicaFile:
    path: str
    data: bytes
    lfs: bool
    xet: bool  # served through the Xet bridge (has a xetHash); else plain LFS behind a CDN
    sha256: str = field(init=False)
    oid: str = field(init=False)  # git blob sha1: of the pointer file for LFS files
    xet_hash: str | None = field(init=False)
    pointer_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = sha256_hex(self.data)
        pointer = POINTER_TEMPLATE.format(oid=self.sha256, size=len(self.data)).encode()
        self.pointer_size = len(pointer)
        self.oid = git_blob_sha1(pointer if self.lfs else self.data)
        self.xet_hash = xet_hash_of(self.data) if self.lfs and self.xet else None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """What huggingface_hub names the cache blob: sha256 for LFS files, git blob sha1 for others."""
        return self.sha256 if self.lfs else self.oid

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        if self.xet_hash:
            entry["xetHash"] = self.xet_hash
        entry["path"] = self.path
        return entry


@dataclass
class ReplicaRepo:
    repo_id: str
    files: dict[str, ReplicaFile]
    repo_type: str = "model"
    branch: str = "main"
    commit: str = ""
    gated: bool = False  # files need an accepted token (repo info and tree stay public, as on the hub)
    private: bool = False  # everything needs an accepted token; others are told "not found"
    granted: set[str] = field(default_factory=set)  # tokens with access (gated or private)
    created: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1(f"{self.repo_type}/{self.repo_id}".encode())
            for path in sorted(self.files):
                digest.update(f"\0{path}\0{self.files[path].oid}".encode())
            self.commit = digest.hexdigest()

    @property
    def key(self) -> tuple[str, str]:
        return self.repo_type, self.repo_id

    @property
    def storage_id(self) -> str:
        """The 24-hex id the bridge URLs carry in place of the repo name."""
        return hashlib.sha1(f"{self.repo_type}/{self.repo_id}".encode()).hexdigest()[:24]

    def commit_for(self, revision: str) -> str | None:
        if revision in (self.branch, self.commit):
            return self.commit
        return None

    def directories(self) -> list[str]:
        dirs = {p.rsplit("/", i)[0] for p in self.files for i in range(1, p.count("/") + 1)}
        return sorted(dirs)

    def tree(self, subpath: str, recursive: bool) -> list[dict[str, Any]] | None:
        """Entries below ``subpath`` (None: no such folder). Directories carry a fake tree oid."""
        base = subpath.strip("/")
        if base and base not in self.directories():
            return None
        prefix = f"{base}/" if base else ""
        entries: list[tuple[str, dict[str, Any]]] = []
        for d in self.directories():
            rest = d[len(prefix) :]
            if d.startswith(prefix) and d != base and (recursive or "/" not in rest):
                tree_oid = hashlib.sha1(f"tree {d}".encode()).hexdigest()
                entries.append((d, {"type": "directory", "oid": tree_oid, "size": 0, "path": d}))
        for path, f in self.files.items():
            rest = path[len(prefix) :]
            if path.startswith(prefix) and (recursive or "/" not in rest):
                entries.append((path, f.tree_entry()))
        return [e for _, e in sorted(entries, key=lambda pe: pe[0])]

    def info(self, hub_url: str) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.created))
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        info: dict[str, Any] = {
            "_id": self.storage_id,
            "id": self.repo_id,
            "author": author,
            "sha": self.commit,
            "lastModified": stamp,
            "createdAt": stamp,
            "private": self.private,
            "gated": "manual" if self.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(self.files)],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        if self.repo_type == "model":
            info.update(modelId=self.repo_id, library_name="transformers", spaces=[])
        return info


def make_repo(
    repo_id: str,
    files: dict[str, bytes],
    *,
    repo_type: str = "model",
    xet: bool = True,
    lfs: Callable[[str, bytes], bool] = is_lfs_path,
    gated: bool = False,
    private: bool = False,
    granted: Iterable[str] = (),
    branch: str = "main",
) -> ReplicaRepo:
    """A repo as the hub stores it; with ``xet`` every LFS file is Xet-backed (has a xetHash)."""
    entries = {p: ReplicaFile(p, d, lfs=lfs(p, d), xet=xet) for p, d in files.items()}
    return ReplicaRepo(
        repo_id,
        entries,
        repo_type=repo_type,
        branch=branch,
        gated=gated,
        private=private,
        granted=set(granted),
    )
