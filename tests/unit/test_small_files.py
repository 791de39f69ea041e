"""The per-file path of many small files: locks taken in one go (and still the lock huggingface_hub's
filelock takes), no resume state below NO_RESUME_BELOW, orphans of killed runs swept per folder, a
callback once the verified bytes are in place."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from hubget.cache.inuse import hubget_partial_in_use
from hubget.layouts.locks import take_locks
from hubget.transfer.engine import Engine
from hubget.transfer.filetask import NO_RESUME_BELOW
from hubget.transfer.jobs import FileJob
from hubget.transfer.owners import private_name, private_owner, sweep_folder
from tests.faults.faultserver import FaultServer

HOLD = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire(timeout=0)
print("held", flush=True); sys.stdin.read()
"""

PROBE = """
import sys
from filelock import FileLock, Timeout
try:
    FileLock(sys.argv[1]).acquire(timeout=0)
except Timeout:
    sys.exit(3)
"""


def test_take_locks_and_filelock_exclude_each_other(tmp_path: Path) -> None:
    a, b = tmp_path / ".locks" / "a.lock", tmp_path / ".locks" / "b.lock"
    a.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(a)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        held, busy = take_locks([a, b, b])
        assert busy == [a] and list(held) == [b]
        probe = PROBE
        assert subprocess.run([sys.executable, "-c", probe, str(b)]).returncode == 3  # ours excludes filelock
        held[b].release()
        assert subprocess.run([sys.executable, "-c", probe, str(b)]).returncode == 0
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    held, busy = take_locks([a])
    assert busy == [] and list(held) == [a]  # the holder is gone: the lock is free
    held[a].release()


def test_sweep_folder_removes_only_dead_writers_temp_files(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    partial = tmp_path / "blob.hubget-partial"
    mine = private_name(partial, f"{_host_tag()}-{os.getpid()}-abcd1234")
    orphan = private_name(partial, f"{_host_tag()}-{dead.stdout.strip()}-abcd1234")
    other = tmp_path / "unrelated.hubget-partial"
    for p in (mine, orphan, other):
        p.write_bytes(b"x")
    sweep_folder(tmp_path)
    assert mine.exists() and other.exists() and not orphan.exists()


def _host_tag() -> str:
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def test_a_private_temp_file_is_in_use_while_its_writer_lives(tmp_path: Path) -> None:
    # The cache's in-use check reads the writer from the private name itself (no resume state).
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    partial = tmp_path / "blob.hubget-partial"
    try:
        alive = private_name(partial, f"{_host_tag()}-{live.pid}-abcd1234")
        gone = private_name(partial, f"{_host_tag()}-{dead.stdout.strip()}-abcd1234")
        remote = private_name(partial, f"{'0' * 8}-1-abcd1234")  # another machine: fresh, so in use
        for p in (alive, gone, remote):
            p.write_bytes(b"x")
        assert private_owner(alive.name) == f"{socket.gethostname()}:{live.pid}:private"
        assert private_owner(remote.name) == "another-machine:1:private"
        assert private_owner(partial.name) is None
        assert hubget_partial_in_use(alive) and hubget_partial_in_use(remote)
        assert not hubget_partial_in_use(gone)
        os.utime(remote, (1, 1))  # a stale one of another machine: nobody writes it any more
        assert not hubget_partial_in_use(remote)
    finally:
        live.communicate(b"")


def test_small_file_keeps_no_resume_state_and_is_announced_once_in_place(tmp_path: Path) -> None:
    data = os.urandom(NO_RESUME_BELOW - 1)
    seen: list[bool] = []
    with FaultServer() as server:
        server.add("/f", data)
        dest = tmp_path / "blobs" / "f"
        job = FileJob(server.url("/f"), dest, len(data), hashlib.sha256(data).hexdigest())
        job.on_placed = lambda: seen.append(dest.read_bytes() == data)
        Engine().run([job])
    assert seen == [True]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f"]  # no partial, no resume state left
