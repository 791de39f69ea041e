"""What a staged repo holds: ``PREFIX/.hubget/manifest.json`` beside the files ``PREFIX/<path>``.

The manifest names the commit, the revisions it was staged as, and per file its size, sha256, git
blob sha1 and whether the hub keeps it in LFS. It lists only files whose object is complete and
verified, so a rerun skips them and the server answers listings from it without listing the bucket.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hubget.errors import ProtocolError
from hubget.folderfiles import pointer_sha1 as lfs_pointer_sha1
from hubget.paths import safe_relpath

META_DIR = ".hubget"
MANIFEST_NAME = f"{META_DIR}/manifest.json"
UPLOADS_DIR = f"{META_DIR}/uploads"
FORMAT = 1

__all__ = ["MANIFEST_NAME", "META_DIR", "UPLOADS_DIR", "Manifest", "ManifestFile", "lfs_pointer_sha1"]


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str
    git_sha1: str  # of the content, or of the LFS pointer for an LFS file
    lfs: bool


@dataclass
class Manifest:
    repo_id: str
    repo_type: str
    commit: str
    revisions: list[str] = field(default_factory=list)  # names it was staged as ("main", "v1.0")
    source: str = ""  # the endpoint it came from
    staged_at: float = field(default_factory=time.time)
    files: dict[str, ManifestFile] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "format": FORMAT,
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "commit": self.commit,
            "revisions": self.revisions,
            "source": self.source,
            "staged_at": self.staged_at,
            "files": [asdict(f) for f in sorted(self.files.values(), key=lambda f: f.path)],
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT:
                raise ProtocolError(f"manifest format {body.get('format')!r} is not {FORMAT}")
            files = {}
            for f in body["files"]:
                item = ManifestFile(
                    path=safe_relpath(str(f["path"])),
                    size=int(f["size"]),
                    sha256=str(f["sha256"]),
                    git_sha1=str(f["git_sha1"]),
                    lfs=bool(f["lfs"]),
                )
                files[item.path] = item
            return cls(
                repo_id=str(body["repo_id"]),
                repo_type=str(body["repo_type"]),
                commit=str(body["commit"]),
                revisions=[str(r) for r in body.get("revisions", [])],
                source=str(body.get("source", "")),
                staged_at=float(body.get("staged_at", 0.0)),
                files=files,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"unreadable manifest: {exc}") from None
