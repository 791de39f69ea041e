"""`--max-size`: the mirror's blobs kept under a byte budget, least recently used evicted first.

The time of last use is the blob's mtime (touched when it is served, at most once a minute per
blob), so a restart knows it too. An evicted blob's snapshot links go with it; the listing stays,
and the blob is fetched again the next time a client wants it. The blob just fetched is never the
one evicted, and a blob being sent keeps its bytes for that answer (an open file outlives its name).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from hubget.errors import UsageError

log = logging.getLogger("hubget.serve")
TOUCH_EVERY = 60.0
_BLOB = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS.update({"KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40})


def parse_size(text: str) -> int:
    """``"500G"``, ``"1.5T"``, ``"800MiB"``, ``"1000000"``: bytes (K/M/G/T are powers of 1000)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?)?B?\s*", text.upper())
    if not m:
        raise UsageError(f"not a size: {text!r} (examples: 500G, 1.5T, 800MiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


class BlobBudget:
    """``shared``: other processes (``--workers``) fetch and evict blobs in the same folders too, so
    what is on disk is read again before each eviction (their last uses known to the minute, by mtime)."""

    def __init__(self, cache_dir: Path | None, max_bytes: int, *, shared: bool = False) -> None:
        self.dirs: list[Path] = []
        self.max_bytes = max_bytes
        self.shared = shared
        self._lock = threading.Lock()
        self._blobs: dict[Path, tuple[int, float]] = {}  # blob -> (size, last use)
        self._touched: dict[Path, float] = {}  # blob -> when its mtime was last set
        self.evicted = 0  # blobs evicted since the start
        if cache_dir is not None:
            self.scan(cache_dir)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for size, _ in self._blobs.values())

    def scan(self, cache_dir: Path) -> None:
        """Count the blobs of an HF cache folder too (at the start: the folders share the budget)."""
        self.dirs.append(cache_dir)
        found = _on_disk([cache_dir])
        with self._lock:
            self._blobs.update(found)

    def _rescan(self) -> None:
        """What is on disk now, with the last uses this process knows of where they are newer."""
        found = _on_disk(self.dirs)
        with self._lock:
            for blob, (size, when) in found.items():
                known = self._blobs.get(blob)
                if known is not None and known[1] > when:
                    found[blob] = (size, known[1])
            self._blobs = found

    def used(self, blob: Path) -> None:
        """The blob was served: it is the most recently used (on disk too, now and then)."""
        now = time.time()
        with self._lock:
            size, _ = self._blobs.get(blob, (-1, 0.0))
            self._blobs[blob] = (max(size, 0), now)
            touch = now - self._touched.get(blob, 0.0) >= TOUCH_EVERY
            if touch:
                self._touched[blob] = now
        if touch or size < 0:
            with contextlib.suppress(OSError):
                os.utime(blob, (now, now))
                if size < 0:  # not known yet (fetched by another process)
                    with self._lock:
                        self._blobs[blob] = (blob.stat().st_size, now)

    def added(self, blob: Path, busy: set[Path], used_at: float | None = None) -> None:
        """A blob was fetched: evict what the budget no longer holds (never ``blob``, nor ``busy``).

        ``used_at``: when a client last asked for it (the fill's latest request), not when its fill
        ended: a fill that ends late must not make its blob look newer than one served meanwhile."""
        if self.shared:
            self._rescan()
        with contextlib.suppress(OSError):
            size = blob.stat().st_size
            with self._lock:
                _, known = self._blobs.get(blob, (0, 0.0))
                self._blobs[blob] = (size, max(known, time.time() if used_at is None else used_at))
        while True:
            with self._lock:
                total = sum(s for s, _ in self._blobs.values())
                if total <= self.max_bytes:
                    return
                candidates = [(t, p) for p, (_, t) in self._blobs.items() if p != blob and p not in busy]
                if not candidates:
                    return
                _, victim = min(candidates)
                size, _ = self._blobs.pop(victim)
                self._touched.pop(victim, None)
            self._evict(victim, size)

    def _evict(self, blob: Path, size: int) -> None:
        target = os.path.realpath(blob)
        for dirpath, _, filenames in os.walk(blob.parent.parent / "snapshots"):
            for name in filenames:
                link = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    if os.path.islink(link) and os.path.realpath(link) == target:
                        os.unlink(link)
        with contextlib.suppress(FileNotFoundError):
            blob.unlink()
        self.evicted += 1
        log.info("mirror: evicted %s (%d bytes, least recently used) to stay under --max-size", blob, size)


def _on_disk(cache_dirs: list[Path]) -> dict[Path, tuple[int, float]]:
    """blob -> (size, mtime) of every blob of these HF cache folders (partial files left out)."""
    found: dict[Path, tuple[int, float]] = {}
    for cache_dir in cache_dirs:
        for blobs in cache_dir.glob("*/blobs"):
            with contextlib.suppress(OSError):
                for entry in os.scandir(blobs):
                    if _BLOB.match(entry.name) and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found[Path(entry.path)] = (st.st_size, st.st_mtime)
    return found
