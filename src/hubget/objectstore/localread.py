"""Local bytes as the uploader's source (`hubget upload`): a file on disk, or bytes in memory.

Both read like ``transfer.rangeget.RangeReader`` (``read_into(start, buf)``, ``cancelled``), so
``objectstore.upload`` streams them through the same multipart machinery as ranges from a hub.
A ``FileReader`` is bound to the file as it was listed (size, mtime, inode): a file that changes
while it is read fails with IntegrityError, and its upload is never completed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

from hubget.errors import IntegrityError, NotFoundError


class PartReader(Protocol):
    cancelled: threading.Event

    def read_into(self, start: int, buf: memoryview) -> None: ...


def file_signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


class FileReader:
    """Ranges of the file at ``path``, which must stay as ``signature`` says it was when listed."""

    def __init__(self, path: Path, signature: tuple[int, int, int, int], *, label: str = "") -> None:
        self.path = path
        self.signature = signature
        self.label = label or str(path)
        self.cancelled = threading.Event()

    def _changed(self) -> IntegrityError:
        return IntegrityError(f"{self.label}: the file changed while it was read; not stored")

    def read_into(self, start: int, buf: memoryview) -> None:
        if self.cancelled.is_set():
            raise InterruptedError(f"{self.label}: cancelled")
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise NotFoundError(f"{self.label}: the file is gone") from None
        try:
            if file_signature(os.fstat(fd)) != self.signature:
                raise self._changed()
            done = 0
            while done < len(buf):
                n = os.preadv(fd, [buf[done:]], start + done)
                if n == 0:
                    raise self._changed()  # shorter than listed
                done += n
        finally:
            os.close(fd)
        try:
            after = file_signature(os.stat(self.path))
        except OSError:
            raise self._changed() from None
        if after != self.signature:
            raise self._changed()


class BytesReader:
    """Ranges of bytes in memory (a git blob read with ``git cat-file``)."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.cancelled = threading.Event()

    def read_into(self, start: int, buf: memoryview) -> None:
        if self.cancelled.is_set():
            raise InterruptedError("cancelled")
        buf[:] = self.data[start : start + len(buf)]
