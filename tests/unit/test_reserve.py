"""Reserving a partial file's size: blocks on a disk, a free-space check and a sparse file in memory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hubget.transfer import reserve as reserve_mod
from hubget.transfer.reserve import in_memory, reserve

MiB = 1024 * 1024
SHM = Path("/dev/shm")


def _on_tmpfs() -> bool:
    if not SHM.is_dir():
        return False
    fd = os.open(SHM, os.O_RDONLY)
    try:
        return in_memory(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(not _on_tmpfs(), reason="needs /dev/shm on tmpfs")
def test_in_memory_file_is_extended_not_filled(tmp_path: Path) -> None:
    path = SHM / f"hubget-reserve-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        reserve(fd, 64 * MiB)
        st = os.fstat(fd)
        assert st.st_size == 64 * MiB
        assert st.st_blocks * 512 < MiB  # no page was zero-filled up front
    finally:
        os.close(fd)
        path.unlink()


def test_disk_file_gets_its_blocks(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if in_memory(fd):
            pytest.skip("the test's temporary folder is on tmpfs here, not on a disk")
        reserve(fd, 8 * MiB)
        st = os.fstat(fd)
        assert st.st_size == 8 * MiB
        assert st.st_blocks * 512 >= 8 * MiB
    finally:
        os.close(fd)


def test_in_memory_without_the_space_is_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    real = os.fstatvfs(fd)

    class Small:
        f_bavail, f_frsize = 10, real.f_frsize

    monkeypatch.setattr(reserve_mod, "in_memory", lambda _fd: True)
    monkeypatch.setattr(reserve_mod.os, "fstatvfs", lambda _fd: Small)
    try:
        with pytest.raises(OSError) as err:
            reserve(fd, 64 * MiB)
        assert err.value.errno == errno.ENOSPC
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
