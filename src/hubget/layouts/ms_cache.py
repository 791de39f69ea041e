"""The ModelScope cache, as the modelscope SDK (1.38+, with modelscope-hub) writes and reads it.

Plain files (no blobs, no symlinks, no index files) at
``{root}/{type}s/{owner}--{name}/snapshots/{revision}/{path}``, where ``{root}`` is the ``cache_dir``
argument, else ``$MODELSCOPE_CACHE``, else ``~/.cache/modelscope``, and ``{revision}`` is the
revision name asked for (``master`` by default). An older layout is reused when one holds files,
probed in the SDK's order (see ``repo_folder``). ``local_files_only=True`` takes any non-empty
snapshot folder as complete: ``master``, then ``main``, then the only one there is.

The SDK re-hashes every cached file on each call; hubget instead keeps, per folder, a record of
(size, mtime_ns, sha256) for each file it verified, outside the folder the user sees, and hashes a
file again only when its size or mtime changed. Partial downloads live in a hidden folder beside
the snapshot, never among the finished files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

from hubget import config
from hubget.errors import OfflineError, UsageError
from hubget.hashing import hash_file
from hubget.layouts.fsutil import atomic_write_text
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.paths import join_inside, safe_relpath

DEFAULT_REVISION = "master"
PARTIAL_DIR = ".hubget-partial"
RECORDS_DIR = Path(".hubget") / "verified"
RECORD_FLUSH_SECONDS = 1.0
# modelscope-hub names its per-file download lock after this key; hubget takes the same lock so the
# SDK and hubget never write the same file at once.
SDK_LOCK_KEY = "modelscope-hub-download-lock-v2"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else config.ms_cache()


def _segment(repo_type: str) -> str:
    if repo_type not in ("model", "dataset"):
        raise UsageError(f"the ModelScope cache holds models and datasets, not {repo_type!r}")
    return f"{repo_type}s"


def _split(repo_id: str) -> tuple[str, str]:
    owner, sep, name = repo_id.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise UsageError(f"not a ModelScope repo id (expected owner/name): {repo_id!r}")
    safe_relpath(repo_id)
    return owner, name


def _non_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def repo_cache_dir(root: Path, repo_id: str, repo_type: str) -> Path:
    """``{root}/{type}s/{owner}--{name}``: the folder holding ``snapshots/``."""
    return root / _segment(repo_type) / repo_id.replace("/", "--")


def legacy_folder(root: Path, repo_id: str, repo_type: str) -> Path | None:
    """The older-layout folder the SDK would use instead of ``snapshots/{revision}``, if any.

    Two probes in the order the SDK runs them: modelscope's ``find_reusable_legacy_repo_dir``
    (only when neither current-layout folder holds anything) and then modelscope-hub's
    ``_find_legacy_repo_dir``. Dots in a name were written as ``___`` by older SDKs.
    """
    owner, name = _split(repo_id)
    segment = _segment(repo_type)
    safe_name = name.replace(".", "___")
    if not _non_empty_dir(repo_cache_dir(root, repo_id, repo_type)) and not _non_empty_dir(
        root / segment / owner / safe_name
    ):
        for path in (
            root / owner / name,
            root / owner / safe_name,
            root / "hub" / owner / name,
            root / "hub" / owner / safe_name,
            root / segment / owner / name,
        ):
            if _non_empty_dir(path):
                return path
    for path in (root / segment / owner / safe_name, root / "hub" / segment / owner / safe_name):
        if _non_empty_dir(path):
            return path
    return None


def repo_folder(root: Path, repo_id: str, repo_type: str, revision: str | None) -> Path:
    """Where the SDK puts (and looks for) this revision's files when downloading."""
    legacy = legacy_folder(root, repo_id, repo_type)
    if legacy is not None:
        return legacy
    return repo_cache_dir(root, repo_id, repo_type) / "snapshots" / (revision or DEFAULT_REVISION)


def cached_folder(
    ref: RepoRef, cache_dir: str | Path | None = None, local_dir: str | Path | None = None
) -> Path:
    """The folder ``snapshot_download(local_files_only=True)`` returns, or OfflineError."""
    if local_dir is not None:
        if _non_empty_dir(Path(local_dir)):
            return Path(local_dir)
        raise OfflineError(f"offline mode: {local_dir} holds no files")
    root = cache_root(cache_dir)
    legacy = legacy_folder(root, ref.repo_id, ref.repo_type)
    if legacy is not None:
        return legacy
    snapshots = repo_cache_dir(root, ref.repo_id, ref.repo_type) / "snapshots"
    if ref.revision:
        if _non_empty_dir(snapshots / ref.revision):
            return snapshots / ref.revision
    else:
        for name in ("master", "main"):
            if _non_empty_dir(snapshots / name):
                return snapshots / name
        candidates = sorted(p for p in snapshots.iterdir() if _non_empty_dir(p)) if snapshots.is_dir() else []
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            names = ", ".join(p.name for p in candidates[:10])
            raise OfflineError(
                f"offline mode: {ref.repo_id} has several cached revisions ({names}); pass a revision"
            )
    raise OfflineError(
        f"offline mode: {ref.repo_type} {ref.repo_id}@{ref.revision or DEFAULT_REVISION} is not in {root}"
    )


def sdk_lock_path(root: Path, repo_id: str, repo_type: str, path: str) -> Path:
    """The lock file modelscope-hub holds while it downloads ``path`` of this repo."""
    key = "\0".join((SDK_LOCK_KEY, "file", repo_type, repo_id, path))
    return root / ".lock" / f"file_{hashlib.sha256(key.encode('utf-8')).hexdigest()}.lock"


