"""A connection far ahead of a busy hasher waits for it; never for a hasher that stopped or stalls."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hubget.transfer import connection
from hubget.transfer.connection import RangeFetcher, _Aborted
from hubget.transfer.ranges import IntervalSet
from hubget.transfer.verify import PrefixHasher

MiB = 1024 * 1024
# setup(written) -> (fetcher, task, fd of the partial, event that ends the stand-in hasher thread)
Setup = Callable[[int], tuple[SimpleNamespace, SimpleNamespace, int, threading.Event]]


@pytest.fixture
def small_lead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "HASH_LEAD", 1 * MiB)
    monkeypatch.setattr(connection, "HASH_BACKLOG", 256 * 1024)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A 4 MiB partial with ``written`` bytes done, its hasher at 0 and a live stand-in hasher thread."""
    opened: list[tuple[int, threading.Event]] = []

    def make(written: int) -> tuple[SimpleNamespace, SimpleNamespace, int, threading.Event]:
        path = tmp_path / f"part{len(opened)}"
        path.write_bytes(os.urandom(4 * MiB))
        fd = os.open(path, os.O_RDONLY)
        alive = threading.Event()
        opened.append((fd, alive))
        hash_thread = threading.Thread(target=alive.wait, daemon=True)
        hash_thread.start()
        task = SimpleNamespace(
            hasher=PrefixHasher("sha256", 4 * MiB),
            hash_thread=hash_thread,
            done=IntervalSet([(0, written)]),
            generation=0,
            status="active",
        )
        fetcher = SimpleNamespace(sched=SimpleNamespace(cv=threading.Condition(), cancelled=False))
        return fetcher, task, fd, alive

    yield make
    for fd, alive in opened:
        alive.set()
        os.close(fd)


def _yield_in_thread(
    fetcher: SimpleNamespace, task: SimpleNamespace, pos: int
) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            RangeFetcher._yield_to_hasher(fetcher, task, pos, 0)  # type: ignore[arg-type]
        except _Aborted:
            out["aborted"] = True
        out["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.usefixtures("small_lead")
def test_far_connection_waits_until_the_hasher_catches_up(setup: Setup) -> None:
    fetcher, task, fd, _ = setup(3 * MiB)
    waiter, out = _yield_in_thread(fetcher, task, pos=3 * MiB)
    waiter.join(0.2)
    assert waiter.is_alive(), "a connection 3 MiB past a busy hasher did not wait"
    task.hasher.catch_up(fd, 2 * MiB + 512 * 1024)  # now within the 1 MiB lead
    waiter.join(2)
    assert not waiter.is_alive() and "aborted" not in out
    assert task.hasher.hashed == 2 * MiB + 512 * 1024


@pytest.mark.usefixtures("small_lead")
def test_no_wait_when_the_hasher_has_nothing_ready(setup: Setup) -> None:
    # Far ahead, but the prefix is barely written: the hasher waits for data, so nobody waits for it.
    fetcher, task, _, _ = setup(128 * 1024)
    waiter, out = _yield_in_thread(fetcher, task, pos=3 * MiB)
    waiter.join(2)
    assert not waiter.is_alive() and out["seconds"] < 0.1


@pytest.mark.usefixtures("small_lead")
def test_a_stalled_or_stopped_hasher_is_not_waited_for(setup: Setup) -> None:
    fetcher, task, _, alive = setup(3 * MiB)
    waiter, out = _yield_in_thread(fetcher, task, pos=3 * MiB)
    waiter.join(3)
    assert not waiter.is_alive(), "waited on a hasher that does not move"
    assert 0.4 < out["seconds"] < 2
    alive.set()  # the hasher thread ends: no wait at all
    task.hash_thread.join(2)
    waiter, out = _yield_in_thread(fetcher, task, pos=3 * MiB)
    waiter.join(2)
    assert not waiter.is_alive() and out["seconds"] < 0.1


@pytest.mark.usefixtures("small_lead")
def test_a_cancelled_run_stops_the_wait(setup: Setup) -> None:
    fetcher, task, _, _ = setup(3 * MiB)
    waiter, out = _yield_in_thread(fetcher, task, pos=3 * MiB)
    waiter.join(0.1)
    fetcher.sched.cancelled = True  # Ctrl-C: the wait ends within a tenth of a second
    waiter.join(2)
    assert out.get("aborted") is True and out["seconds"] < 0.4
