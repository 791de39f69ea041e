"""A small file is replaced whole or not at all, and a failed write leaves no temp file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubget.atomicfile import atomic_write


def test_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "refs" / "main"
    atomic_write(target, b"old", make_parent=True)
    atomic_write(target, b"x" * 300_000, durable=True)
    assert target.read_bytes() == b"x" * 300_000
    assert [p.name for p in target.parent.iterdir()] == ["main"]


def test_a_failed_rename_keeps_the_old_state_and_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.mkdir()  # a rename of a file over a folder fails
    (target / "kept").write_text("x")
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert (target / "kept").read_text() == "x"


def test_a_missing_folder_is_an_error_unless_asked_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "gone" / "f", b"1")
    assert not (tmp_path / "gone").exists()
