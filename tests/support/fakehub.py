"""A scripted Hugging Face hub on top of RangeServer: repo info, tree and resolve for one repo,
so tests can inject faults (corrupt bytes, redirects to another origin, 5xx...) per file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from hubget.hashing import git_blob_sha1
from tests.support.rangeserver import Fault, RangeServer


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith((".safetensors", ".bin", ".pt", ".gguf")) or len(data) > 10 * 1024 * 1024


@dataclass
class FakeHfRepo:
    server: RangeServer
    repo_id: str
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    revision: str = "main"
    etags: dict[str, str] = field(default_factory=dict)

    def publish(self) -> FakeHfRepo:
        api = f"/api/models/{self.repo_id}"
        siblings = [{"rfilename": p} for p in self.files]
        info = {"id": self.repo_id, "sha": self.commit, "siblings": siblings}
        self.server.add(f"{api}/revision/{self.revision}", json.dumps(info).encode())
        tree = []
        for path, data in self.files.items():
            entry: dict[str, object] = {
                "type": "file",
                "path": path,
                "size": len(data),
                "oid": git_blob_sha1(data),
            }
            headers = {"X-Repo-Commit": self.commit}
            if is_lfs(path, data):
                sha = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 130}
                headers.update(
                    {"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))}
                )
                self.etags[path] = sha
            else:
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
                self.etags[path] = git_blob_sha1(data)
            tree.append(entry)
            resolve = self.resolve_path(path)
            self.server.add(resolve, data, headers)
        self.server.add(f"{api}/tree/{self.commit}", json.dumps(tree).encode())
        return self

    def resolve_path(self, path: str, revision: str | None = None) -> str:
        return f"/{self.repo_id}/resolve/{revision or self.commit}/{path}"

    def redirect(self, path: str, location: str) -> None:
        """Answer this file's resolve URL with a 302 to ``location`` (e.g. another origin)."""
        self.server.fault(self.resolve_path(path), Fault("redirect", times=-1, status=302, location=location))
