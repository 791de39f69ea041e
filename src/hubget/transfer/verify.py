"""Hashing overlapped with the transfer: hash the contiguous prefix of a file as it grows."""

from __future__ import annotations

import mmap
import os
import threading

from hubget.hashing import Hasher, new_hasher

READ_BLOCK = 4 * 1024 * 1024
# Reading back is hashed straight from the page cache through a mapping of this many bytes at a
# time (no copy into a buffer; mapped pages count in RSS only while mapped); smaller stretches
# are read with preadv.
MAP_WINDOW = 4 * 1024 * 1024
MAP_MIN = 1024 * 1024


class PrefixHasher:
    """Hashes bytes ``[0, hashed)`` of a file; fed in-stream when bytes arrive in order, else read back.

    Reading back goes through ``os.pread`` of data just written, which the page cache still holds,
    so verification costs a memory copy, not a disk read.
    """

    def __init__(self, algo: str, size: int | None) -> None:
        self.algo = algo
        self.size = size
        self._lock = threading.Lock()
        self._moved = threading.Condition()  # notified whenever ``hashed`` changes
        self.reset()

    def reset(self) -> None:
        self._h: Hasher | None = new_hasher(self.algo, self.size) if self._usable() else None
        self._advance_to(0)

    def _advance_to(self, hashed: int) -> None:
        self.hashed = hashed
        with self._moved:
            self._moved.notify_all()

    def wait_moved(self, since: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the hashed prefix to move from ``since``."""
        with self._moved:
            return self._moved.wait_for(lambda: self.hashed != since, timeout)

    def _usable(self) -> bool:
        return self.algo == "sha256" or (self.algo == "git-sha1" and self.size is not None)

    def feed(self, offset: int, data: memoryview) -> bool:
        """Hash ``data`` if it continues the prefix; never blocks (the reader thread catches up)."""
        if offset != self.hashed or not self._lock.acquire(blocking=False):
            return False
        try:
            if offset != self.hashed:
                return False
            if self._h is not None:
                self._h.update(data)
            self._advance_to(self.hashed + len(data))
            return True
        finally:
            self._lock.release()

    def catch_up(self, fd: int, upto: int, buf: bytearray | None = None) -> None:
        """Read back and hash the file from ``hashed`` to ``upto``."""
        if self.hashed >= upto:
            return
        with self._lock:
            if self._h is not None and upto - self.hashed >= MAP_MIN:
                self._hash_mapped(self._h, fd, upto)
            if self.hashed >= upto:
                return
            buf = buf if buf is not None else bytearray(min(READ_BLOCK, upto - self.hashed))
            view = memoryview(buf)
            while self.hashed < upto:
                want = min(len(buf), upto - self.hashed)
                n = os.preadv(fd, [view[:want]], self.hashed)
                if n <= 0:
                    raise OSError(f"short read at {self.hashed} while verifying")
                if self._h is not None:
                    self._h.update(view[:n])
                self._advance_to(self.hashed + n)

    def _hash_mapped(self, h: Hasher, fd: int, upto: int) -> None:
        """Hash from ``hashed`` towards ``upto`` through read-only mappings of the file (lock held).

        Only bytes the file holds now are mapped (a mapping past the end of a file faults). Stops
        where a mapping cannot be made (a file that cannot be mapped); the caller reads the rest.
        """
        try:
            end = min(upto, os.fstat(fd).st_size)
        except OSError:
            return
        while end - self.hashed >= MAP_MIN:
            start = self.hashed
            base = start - start % mmap.ALLOCATIONGRANULARITY
            length = min(end, base + MAP_WINDOW) - base
            try:
                mapped = mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=base)
            except (OSError, ValueError, OverflowError):
                return
            try:
                with memoryview(mapped) as whole, whole[start - base :] as part:
                    h.update(part)
            finally:
                mapped.close()
            self._advance_to(base + length)

    def hexdigest(self) -> str | None:
        return self._h.hexdigest() if self._h is not None else None
