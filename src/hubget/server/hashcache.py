"""Persistent cache of file hashes, so a served folder is hashed once and not on every request.

Keyed by (real path, size, mtime_ns, inode): any change to a file gives a new key, so a stale hash
is never served. Stored in SQLite (stdlib, safe when several server processes share a root).
Each algorithm is computed only when asked for: large files need sha256, small ones the git sha1.

New hashes are written in batches (every ``FLUSH_ROWS`` rows or ``FLUSH_SECONDS``, and by ``flush()``
at the end of a listing): one commit per file made a first listing of 2,000 small files take ~30 s,
nearly all of it waiting for the disk. Unwritten hashes are served from memory meanwhile; a process
that dies before a flush only loses work that is redone on the next request.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from hubget.hashing import READ_BLOCK, Hasher, git_blob_hasher

ALGOS = ("sha256", "git_sha1")
_Key = tuple[str, int, int, int]
FLUSH_ROWS = 500
FLUSH_SECONDS = 0.5


def _hash_file(path: Path, algo: str, size: int) -> str:
    h: Hasher = hashlib.sha256() if algo == "sha256" else git_blob_hasher(size)
    buf = bytearray(READ_BLOCK)
    view = memoryview(buf)
    read = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            read += n
    if read != size:
        raise OSError(f"{path} changed while it was hashed")
    return h.hexdigest()


class HashCache:
    """Hashes of files by (path, size, mtime_ns, inode). ``db_path=None`` keeps them in memory only."""

    def __init__(self, db_path: Path | None) -> None:
        self._lock = threading.Lock()
        self._memory: dict[tuple[_Key, str], str] = {}
        # One lock per file being hashed, so concurrent first requests hash a big file once.
        self._inflight: dict[str, threading.Lock] = {}
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, int, int, int, str, str]] = []
        self._pending_since = 0.0
        if db_path is not None:
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(db_path), check_same_thread=False, timeout=30)
                # WAL: readers in other worker processes do not block a batch being written, and a
                # commit needs no fsync of the main file. The table is a cache, so NORMAL durability
                # (a power cut may drop the last batches) is enough.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, mtime_ns INTEGER,"
                    " ino INTEGER, algo TEXT, digest TEXT, PRIMARY KEY (path, algo))"
                )
                self._db.commit()
            except (OSError, sqlite3.Error):
                # A read-only root still serves: hashes then live for the process only.
                self._db = None

    def sha256(self, path: Path) -> str:
        return self.get(path, "sha256")

    def git_sha1(self, path: Path) -> str:
        return self.get(path, "git_sha1")

    def get(self, path: Path, algo: str) -> str:
        """The ``algo`` digest of ``path``, computed (and remembered) when the file is new or changed."""
        if algo not in ALGOS:
            raise ValueError(f"unknown hash algorithm {algo!r}")
        st = os.stat(path)
        key: _Key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if (hit := self._lookup(key, algo)) is not None:
            return hit
        with self._lock:
            file_lock = self._inflight.setdefault(key[0], threading.Lock())
        with file_lock:
            if (hit := self._lookup(key, algo)) is not None:
                return hit
            digest = _hash_file(path, algo, st.st_size)
            st_after = os.stat(path)
            if (st_after.st_size, st_after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise OSError(f"{path} changed while it was hashed")
            self._store(key, algo, digest)
        with self._lock:
            self._inflight.pop(key[0], None)
        return digest

    def _lookup(self, key: _Key, algo: str) -> str | None:
        with self._lock:
            if (hit := self._memory.get((key, algo))) is not None:
                return hit
            if self._db is None:
                return None
            row = self._db.execute(
                "SELECT digest FROM hashes WHERE path=? AND size=? AND mtime_ns=? AND ino=? AND algo=?",
                (*key, algo),
            ).fetchone()
            if row:
                self._memory[(key, algo)] = row[0]
                return str(row[0])
        return None

    def _store(self, key: _Key, algo: str, digest: str) -> None:
        with self._lock:
            self._memory[(key, algo)] = digest
            if self._db is None:
                return
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((*key, algo, digest))
            if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._pending_since >= FLUSH_SECONDS:
                self._flush_locked()

    def flush(self) -> None:
        """Write the hashes computed since the last write (one transaction)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._db is None or not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            with self._db:  # one transaction: commits, or rolls back on error
                self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            pass  # still in memory for this process; another one recomputes them

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._db is not None:
                self._db.close()
                self._db = None
