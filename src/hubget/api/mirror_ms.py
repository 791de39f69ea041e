"""`hubget serve ROOT --upstream-modelscope URL`: the ModelScope side of the pull-through mirror.

The same machinery as the Hugging Face side (``hubget.api.mirror.Mirror``: revisions with a TTL,
listings kept per commit, one fill per blob streamed to every client, ``--max-size``), in a store of
its own, ``ROOT/.hubget-mirror/ms/{hub,meta}``; only where the metadata comes from differs:

- a branch or tag is resolved by listing it (``repo/files?Revision=master``): its entries name the
  commit (``Revision``) and carry every file's size and sha256, so one call gives both the commit and
  its listing;
- a file's bytes come straight from its ``repo?Revision={commit}&FilePath=`` URL (no redirect to
  locate), fetched by the engine (parallel ranges, resume state) and checked against the sha256.

Only what upstream serves without a token is mirrored (ModelScope repos are public or private; a
private one needs ``MODELSCOPE_API_TOKEN``, which the mirror never forwards).
"""

from __future__ import annotations

from hubget.api.mirror import Mirror
from hubget.api.mirror_access import PUBLIC
from hubget.api.mirror_meta import StoredFile
from hubget.errors import ProtocolError
from hubget.models import RemoteFile, RepoRef
from hubget.sources.modelscope import ModelScopeSource, file_url
from hubget.transfer.http import HttpClient


class ModelScopeMirror(Mirror):
    store_subdir = "ms"
    locates_blobs = False
    metric_labels = {"api": "modelscope"}

    source: ModelScopeSource

    def _make_source(self, endpoint: str, token: str | None, client: HttpClient) -> ModelScopeSource:
        return ModelScopeSource(endpoint, token or "", client=client)

    def _info(self, ref: RepoRef, token: str | None) -> str:
        """List ``ref``'s revision: the commit its entries name, and its listing kept with it."""
        assert ref.revision is not None
        self._count("upstream_revision")
        commit, files = self._listing(ref, ref.revision)
        self.meta.set_access(ref.repo_type, ref.repo_id, PUBLIC)
        if self.meta.tree(ref.repo_type, ref.repo_id, commit) is None:
            self.meta.set_tree(ref.repo_type, ref.repo_id, commit, files)
        return commit

    def _list(self, ref: RepoRef, commit: str, token: str | None) -> list[StoredFile]:
        return self._listing(ref, commit)[1]

    def _listing(self, ref: RepoRef, revision: str) -> tuple[str, list[StoredFile]]:
        commit, listed = self.source.listing(ref, revision)
        if commit is None:
            raise ProtocolError(
                f"{ref.repo_id}@{revision}: upstream's listing names no commit (Revision); the mirror "
                "keeps revisions by commit"
            )
        stored = []
        for f in listed:
            if not f.sha256:  # (the hub lists a sha256 for every file; the fill verifies it)
                raise ProtocolError(f"{ref.repo_id}@{revision}: upstream lists {f.path} without a sha256")
            stored.append(StoredFile(f.path, f.size, f.sha256, None))
        return commit, stored

    def _remote(self, ref: RepoRef, commit: str, f: StoredFile) -> RemoteFile:
        return RemoteFile(
            path=f.path,
            size=f.size,
            url=file_url(self.endpoint, ref.repo_type, ref.repo_id, commit, f.path),
            sha256=f.sha256,
            headers=self.source.headers(),
        )
