"""Where xorb chunks already are on disk: an index of the verified files the Xet engine wrote.

Every file rebuilt from Xet is made of runs of chunks of xorbs, each run written contiguously at an
offset of the file. After the file is verified and in place, the engine records its runs here (per
xorb: which file, where, and each chunk's decoded size). A later download whose reconstruction needs
chunks ``[a, b)`` of a xorb that some recorded file holds copies them from that file instead of
fetching them: a second revision that changes one tensor fetches only the chunks that changed.

One small JSON file per xorb (``<root>/<xorb[:2]>/<xorb>.json``), replaced atomically. A run counts
only while its file still has the size and mtime it had when recorded; what is copied is verified
with the rest of the new file (its sha256), so a file edited behind hubget's back cannot slip in.
It is a cache: a lost update (two processes recording at once) only means fewer chunks reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

_HASH = re.compile(r"^[0-9a-f]{64}$")
MAX_RUNS = 64  # runs kept per xorb (the newest); older revisions' copies are dropped first


@dataclass(frozen=True)
class ChunkRun:
    path: str
    size: int  # of the file when recorded
    mtime_ns: int
    first: int  # index of the run's first chunk in the xorb
    offset: int  # file offset of that chunk's first byte
    sizes: tuple[int, ...]  # decoded size of each chunk of the run


LocalChunks = list[tuple[str, int, int]]  # per chunk: (file, offset, size)


class XetChunkIndex:
    """Looks up and records where chunks of xorbs are on disk. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._runs: dict[str, list[ChunkRun]] = {}
        self._stats: dict[str, tuple[int, int] | None] = {}

    def _file(self, xorb: str) -> Path:
        return self.root / xorb[:2] / f"{xorb}.json"

    def _load(self, xorb: str) -> list[ChunkRun]:
        if xorb in self._runs:
            return self._runs[xorb]
        runs: list[ChunkRun] = []
        try:
            raw = json.loads(self._file(xorb).read_text())
            for r in raw.get("runs", []):
                sizes = tuple(int(s) for s in r["sizes"])
                runs.append(
                    ChunkRun(
                        str(r["path"]),
                        int(r["size"]),
                        int(r["mtime_ns"]),
                        int(r["first"]),
                        int(r["offset"]),
                        sizes,
                    )
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            runs = []
        self._runs[xorb] = runs
        return runs

    def _valid(self, run: ChunkRun) -> bool:
        if run.path not in self._stats:
            try:
                st = os.stat(run.path)
                self._stats[run.path] = (st.st_size, st.st_mtime_ns)
            except OSError:
                self._stats[run.path] = None
        return self._stats[run.path] == (run.size, run.mtime_ns)

    def find(self, xorb: str, start: int, end: int) -> LocalChunks | None:
        """Where each chunk of ``[start, end)`` of ``xorb`` is on disk, or None if any is missing."""
        if not _HASH.match(xorb):
            return None
        with self._lock:
            found: dict[int, tuple[str, int, int]] = {}
            for run in self._load(xorb):
                if run.first >= end or run.first + len(run.sizes) <= start or not self._valid(run):
                    continue
                pos = run.offset
                for i, size in enumerate(run.sizes):
                    found.setdefault(run.first + i, (run.path, pos, size))
                    pos += size
            if any(i not in found for i in range(start, end)):
                return None
            return [found[i] for i in range(start, end)]

    def record(self, path: Path, runs: dict[str, list[tuple[int, int, list[int]]]]) -> None:
        """Record that ``path`` (verified, in place) holds, per xorb, runs (first chunk, offset, sizes)."""
        st = os.stat(path)
        with self._lock:
            self._stats[str(path)] = (st.st_size, st.st_mtime_ns)
            for xorb, entries in runs.items():
                if not _HASH.match(xorb):
                    continue
                self._runs.pop(xorb, None)
                fresh = [
                    ChunkRun(str(path), st.st_size, st.st_mtime_ns, first, offset, tuple(sizes))
                    for first, offset, sizes in entries
                    if sizes
                ]
                kept = [r for r in self._load(xorb) if r.path != str(path) and self._valid(r)]
                self._runs[xorb] = (kept + fresh)[-MAX_RUNS:]
                self._write(xorb, self._runs[xorb])

    def _write(self, xorb: str, runs: list[ChunkRun]) -> None:
        target = self._file(xorb)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        body = {"runs": [{**vars(r), "sizes": list(r.sizes)} for r in runs]}
        try:
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
