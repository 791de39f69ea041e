"""Resume state files: atomic, and safe when two writers save the same state at once."""

from __future__ import annotations

import threading
from pathlib import Path

from hubget.transfer.partial import PartialState, discard, load_state, save_state, state_path
from hubget.transfer.ranges import IntervalSet


def _state(end: int, owner: str) -> PartialState:
    done = IntervalSet()
    done.add(0, end)
    return PartialState("ab" * 32, "sha256", 1000, done, owner)


def test_two_writers_saving_one_state_never_fail(tmp_path: Path) -> None:
    """Two processes on a cache whose file locks do not work save one state file at once: every
    save succeeds, the file always holds one writer's whole record, no temp file is left."""
    path = state_path(tmp_path / "blob.hubget-partial")
    errors: list[BaseException] = []

    def writer(owner: str) -> None:
        try:
            for i in range(300):
                save_state(path, _state(i + 1, owner), durable=False)
        except BaseException as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(f"h:{n}:x",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = load_state(path)
    assert state is not None and state.done.total() == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_discard_removes_the_partial_its_state_and_stray_temp_files(tmp_path: Path) -> None:
    partial = tmp_path / "blob.hubget-partial"
    partial.write_bytes(b"x" * 10)
    save_state(state_path(partial), _state(5, "h:1:x"))
    (tmp_path / f".{state_path(partial).name}.k3j2h1.tmp").write_text("{")  # a writer killed mid-save
    (tmp_path / "other.hubget-partial").write_bytes(b"y")
    discard(partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.hubget-partial"]
