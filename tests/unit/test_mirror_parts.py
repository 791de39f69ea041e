"""The mirror's small parts on their own: sizes, the Prometheus text, where a growing blob's bytes are,
the metadata kept on disk (and refused when tampered with), what a repo info says of access."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hubget.api.mirror_access import GATED, PRIVATE, PUBLIC, access_of
from hubget.api.mirror_budget import BlobBudget, parse_size
from hubget.api.mirror_meta import MirrorMeta, StoredFile
from hubget.errors import UsageError
from hubget.server.growing import available, front
from hubget.server.metrics import render

COMMIT = "a" * 40
SHA = "b" * 64


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500G", 500 * 10**9),
        ("1.5T", 1_500 * 10**9),
        ("800MiB", 800 * 2**20),
        ("1000", 1000),
        ("9 kib", 9216),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "5Q", "-1G", "G"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_prometheus_text() -> None:
    text = render(
        [
            ("m_total", "counter", "Things.", {"kind": 'a"b'}, 3),
            ("m_total", "counter", "Things.", {"kind": "c"}, 1.5),
            ("g", "gauge", "A gauge.", {}, 7),
        ]
    )
    assert text == (
        "# HELP m_total Things.\n# TYPE m_total counter\n"
        'm_total{kind="a\\"b"} 3\nm_total{kind="c"} 1.5\n'
        "# HELP g A gauge.\n# TYPE g gauge\ng 7\n"
    )


def test_where_the_bytes_of_a_growing_blob_are() -> None:
    done = ((0, 100), (200, 300))
    assert available(done, 0, 1000) == 100
    assert available(done, 50, 80) == 30
    assert available(done, 100, 1000) == 0  # a gap
    assert available(done, 250, 1000) == 50
    assert front(done, 150) == 100 and front(done, 250) == 300 and front((), 10) == 0


def test_metadata_survives_a_restart(tmp_path: Path) -> None:
    meta = MirrorMeta(tmp_path)
    meta.set_revision("model", "org/x", "main", COMMIT)
    meta.set_tree(
        "model", "org/x", COMMIT, [StoredFile("a/b.bin", 5, SHA, None), StoredFile("c", 1, None, "c" * 40)]
    )
    meta.set_access("model", "org/x", GATED)
    again = MirrorMeta(tmp_path)
    assert again.revision("model", "org/x", "main")[0] == COMMIT  # type: ignore[index]
    tree = again.tree("model", "org/x", COMMIT)
    assert tree is not None and [f.path for f in tree.files] == ["a/b.bin", "c"]
    assert again.access("model", "org/x") == GATED
    assert again.tree("model", "org/x", "../../etc") is None


@pytest.mark.parametrize(
    "entry",
    [
        {"path": "../escape", "size": 1, "sha256": SHA, "git_sha1": None},
        {"path": "/abs", "size": 1, "sha256": SHA, "git_sha1": None},
        {"path": "ok", "size": -1, "sha256": SHA, "git_sha1": None},
        {"path": "ok", "size": 1, "sha256": "not-a-hash/..", "git_sha1": None},
    ],
)
def test_a_tampered_listing_is_not_trusted(tmp_path: Path, entry: dict) -> None:
    trees = tmp_path / "models--org--x" / "trees"
    trees.mkdir(parents=True)
    (trees / f"{COMMIT}.json").write_text(json.dumps({"seen": 0, "files": [entry]}))
    assert MirrorMeta(tmp_path).tree("model", "org/x", COMMIT) is None  # listed upstream again


def test_access_from_repo_info() -> None:
    assert access_of({"private": False, "gated": False}) == PUBLIC
    assert access_of({"private": False, "gated": "manual"}) == GATED
    assert access_of({"private": True, "gated": False}) == PRIVATE


def test_budget_evicts_the_least_recently_used(tmp_path: Path) -> None:
    blobs = tmp_path / "models--org--x" / "blobs"
    snap = tmp_path / "models--org--x" / "snapshots" / COMMIT
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    paths = []
    for i, name in enumerate(("1" * 64, "2" * 64, "3" * 64)):
        p = blobs / name
        p.write_bytes(b"x" * 10)
        (snap / f"f{i}").symlink_to(f"../../blobs/{name}")
        paths.append(p)
    for i, p in enumerate(paths):
        os.utime(p, (1000 + i, 1000 + i))
    budget = BlobBudget(tmp_path, 25)
    budget.used(paths[0])  # now the most recent
    budget.added(paths[2], busy=set())
    assert not paths[1].exists() and paths[0].exists() and paths[2].exists()
    assert not (snap / "f1").is_symlink() and (snap / "f0").is_symlink()
    assert budget.used_bytes == 20 and budget.evicted == 1


def test_budget_counts_a_late_fill_from_its_request_not_its_end(tmp_path: Path) -> None:
    """w1's fill ends after w0 was served again: w1 is still the older use (asked for first)."""
    blobs = tmp_path / "models--org--x" / "blobs"
    blobs.mkdir(parents=True)
    w0, w1, w2 = (blobs / (c * 64) for c in "123")
    budget = BlobBudget(None, 25)
    budget.dirs.append(tmp_path)
    w0.write_bytes(b"x" * 10)
    budget.added(w0, busy=set(), used_at=time.time() - 30)
    asked_w1 = time.time() - 20
    budget.used(w0)  # served again while w1's fill still runs
    w1.write_bytes(b"x" * 10)
    budget.added(w1, busy=set(), used_at=asked_w1)  # w1's fill ends now
    w2.write_bytes(b"x" * 10)
    budget.added(w2, busy=set(), used_at=time.time())
    assert w0.exists() and not w1.exists() and w2.exists()
