"""Reserve a partial file's size before its ranges are written out of order.

On a disk filesystem ``posix_fallocate`` gives the file its blocks up front: a full disk fails
now rather than mid-download, and parallel ranges do not fragment the file. On a filesystem in
memory (tmpfs, ramfs) there is nothing to fragment and fallocate would zero every page first
(measured here: 0.33 s for 1 GiB on tmpfs, before the first byte is requested), so there the
free space is checked and the file is only extended (sparse).
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

# statfs(2) f_type of the filesystems that live in memory.
MEMORY_FS_TYPES = {0x01021994, 0x858458F6}  # TMPFS_MAGIC, RAMFS_MAGIC
_STATFS_SIZE = 256  # bytes, more than struct statfs on any Linux ABI
_memory_fs: dict[int, bool] = {}  # st_dev -> in memory


def _fstatfs_type(fd: int) -> int | None:
    """``f_type`` of the filesystem holding ``fd`` (Linux), or None where it cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on
        buf = ctypes.create_string_buffer(_STATFS_SIZE)
        if libc.fstatfs(fd, buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    # f_type is the first member, a C long (__fsword_t) on every Linux ABI.
    return ctypes.c_long.from_buffer_copy(buf.raw[: ctypes.sizeof(ctypes.c_long)]).value & 0xFFFFFFFF


def in_memory(fd: int) -> bool:
    """Whether ``fd`` is on tmpfs or ramfs (remembered per device)."""
    dev = os.fstat(fd).st_dev
    if dev not in _memory_fs:
        _memory_fs[dev] = _fstatfs_type(fd) in MEMORY_FS_TYPES
    return _memory_fs[dev]


def reserve(fd: int, size: int) -> None:
    """Give ``fd`` its final ``size``: blocks on a disk, a free-space check and a sparse file in
    memory. Raises ``OSError`` (ENOSPC when the space is not there)."""
    if in_memory(fd):
        st = os.fstatvfs(fd)
        have = os.fstat(fd).st_blocks * 512
        if st.f_bavail * st.f_frsize + have < size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.ftruncate(fd, size)
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)  # a filesystem without fallocate: a sparse file will do
