"""The Hugging Face cache that huggingface_hub and transformers read (see PROTOCOLS.md §1).

{cache}/models--{org}--{name}/blobs/{etag}
                             /snapshots/{commit}/{path} -> ../../blobs/{etag}
                             /refs/{revision}   (the commit, when revision is a branch or tag)
{cache}/.locks/models--{org}--{name}/{etag}.lock
"""

from __future__ import annotations

import stat
from pathlib import Path

from hubget import config
from hubget.layouts.fsutil import atomic_write_text, relative_symlink
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.paths import join_inside, safe_relpath

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)


def repo_folder_name(repo_id: str, repo_type: str) -> str:
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def blob_lock_path(cache_dir: Path, repo_folder: str, etag: str) -> Path:
    """The lock huggingface_hub and hubget hold while they write ``blobs/{etag}`` of ``repo_folder``."""
    return cache_dir / ".locks" / repo_folder / f"{etag}.lock"


class HfCacheLayout:
    # ``commit`` may run on the engine's finisher threads, each file as soon as its blob is in place.
    commit_when_placed = True

    def __init__(self, ref: RepoRef, cache_dir: Path | str | None = None) -> None:
        self.ref = ref
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else config.hf_hub_cache()
        self.repo_dir = self.cache_dir / repo_folder_name(ref.repo_id, ref.repo_type)
        self._folders: set[Path] = set()  # snapshot folders made by this layout (one mkdir each)
        self._checked: set[Path] = set()  # folders join_inside found to be no symlink

    # where things go
    def blob(self, file: RemoteFile) -> Path:
        return self.repo_dir / "blobs" / file.etag

    def lock_path(self, file: RemoteFile) -> Path:
        return blob_lock_path(self.cache_dir, self.repo_dir.name, file.etag)

    def snapshot_dir(self, commit: str) -> Path:
        return self.repo_dir / "snapshots" / commit

    def pointer(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        return join_inside(self.snapshot_dir(snapshot.commit), safe_relpath(file.path), self._checked)

    # Layout protocol
    def target(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        return self.blob(file)

    def is_complete(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        blob = self.blob(file)
        try:
            st = blob.lstat()
        except OSError:
            return False
        # Blobs are named by their hash and only ever renamed into place after verification; a
        # symlink or anything else hubget did not put there is not trusted (it gets replaced).
        if not stat.S_ISREG(st.st_mode):
            return False
        return file.size is None or st.st_size == file.size

    def commit(self, snapshot: Snapshot, file: RemoteFile) -> None:
        link = self.pointer(snapshot, file)
        # snapshots/{commit}/{path} -> ../../blobs/{etag}, one "../" more per folder of the path
        # (what os.path.relpath gives, without its getcwd and path splitting for every file).
        rel = "../" * (file.path.count("/") + 2) + f"blobs/{file.etag}"
        folder = link.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        relative_symlink(self.blob(file), link, rel, parent_ready=True)

    def finalize(self, snapshot: Snapshot) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tag = self.cache_dir / "CACHEDIR.TAG"
        if not tag.exists():
            try:
                tag.write_text(CACHEDIR_TAG)
            except OSError:
                pass
        revision = self.ref.revision or "main"
        if revision != snapshot.commit:
            atomic_write_text(self.repo_dir / "refs" / revision, snapshot.commit)
        folder = self.snapshot_dir(snapshot.commit)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def mark_missing(self, commit: str, path: str) -> None:
        """Record, as huggingface_hub does, that the hub said ``path`` does not exist."""
        marker = join_inside(self.repo_dir / ".no_exist" / commit, safe_relpath(path))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    # offline
    def cached_commit(self, revision: str | None) -> str | None:
        revision = revision or "main"
        if len(revision) == 40 and (self.snapshot_dir(revision)).is_dir():
            return revision
        try:
            return (self.repo_dir / "refs" / revision).read_text().strip() or None
        except OSError:
            return None