class VerifiedRecords:
    """(size, mtime_ns, sha256) of the files hubget verified in one folder, kept in a JSON file.

    Losing it costs one re-hash, never a wrong answer: a record only counts when size and mtime
    still match the file on disk.
    """

    def __init__(self, folder: Path, store_dir: Path) -> None:
        self.folder = folder
        key = hashlib.sha256(os.path.abspath(folder).encode("utf-8", "surrogatepass")).hexdigest()[:40]
        self.path = store_dir / f"{key}.json"
        self._lock = threading.Lock()
        self._records: dict[str, list] | None = None
        self._dirty: dict[str, list] = {}
        self._last_flush = 0.0

    def _load(self) -> dict[str, list]:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict) or data.get("folder") != os.path.abspath(self.folder):
            return {}
        return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 3}

    def recorded(self, relpath: str) -> tuple[int, int, str | None] | None:
        """(size, mtime_ns, sha256) as recorded when hubget last verified ``relpath``, if it did."""
        with self._lock:
            record = self._load().get(relpath)
        return None if record is None else (record[0], record[1], record[2])

    def matches(self, relpath: str, size: int, mtime_ns: int, sha256: str | None) -> bool:
        with self._lock:
            record = self._load().get(relpath)
        return record is not None and record == [size, mtime_ns, sha256]

    def add(self, relpath: str, size: int, mtime_ns: int, sha256: str | None) -> None:
        with self._lock:
            entry = [size, mtime_ns, sha256]
            if self._load().get(relpath) == entry:
                return
            self._load()[relpath] = entry
            self._dirty[relpath] = entry
            due = time.monotonic() - self._last_flush >= RECORD_FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        """Merge with what other processes wrote meanwhile, then replace the file atomically."""
        with self._lock:
            if not self._dirty:
                return
            merged = self._read()
            merged.update(self._dirty)
            body = json.dumps(
                {"folder": os.path.abspath(self.folder), "files": merged}, separators=(",", ":")
            )
            try:
                atomic_write_text(self.path, body)
            except OSError:
                return  # a read-only cache costs re-hashing next time, nothing else
            self._records = merged
            self._dirty.clear()
            self._last_flush = time.monotonic()


class _PlainFilesLayout:
    """Files at ``{folder}/{path}``, verified records kept elsewhere, partials in a hidden folder."""

    def __init__(self, ref: RepoRef, folder: Path, partial_dir: Path, root: Path) -> None:
        self.ref = ref
        self.folder = folder
        self.partial_dir = partial_dir
        self.root = root
        self.records = VerifiedRecords(folder, root / RECORDS_DIR)

    def lock_path(self, file: RemoteFile) -> Path:
        return sdk_lock_path(self.root, self.ref.repo_id, self.ref.repo_type, file.path)

    def partial_path(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        """Named by path and content: a file resumes under any revision as long as its bytes are the
        same, and two paths with the same content never share a temp file."""
        key = f"{file.path}\0{file.sha256 or ''}".encode("utf-8", "surrogatepass")
        return self.partial_dir / hashlib.sha256(key).hexdigest()

    # Layout protocol
    def target(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        return join_inside(self.folder, safe_relpath(file.path))

    def is_complete(self, snapshot: Snapshot, file: RemoteFile) -> bool:
        dest = self.target(snapshot, file)
        try:
            st = dest.lstat()
        except OSError:
            return False
        if not dest.is_file() or dest.is_symlink():
            return False
        if file.size is not None and st.st_size != file.size:
            return False
        if self.records.matches(file.path, st.st_size, st.st_mtime_ns, file.sha256):
            return True
        if file.sha256 is None:
            return file.size is not None  # nothing to verify against but the size, as the SDK does
        # Placed by the SDK, by hand, or changed since: trust it only if its hash matches, once.
        if hash_file(dest, "sha256") != file.sha256:
            return False
        self.records.add(file.path, st.st_size, st.st_mtime_ns, file.sha256)
        return True

    def commit(self, snapshot: Snapshot, file: RemoteFile) -> None:
        st = self.target(snapshot, file).stat()
        self.records.add(file.path, st.st_size, st.st_mtime_ns, file.sha256)

    def finalize(self, snapshot: Snapshot) -> Path:
        self.records.flush()
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.partial_dir.rmdir()  # only when empty: an unfinished file keeps its partial
        return self.folder

    def discard_partials(self) -> None:
        shutil.rmtree(self.partial_dir, ignore_errors=True)


class MsCacheLayout(_PlainFilesLayout):
    """The modelscope SDK's cache: ``snapshots/{revision}`` or a reused older-layout folder."""

    def __init__(self, ref: RepoRef, cache_dir: str | Path | None = None) -> None:
        root = cache_root(cache_dir)
        folder = repo_folder(root, ref.repo_id, ref.repo_type, ref.revision)
        if legacy_folder(root, ref.repo_id, ref.repo_type) is None:
            partial_dir = repo_cache_dir(root, ref.repo_id, ref.repo_type) / PARTIAL_DIR
        else:
            partial_dir = folder / PARTIAL_DIR
        super().__init__(ref, folder, partial_dir, root)


class MsLocalDirLayout(_PlainFilesLayout):
    """``snapshot_download(local_dir=...)``: the repo's files directly under ``local_dir``."""

    def __init__(self, ref: RepoRef, local_dir: str | Path, cache_dir: str | Path | None = None) -> None:
        folder = Path(local_dir).expanduser()
        super().__init__(ref, folder, folder / PARTIAL_DIR, cache_root(cache_dir))
