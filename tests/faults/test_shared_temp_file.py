"""Two downloads of the same file into the same place at once, with no lock between them (what a
filesystem whose ``flock`` does nothing, as on some Lustre and NFS mounts, allows). Whatever the
interleaving, the final path holds the verified bytes or nothing."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from hubget.errors import HubgetError
from hubget.transfer.engine import Engine
from hubget.transfer.jobs import FileJob
from tests.faults import faultserver as fs
from tests.faults.faultserver import FaultServer

pytestmark = pytest.mark.timeout(60)

DATA = os.urandom(700 * 1024 + 1)
SHA = hashlib.sha256(DATA).hexdigest()


def test_a_second_writer_never_gets_its_unfinished_file_renamed_into_place(tmp_path: Path):
    """A opens the temp file first but its bytes come late and fast; B opens the same temp path a
    moment later and its bytes trickle. A finishes first: it must move the bytes it verified, not
    whatever file now sits at the shared temp path (B's, still mostly zeros)."""
    with FaultServer() as fast, FaultServer() as slow:
        fast.add("/f", DATA)
        slow.add("/f", DATA)
        fast.always("/f", fs.delayed(0.6))
        slow.always("/f", fs.drip(0.05, 16 * 1024))  # ~320 KB/s: several seconds for the file
        dest = tmp_path / "blob"
        errors: dict[str, BaseException] = {}

        def run(name: str, url: str) -> None:
            try:
                Engine(stall_timeout=5).run([FileJob(url, dest, len(DATA), SHA, label=name)])
            except HubgetError as e:
                errors[name] = e

        a = threading.Thread(target=run, args=("A", fast.url("/f")))
        b = threading.Thread(target=run, args=("B", slow.url("/f")))
        a.start()
        threading.Event().wait(0.3)
        b.start()
        a.join(30)
        # the moment A is done, the final path must already hold the right bytes (or nothing)
        if dest.exists():
            assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHA, "unverified bytes at the final path"
        b.join(30)
        if dest.exists():
            assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHA, "unverified bytes at the final path"
        assert dest.exists() and "A" not in errors, errors  # A's verified download is not lost
